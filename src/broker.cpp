#include "token_broker/broker.hpp"

#include <algorithm>

#include "token_broker/core/secret_digest.hpp"
#include "token_broker/credentials/source.hpp"

namespace token_broker {

app_set::app_set(std::vector<app_entry> apps) : in_order_(std::move(apps)) {
  for (std::uint32_t i = 0; i < in_order_.size(); ++i) {
    secret_digests_.push_back(sha256(in_order_[i].app->secret));
    by_id_.push_back(i);
    by_corpid_.push_back(i);
  }
  std::sort(by_id_.begin(), by_id_.end(),
            [this](auto a, auto b) { return in_order_[a].app->id < in_order_[b].app->id; });
  std::stable_sort(by_corpid_.begin(), by_corpid_.end(), [this](auto a, auto b) {
    return in_order_[a].app->corpid < in_order_[b].app->corpid;
  });
}

credential_refresher* app_set::find(std::string_view app_id) const {
  const auto* found = entry(app_id);
  return found ? found->token.get() : nullptr;
}

const app_entry* app_set::entry(std::string_view app_id) const {
  const auto found =
      std::lower_bound(by_id_.begin(), by_id_.end(), app_id,
                       [this](auto i, std::string_view id) { return in_order_[i].app->id < id; });
  if (found == by_id_.end() || in_order_[*found].app->id != app_id) return nullptr;
  return &in_order_[*found];
}

credential_match app_set::match_credentials(std::string_view corpid,
                                            std::string_view secret) const {
  const auto offered = sha256(secret);
  credential_match match;
  const auto first = std::lower_bound(by_corpid_.begin(), by_corpid_.end(), corpid,
                                      [this](std::uint32_t i, std::string_view wanted) {
                                        return in_order_[i].app->corpid < wanted;
                                      });
  const auto last = std::upper_bound(first, by_corpid_.end(), corpid,
                                     [this](std::string_view wanted, std::uint32_t i) {
                                       return wanted < in_order_[i].app->corpid;
                                     });
  // Every app of the corpid is compared, matched or not, so timing tells nothing.
  for (auto i = first; i != last; ++i) {
    if (digests_equal(secret_digests_[*i], offered) && !match.app) {
      match = {credential_match::result::matched, in_order_[*i].token.get()};
    } else if (!match.app) {
      match.outcome = credential_match::result::wrong_secret;
    }
  }
  return match;
}

broker::broker(asio::any_io_executor executor, const config& settings,
               std::unique_ptr<token_store> store)
    : store_(std::move(store)),
      upstream_settings_(settings.upstream),
      engine_(std::move(executor), settings.refresh, settings.upstream.timeout,
              std::make_shared<upstream_client>(settings.upstream), *store_) {
  std::vector<app_entry> apps;
  for (const auto& app : settings.apps) {
    auto shared = std::make_shared<const app_config>(app);
    apps.push_back({shared, make_refresher(shared, credential_refresher::origin::configured)});
  }
  apps_.store(std::make_shared<const app_set>(std::move(apps)));
}

broker::~broker() {
  stop();
}

std::shared_ptr<credential_refresher> broker::make_refresher(std::shared_ptr<const app_config> app,
                                                             credential_refresher::origin how) {
  credential_id id{credential_kind::access_token, app->id};
  return std::make_shared<credential_refresher>(
      engine_, std::move(id), std::make_unique<gettoken_source>(std::move(app)), how);
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
  std::vector<app_entry> updated;
  reload_summary summary;
  for (const auto& app : next.apps) {
    const auto* existing = previous->entry(app.id);
    auto shared = std::make_shared<const app_config>(app);
    if (existing && existing->app->corpid == app.corpid && existing->app->secret == app.secret) {
      updated.push_back({shared, existing->token});
      ++summary.kept;
      continue;
    }
    auto refresher =
        make_refresher(shared, existing ? credential_refresher::origin::credentials_changed
                                        : credential_refresher::origin::configured);
    (existing ? summary.credentials_changed : summary.added).push_back(app.id);
    updated.push_back({shared, refresher});
    engine_.add(std::move(refresher));  // replaces one of the same id
  }
  auto next_set = std::make_shared<const app_set>(std::move(updated));
  for (const auto& app : previous->in_order()) {
    if (next_set->entry(app.app->id)) continue;
    summary.removed.push_back(app.app->id);
    engine_.remove(app.token->id());
  }
  apps_.store(std::move(next_set));
  return summary;
}

}  // namespace token_broker
