// The configured apps and the engine that keeps their credentials fresh: what the HTTP side
// asks for tokens and tickets. The set of apps is immutable and replaced whole by a reload, so a
// request sees one config, old or new.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/core/published.hpp"
#include "token_broker/core/supervisor.hpp"
#include "token_broker/credentials/engine.hpp"
#include "token_broker/store/token_store.hpp"
#include "token_broker/suites/third_party_set.hpp"
#include "token_broker/upstream/upstream_client.hpp"

namespace token_broker {

// One configured app and its credentials.
struct app_entry {
  std::shared_ptr<const app_config> app;  // shared with the credentials' sources
  std::shared_ptr<credential_refresher> token;
  std::shared_ptr<credential_refresher> jsapi_ticket;  // null unless configured
  std::shared_ptr<credential_refresher> agent_ticket;  // null unless configured

  // The app's credential of `kind`, or null when it is not configured.
  credential_refresher* credential(credential_kind kind) const;
  // Every credential of the app, its access_token first.
  std::vector<credential_refresher*> credentials() const;
};

// The outcome of WeCom-style credentials (corpid + corpsecret) checked against the config.
struct credential_match {
  enum class result { unknown_corpid, wrong_secret, matched } outcome = result::unknown_corpid;
  credential_refresher* app = nullptr;  // lives as long as the set it came from
};

class app_set {
 public:
  app_set() = default;
  explicit app_set(std::vector<app_entry> apps);

  // The app's access_token, null when there is no such app; lives as long as the set does.
  credential_refresher* find(std::string_view app_id) const;
  const app_entry* entry(std::string_view app_id) const;
  const std::vector<app_entry>& in_order() const { return in_order_; }
  // Compares the secret's digest with every app of that corpid, in constant time.
  credential_match match_credentials(std::string_view corpid, std::string_view secret) const;

 private:
  // Indices into in_order_, sorted: a hundred thousand apps cost no tree nodes.
  std::vector<app_entry> in_order_;
  std::vector<sha256_digest> secret_digests_;  // parallel to in_order_
  std::vector<std::uint32_t> by_id_;
  std::vector<std::uint32_t> by_corpid_;
};

// How long a pushed suite_ticket is used (SPEC §7: WeCom pushes one every 10 minutes, each
// good for 30); the routes hand it to the suite's ticket (accept_pushed), which shares it
// through the store.
inline constexpr std::chrono::seconds suite_ticket_lifetime{1800};

// What a reload changed, by app id.
struct reload_summary {
  std::vector<std::string> added, removed, credentials_changed;
  std::size_t kept = 0;
};

class broker {
 public:
  broker(asio::any_io_executor executor, const config& settings,
         std::unique_ptr<token_store> store);
  ~broker();
  broker(const broker&) = delete;
  broker& operator=(const broker&) = delete;

  void start();
  // Ends every refresh and answers every waiting request (503).
  void stop();

  std::shared_ptr<const app_set> apps() const { return apps_.load(); }
  // For the hot path: read through a published<app_set>::reader.
  const published<app_set>& published_apps() const { return apps_; }
  // Whether the shared store is reachable; empty without one.
  std::optional<bool> store_up() const { return store_->up(); }
  // Providers, suites and their authorized corps.
  std::shared_ptr<const third_party_set> third_party() const { return third_party_.load(); }

  // SPEC §7 create_auth and reset_permanent_code, after the callback is answered: the auth code
  // is exchanged for the corp's permanent code (get_permanent_code), and the corp is added (or
  // its code replaced) here, in the store, and so on every replica.
  void authorize_corp(std::string suite, std::string auth_code);
  // SPEC §7 cancel_auth: the corp, its keys and its credentials go, everywhere.
  void cancel_corp(std::string suite, std::string corpid);

  // Which app an access_token handed out belongs to (the drop-ins keyed by a token).
  const handed_out_tokens& handed_out() const { return engine_.handed_out(); }
  // The process's long-lived tasks: the credential scheduler, the store's connections, and whatever
  // else the daemon spawns through it.
  supervisor& tasks() { return tasks_; }
  const supervisor& tasks() const { return tasks_; }

  // Applies a new config's apps, refresh and upstream settings (SPEC §2 SIGHUP): added apps
  // start, removed ones stop, apps with a new corpid or secret start over with it, and the
  // others keep their tokens. Call from one thread at a time, after start().
  reload_summary reload(const config& next);

 private:
  // The entry for `app`, with refreshers made for what is new or changed since `existing`.
  app_entry make_entry(std::shared_ptr<const app_config> app, const app_entry* existing);
  std::shared_ptr<credential_refresher> make_refresher(const std::shared_ptr<const app_config>& app,
                                                       credential_kind kind,
                                                       credential_refresher::origin how);

  // The third-party side (src/suites/broker_suites.cpp).
  provider_entry make_provider(std::shared_ptr<const provider_config> provider);
  suite_entry make_suite(std::shared_ptr<const suite_config> suite);
  std::shared_ptr<credential_refresher> make_corp_token(const suite_entry& suite,
                                                        std::string_view corpid,
                                                        std::string_view permanent_code);
  void start_third_party();
  void reload_third_party(const config& next);
  // The set with `change` made to a copy of it, published; one change at a time.
  void change_third_party(const std::function<void(third_party_set&)>& change);
  // Adds (or replaces) a corp's entry and starts its token.
  void add_corp_here(const std::string& suite, const std::string& corpid,
                     const std::string& permanent_code, corp_origin origin);
  void remove_corp_here(const std::string& suite, const std::string& corpid);
  asio::awaitable<void> exchange_auth_code(std::string suite, std::string auth_code);
  // The store's authorized corps that this process lacks are added (at start, when the store
  // returns).
  asio::awaitable<void> adopt_stored_corps();
  asio::awaitable<void> corp_changed_elsewhere(credential_id corp, bool added);
  // Runs `task` as a short-lived coroutine on the control loop; a failure is logged.
  void spawn(const char* what, std::function<asio::awaitable<void>()> task);

  supervisor tasks_;
  asio::any_io_executor executor_;
  std::unique_ptr<token_store> store_;
  upstream_config upstream_settings_;
  credential_engine engine_;
  published<app_set> apps_{std::make_shared<const app_set>()};
  published<third_party_set> third_party_{std::make_shared<const third_party_set>()};
  std::mutex third_party_changes_;
};

}  // namespace token_broker
