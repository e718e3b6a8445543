#include "token_broker/broker.hpp"

#include "token_broker/secret_digest.hpp"

namespace token_broker {

app_refresher* app_set::find(std::string_view app_id) const {
  const auto found = by_id_.find(app_id);
  return found == by_id_.end() ? nullptr : found->second;
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
      match = {credential_match::result::matched, in_order_[i].get()};
    } else if (!match.app) {
      match.outcome = credential_match::result::wrong_secret;
    }
  }
  return match;
}

void app_set::add(std::shared_ptr<app_refresher> app) {
  secret_digests_.push_back(sha256(app->app().secret));
  by_id_.emplace(app->app().id, app.get());
  by_corpid_[app->app().corpid].push_back(in_order_.size());
  in_order_.push_back(std::move(app));
}

broker::broker(asio::any_io_executor executor, const config& settings,
               std::unique_ptr<token_store> store)
    : executor_(std::move(executor)),
      store_(std::move(store)),
      refresh_(settings.refresh),
      upstream_settings_(settings.upstream),
      upstream_(std::make_shared<upstream_client>(settings.upstream)) {
  auto apps = std::make_shared<app_set>();
  for (const auto& app : settings.apps) {
    apps->add(make_refresher(app, app_refresher::origin::configured));
  }
  apps_.store(std::move(apps));
}

broker::~broker() {
  stop();
}

std::shared_ptr<app_refresher> broker::make_refresher(const app_config& app,
                                                      app_refresher::origin how) {
  // The refresher keeps references to upstream_ and *store_, which outlive it: stop() ends
  // every refresher before the broker goes.
  return std::make_shared<app_refresher>(executor_, app, refresh_, upstream_settings_.timeout,
                                         upstream_, *store_, how);
}

void broker::start() {
  // Each loop holds the set it walks: a reload may replace apps_ meanwhile.
  const auto configured = apps();
  for (const auto& app : configured->in_order()) app->start();
  if (store_->shared()) {
    sync_ = std::make_shared<store_sync>(executor_, *store_, apps_);
    sync_->start();
  }
  store_->start([sync = sync_](const std::string& app_id) {
    if (sync) sync->notice(app_id);
  });
}

void broker::stop() {
  const auto configured = apps();
  for (const auto& app : configured->in_order()) app->stop();
  if (sync_) sync_->stop();
  store_->stop();
}

reload_summary broker::reload(const config& next) {
  refresh_ = next.refresh;
  if (next.upstream != upstream_settings_) {
    upstream_settings_ = next.upstream;
    upstream_.store(std::make_shared<upstream_client>(next.upstream));
  }

  const auto previous = apps();
  auto updated = std::make_shared<app_set>();
  std::vector<std::shared_ptr<app_refresher>> starting, stopping;
  reload_summary summary;
  for (const auto& app : next.apps) {
    auto* existing = previous->find(app.id);
    if (existing && existing->app().corpid == app.corpid && existing->app().secret == app.secret) {
      existing->apply(refresh_, upstream_settings_.timeout);
      updated->add(existing->shared_from_this());
      ++summary.kept;
      continue;
    }
    auto refresher = make_refresher(app, existing ? app_refresher::origin::credentials_changed
                                                  : app_refresher::origin::configured);
    if (existing) {
      summary.credentials_changed.push_back(app.id);
      stopping.push_back(existing->shared_from_this());
    } else {
      summary.added.push_back(app.id);
    }
    updated->add(refresher);
    starting.push_back(std::move(refresher));
  }
  for (const auto& app : previous->in_order()) {
    if (updated->find(app->app().id)) continue;
    summary.removed.push_back(app->app().id);
    stopping.push_back(app);
  }

  apps_.store(std::move(updated));
  for (const auto& app : starting) app->start();
  for (const auto& app : stopping) app->stop();
  return summary;
}

}  // namespace token_broker
