// The configured apps and the engine that keeps their credentials fresh: what the HTTP side
// asks for tokens and tickets. The set of apps is immutable and replaced whole by a reload, so a
// request sees one config, old or new.
#pragma once

#include <map>
#include <memory>
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

  supervisor tasks_;
  std::unique_ptr<token_store> store_;
  upstream_config upstream_settings_;
  credential_engine engine_;
  published<app_set> apps_{std::make_shared<const app_set>()};
};

}  // namespace token_broker
