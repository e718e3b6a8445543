#include "token_broker/broker.hpp"

#include "token_broker/core/secret_digest.hpp"
#include "token_broker/credentials/source.hpp"

namespace token_broker {

credential_refresher* app_set::find(std::string_view app_id) const {
  const auto* found = entry(app_id);
  return found ? found->token.get() : nullptr;
}

const app_entry* app_set::entry(std::string_view app_id) const {
  const auto found = by_id_.find(app_id);
  return found == by_id_.end() ? nullptr : &in_order_[found->second];
}

credential_match app_set::match_credentials(std::string_view corpid,
                                            std::string_view secret) const {
  const auto offered = sha256(secret);
  credential_match match;
  const auto apps_of_corpid = by_corpid_.find(corpid);
  if (apps_of_corpid == by_corpid_.end()) return match;
  // Every app of the corpid is compared, matched or not, so timing tells nothing.
  for (const auto i : apps_of_corpid->second) {
    if (digests_equal(secret_digests_[i], offered) && !match.app) {
      match = {credential_match::result::matched, in_order_[i].token.get()};
    } else if (!match.app) {
      match.outcome = credential_match::result::wrong_secret;
    }
  }
  return match;
}

void app_set::add(app_entry app) {
  secret_digests_.push_back(sha256(app.app.secret));
  by_id_.emplace(app.app.id, in_order_.size());
  by_corpid_[app.app.corpid].push_back(in_order_.size());
  in_order_.push_back(std::move(app));
}

broker::broker(asio::any_io_executor executor, const config& settings,
               std::unique_ptr<token_store> store)
    : store_(std::move(store)),
      upstream_settings_(settings.upstream),
      engine_(std::move(executor), settings.refresh, settings.upstream.timeout,
              std::make_shared<upstream_client>(settings.upstream), *store_) {
  auto apps = std::make_shared<app_set>();
  for (const auto& app : settings.apps) {
    apps->add({app, make_refresher(app, credential_refresher::origin::configured)});
  }
  apps_.store(std::move(apps));
}

broker::~broker() {
  stop();
}

std::shared_ptr<credential_refresher> broker::make_refresher(const app_config& app,
                                                             credential_refresher::origin how) {
  return std::make_shared<credential_refresher>(
      engine_, credential_id{credential_kind::access_token, app.id}, app.id,
      std::make_unique<gettoken_source>(app.corpid, app.secret), how);
}

void broker::start() {
  engine_.start(tasks_);
  // Each loop holds the set it walks: a reload may replace apps_ meanwhile.
  const auto configured = apps();
  for (const auto& app : configured->in_order()) engine_.add(app.token);
  store_->start(tasks_, [this](const std::string& app_id) {
    if (app_id.empty()) {
      engine_.store_returned();
    } else {
      engine_.store_changed({credential_kind::access_token, app_id});
    }
  });
}

void broker::stop() {
  engine_.stop();
  store_->stop();
}

reload_summary broker::reload(const config& next) {
  std::shared_ptr<upstream_caller> upstream;
  if (next.upstream != upstream_settings_) {
    upstream_settings_ = next.upstream;
    upstream = std::make_shared<upstream_client>(next.upstream);
  }
  engine_.apply(next.refresh, next.upstream.timeout, std::move(upstream));

  const auto previous = apps();
  auto updated = std::make_shared<app_set>();
  reload_summary summary;
  for (const auto& app : next.apps) {
    const auto* existing = previous->entry(app.id);
    if (existing && existing->app.corpid == app.corpid && existing->app.secret == app.secret) {
      updated->add({app, existing->token});
      ++summary.kept;
      continue;
    }
    auto refresher =
        make_refresher(app, existing ? credential_refresher::origin::credentials_changed
                                     : credential_refresher::origin::configured);
    (existing ? summary.credentials_changed : summary.added).push_back(app.id);
    updated->add({app, refresher});
    engine_.add(std::move(refresher));  // replaces one of the same id
  }
  for (const auto& app : previous->in_order()) {
    if (updated->entry(app.app.id)) continue;
    summary.removed.push_back(app.app.id);
    engine_.remove(app.token->id());
  }
  apps_.store(std::move(updated));
  return summary;
}

}  // namespace token_broker
