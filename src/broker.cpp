#include "token_broker/broker.hpp"

#include "token_broker/secret_digest.hpp"

namespace token_broker {

broker::broker(asio::any_io_executor executor, const config& settings,
               std::unique_ptr<token_store> store)
    : store_(std::move(store)), upstream_(settings.upstream) {
  for (const auto& app : settings.apps) {
    auto refresher = std::make_shared<app_refresher>(executor, app, settings.refresh,
                                                     settings.upstream.timeout, upstream_, *store_);
    apps_by_id_.emplace(app.id, refresher);
    apps_in_order_.push_back(std::move(refresher));
    secret_digests_.push_back(sha256(app.secret));
  }
}

broker::~broker() {
  stop();
}

void broker::start() {
  for (const auto& app : apps_in_order_) app->start();
  store_->start([this](const std::string& app_id) {
    if (app_id.empty()) {
      for (const auto& app : apps_in_order_) app->store_changed();
    } else if (const auto app = find(app_id)) {
      app->store_changed();
    }
  });
}

void broker::stop() {
  for (const auto& app : apps_in_order_) app->stop();
  store_->stop();
}

std::shared_ptr<app_refresher> broker::find(std::string_view app_id) const {
  const auto found = apps_by_id_.find(app_id);
  return found == apps_by_id_.end() ? nullptr : found->second;
}

credential_match broker::match_credentials(std::string_view corpid, std::string_view secret) const {
  const auto offered = sha256(secret);
  credential_match match;
  // Every app of the corpid is compared, matched or not, so timing tells nothing.
  for (std::size_t i = 0; i < apps_in_order_.size(); ++i) {
    if (apps_in_order_[i]->app().corpid != corpid) continue;
    if (digests_equal(secret_digests_[i], offered) && !match.app) {
      match = {credential_match::result::matched, apps_in_order_[i]};
    } else if (!match.app) {
      match.outcome = credential_match::result::wrong_secret;
    }
  }
  return match;
}

}  // namespace token_broker
