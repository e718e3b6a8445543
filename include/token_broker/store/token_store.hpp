// Where tokens live beyond one refresher, and how replicas agree on who calls upstream.
// Without "redis" in the config it is memory_token_store: one process, nobody to agree with.
// With it, redis_token_store: readers GET the key, replicas share one refresh.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "token_broker/core/asio.hpp"
#include "token_broker/core/clock.hpp"
#include "token_broker/core/secret_digest.hpp"
#include "token_broker/core/supervisor.hpp"

namespace token_broker {

struct stored_token {
  std::string value;
  // On this process's clock. A store shared with other hosts never passes it on as an
  // instant: it sends the time left, counted on its own clock (redis_token_store: Redis's).
  time_point expires_at;
};

// What a shared store holds for one app, told without the value: cheap enough to compare
// every app's token with the store's.
struct stored_digest {
  bool present = false;
  time_point expires_at{};  // when present
  std::string digest;       // token_digest of the value, when present
};

// The first 16 hex digits of the value's SHA-1: what a store tells instead of the value
// (Redis: redis.sha1hex(value):sub(1, 16)).
inline std::string token_digest(std::string_view value) {
  return sha1_hex(value).substr(0, 16);
}

enum class save_outcome {
  written,      // the store holds this token now
  newer_kept,   // the store holds a newer token (a later expiry), which was kept
  unavailable,  // the store could not be reached; try again later
};

// Who may call upstream for an app now.
enum class refresh_permit {
  granted,       // this process: call upstream, then release_refresh()
  busy,          // another replica is calling: wait for its token (or for its lease to end)
  cooling_down,  // another replica's call failed or brought back the same token: call after `wait`
  unavailable,   // the store cannot be reached: decide alone
};

struct refresh_permit_answer {
  refresh_permit permit = refresh_permit::unavailable;
  std::chrono::milliseconds wait{0};
  std::optional<stored_token> stored;  // the store's token when asked, if any
};

class token_store {
 public:
  virtual ~token_store() = default;

  // Starts the store's own activity (connections), as tasks of `tasks`. `changed` is called
  // with an app id when the store may hold a newer token for it, and with "" when the store is
  // reachable again: it may hold newer tokens for every app, or have lost what it held (a
  // restart), and changes may have gone unannounced meanwhile.
  virtual void start(supervisor& tasks, std::function<void(const std::string& app_id)> changed) {
    (void)tasks;
    (void)changed;
  }
  virtual void stop() {}

  // True when other processes write it too, so it is worth watching for their tokens.
  virtual bool shared() const = 0;
  // Whether the store is reachable now; empty for a store that cannot be down (memory).
  virtual std::optional<bool> up() const { return std::nullopt; }
  // Returns once the store is reachable, or has had a fair chance to become so at start-up:
  // deciding before then would call upstream for a token the store already holds.
  virtual asio::awaitable<void> settle() { co_return; }
  // The token stored for `app_id`; nullopt when there is none or the store is unreachable.
  virtual asio::awaitable<std::optional<stored_token>> load(const std::string& app_id) = 0;
  // Stores `token` unless the store holds a newer one. The same token's expiry only ever
  // moves earlier.
  virtual asio::awaitable<save_outcome> save(const std::string& app_id,
                                             const stored_token& token) = 0;
  // Asks to call upstream for `app_id`, a call that `call_timeout` bounds. `forced` (an
  // invalidation) ignores another replica's cool-down: the report says the held token is
  // dead. Ask only when ready to call at once (holding an upstream slot): a grant to a caller
  // still in line could run out before its call is over.
  virtual asio::awaitable<refresh_permit_answer> request_refresh(
      const std::string& app_id, bool forced, std::chrono::milliseconds call_timeout) = 0;
  // For a shared store: what it holds for each of `app_ids` (in that order), without the
  // values; nullopt when it cannot be reached.
  virtual asio::awaitable<std::optional<std::vector<stored_digest>>> digests(
      std::vector<std::string> app_ids) {
    (void)app_ids;
    co_return std::nullopt;
  }
  // For a shared store: save() for many apps at once, an outcome for each (in that order).
  virtual asio::awaitable<std::vector<save_outcome>> save_all(
      std::vector<std::pair<std::string, stored_token>> tokens) {
    co_return std::vector<save_outcome>(tokens.size(), save_outcome::unavailable);
  }
  // Ends a granted refresh. A positive `cool_down` tells the other replicas not to call
  // upstream for that long (a failure's backoff, or until a returned token can be replaced).
  virtual asio::awaitable<void> release_refresh(const std::string& app_id,
                                                std::chrono::milliseconds cool_down) = 0;
};

class memory_token_store final : public token_store {
 public:
  bool shared() const override { return false; }

  asio::awaitable<std::optional<stored_token>> load(const std::string& app_id) override {
    const std::lock_guard lock(mutex_);
    const auto found = tokens_.find(app_id);
    if (found == tokens_.end()) co_return std::nullopt;
    co_return found->second;
  }

  asio::awaitable<save_outcome> save(const std::string& app_id,
                                     const stored_token& token) override {
    const std::lock_guard lock(mutex_);
    tokens_.insert_or_assign(app_id, token);
    co_return save_outcome::written;
  }

  asio::awaitable<refresh_permit_answer> request_refresh(const std::string&, bool,
                                                         std::chrono::milliseconds) override {
    co_return refresh_permit_answer{.permit = refresh_permit::granted};
  }

  asio::awaitable<void> release_refresh(const std::string&, std::chrono::milliseconds) override {
    co_return;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, stored_token> tokens_;
};

}  // namespace token_broker
