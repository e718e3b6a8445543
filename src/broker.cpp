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

credential_refresher* app_entry::credential(credential_kind kind) const {
  switch (kind) {
    case credential_kind::access_token:
      return token.get();
    case credential_kind::jsapi_ticket:
      return jsapi_ticket.get();
    case credential_kind::agent_ticket:
      return agent_ticket.get();
    case credential_kind::provider_token:
    case credential_kind::suite_token:
    case credential_kind::corp_token:
    case credential_kind::suite_ticket:
      break;  // not an app's
  }
  return nullptr;
}

std::vector<credential_refresher*> app_entry::credentials() const {
  std::vector<credential_refresher*> every{token.get()};
  for (auto* ticket : {jsapi_ticket.get(), agent_ticket.get()}) {
    if (ticket) every.push_back(ticket);
  }
  return every;
}

broker::broker(asio::any_io_executor executor, const config& settings,
               std::unique_ptr<token_store> store)
    : executor_(executor),
      store_(std::move(store)),
      upstream_settings_(settings.upstream),
      engine_(std::move(executor), settings.refresh, settings.upstream.timeout,
              std::make_shared<upstream_client>(settings.upstream), *store_) {
  std::vector<app_entry> apps;
  for (const auto& app : settings.apps) {
    apps.push_back(make_entry(std::make_shared<const app_config>(app), nullptr));
  }
  apps_.store(std::make_shared<const app_set>(std::move(apps)));
  auto third_party = std::make_shared<third_party_set>();
  for (const auto& provider : settings.providers) {
    third_party->providers.emplace(
        provider.id, make_provider(std::make_shared<const provider_config>(provider)));
  }
  for (const auto& suite : settings.suites) {
    third_party->suites.emplace(suite.id, make_suite(std::make_shared<const suite_config>(suite)));
  }
  third_party_.store(std::move(third_party));
}

broker::~broker() {
  stop();
}

std::shared_ptr<credential_refresher> broker::make_refresher(
    const std::shared_ptr<const app_config>& app, credential_kind kind,
    credential_refresher::origin how) {
  std::unique_ptr<credential_source> source;
  if (kind == credential_kind::access_token) {
    source = std::make_unique<gettoken_source>(app);
  } else {
    source = std::make_unique<ticket_source>(app, kind);
  }
  return std::make_shared<credential_refresher>(engine_, credential_id{kind, app->id},
                                                std::move(source), how);
}

// Credentials of an app whose corpid and secret stay are kept with the values they hold; with
// new ones, every credential of the app starts over and proves them (origin
// credentials_changed: nothing is adopted from the store, which holds the old ones' values).
app_entry broker::make_entry(std::shared_ptr<const app_config> app, const app_entry* existing) {
  const bool same_credentials =
      existing && existing->app->corpid == app->corpid && existing->app->secret == app->secret;
  const auto how = existing && !same_credentials ? credential_refresher::origin::credentials_changed
                                                 : credential_refresher::origin::configured;
  const auto keep_or_make = [&](credential_kind kind, bool configured) {
    std::shared_ptr<credential_refresher> kept;
    if (same_credentials) {
      if (auto* held = existing->credential(kind)) kept = held->shared_from_this();
    }
    if (!configured) return std::shared_ptr<credential_refresher>();
    return kept ? kept : make_refresher(app, kind, how);
  };
  app_entry entry{.app = app};
  entry.token = keep_or_make(credential_kind::access_token, true);
  entry.jsapi_ticket = keep_or_make(credential_kind::jsapi_ticket, app->jsapi_ticket);
  entry.agent_ticket = keep_or_make(credential_kind::agent_ticket, app->agent_ticket);
  return entry;
}

void broker::start() {
  engine_.start(tasks_);
  // Each loop holds the set it walks: a reload may replace apps_ meanwhile.
  const auto configured = apps();
  for (const auto& app : configured->in_order()) {
    for (auto* credential : app.credentials()) engine_.add(credential->shared_from_this());
  }
  start_third_party();
  store_->start(tasks_, [this](const std::optional<credential_id>& id) {
    if (id) {
      engine_.store_changed(*id);
    } else {
      engine_.store_returned();
      spawn("loading authorized corps", [this] { return adopt_stored_corps(); });
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
    auto entry = make_entry(std::make_shared<const app_config>(app), existing);
    if (!existing) {
      summary.added.push_back(app.id);
    } else if (entry.token.get() == existing->token.get()) {
      ++summary.kept;
    } else {
      summary.credentials_changed.push_back(app.id);
    }
    for (auto* credential : entry.credentials()) {
      // A new refresher replaces the one of the same id in the engine.
      if (!existing || existing->credential(credential->id().kind) != credential) {
        engine_.add(credential->shared_from_this());
      }
    }
    if (existing) {
      for (auto* before : existing->credentials()) {
        if (!entry.credential(before->id().kind)) engine_.remove(before->id());
      }
    }
    updated.push_back(std::move(entry));
  }
  auto next_set = std::make_shared<const app_set>(std::move(updated));
  for (const auto& app : previous->in_order()) {
    if (next_set->entry(app.app->id)) continue;
    summary.removed.push_back(app.app->id);
    for (auto* credential : app.credentials()) engine_.remove(credential->id());
  }
  apps_.store(std::move(next_set));
  reload_third_party(next);
  return summary;
}

}  // namespace token_broker
