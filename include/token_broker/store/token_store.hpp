// Where credentials live beyond one refresher, and how replicas agree on who calls upstream.
// Without "redis" in the config it is memory_token_store: one process, nobody to agree with.
// With it, redis_token_store: readers GET the key, replicas share one refresh and one count
// of budgeted calls.
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
#include "token_broker/credentials/credential.hpp"

namespace token_broker {

struct stored_token {
  std::string value;
  // On this process's clock. A store shared with other hosts never passes it on as an
  // instant: it sends the time left, counted on its own clock (redis_token_store: Redis's).
  time_point expires_at;
};

// What a shared store holds for one credential, told without the value: cheap enough to compare
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
  written,             // the store holds this token now
  store_knows_better,  // a newer token, or an earlier end of this one, which was kept: load it
  unavailable,         // the store could not be reached; try again later
};

// Who may call upstream for a credential now.
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

// Whether a budgeted call may be made (spend_call).
struct call_budget_answer {
  enum class verdict {
    granted,      // counted: call
    spent,        // the fleet made `limit` calls in the window: none before `wait`
    not_counted,  // no shared count (no shared store, or unreachable): the process's decides
  } outcome = verdict::not_counted;
  std::chrono::milliseconds wait{0};
};

// A suite's corps that authorized it by callback (SPEC §5 {prefix}suite_corps:{suite}): each
// corpid with its permanent code sealed (at_rest_key), never the plaintext.
using sealed_corps = std::map<std::string, std::string, std::less<>>;

class token_store {
 public:
  virtual ~token_store() = default;

  // Before start(): called with a corp's token id ("suite:corpid") when another process added
  // (true) or removed (false) an authorized corp.
  using corps_listener = std::function<void(const credential_id& corp, bool added)>;
  virtual void watch_corps(corps_listener changed) { (void)changed; }

  // Starts the store's own activity (connections), as tasks of `tasks`. `changed` is called
  // with a credential when the store may hold a newer value for it, and with nullopt when the
  // store is reachable again: it may hold newer values for every credential, or have lost what
  // it held (a restart), and changes may have gone unannounced meanwhile.
  using change_listener = std::function<void(const std::optional<credential_id>&)>;
  virtual void start(supervisor& tasks, change_listener changed) {
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
  // The value stored for `id`; nullopt when there is none or the store is unreachable.
  virtual asio::awaitable<std::optional<stored_token>> load(const credential_id& id) = 0;
  // Stores `token` unless the store holds a newer one. The same token's expiry only ever
  // moves earlier.
  virtual asio::awaitable<save_outcome> save(const credential_id& id,
                                             const stored_token& token) = 0;
  // Asks to call upstream for `id`, a call that `call_timeout` bounds. `forced` (an
  // invalidation) ignores another replica's cool-down: the report says the held token is
  // dead. Ask only when ready to call at once (holding an upstream slot): a grant to a caller
  // still in line could run out before its call is over.
  virtual asio::awaitable<refresh_permit_answer> request_refresh(
      const credential_id& id, bool forced, std::chrono::milliseconds call_timeout) = 0;
  // For a shared store: what it holds for each of `ids` (in that order), without the values;
  // nullopt when it cannot be reached.
  virtual asio::awaitable<std::optional<std::vector<stored_digest>>> digests(
      std::vector<credential_id> ids) {
    (void)ids;
    co_return std::nullopt;
  }
  // For a shared store: save() for many credentials at once, an outcome for each (in order).
  virtual asio::awaitable<std::vector<save_outcome>> save_all(
      std::vector<std::pair<credential_id, stored_token>> tokens) {
    co_return std::vector<save_outcome>(tokens.size(), save_outcome::unavailable);
  }
  // Ends a granted refresh. A positive `cool_down` tells the other replicas not to call
  // upstream for that long (a failure's backoff, or until a returned token can be replaced).
  virtual asio::awaitable<void> release_refresh(const credential_id& id,
                                                std::chrono::milliseconds cool_down) = 0;
  // For a shared store: counts one call for `id` if the fleet made fewer than `limit` in the
  // last call_budget_window, on the store's clock (no replica's clock counts).
  virtual asio::awaitable<call_budget_answer> spend_call(const credential_id& id, unsigned limit) {
    (void)id;
    (void)limit;
    co_return call_budget_answer{};
  }

  // The corps that authorized `suite` by callback; nullopt when the store is unreachable (or
  // keeps no corps: the base class).
  virtual asio::awaitable<std::optional<sealed_corps>> authorized_corps(std::string suite) {
    (void)suite;
    co_return std::nullopt;
  }
  // One of them: its sealed code, or nullopt (none, or unreachable).
  virtual asio::awaitable<std::optional<std::string>> authorized_corp(std::string suite,
                                                                      std::string corpid) {
    (void)suite;
    (void)corpid;
    co_return std::nullopt;
  }
  // Keeps the corp (replacing its code) and tells the other processes; false when unreachable.
  virtual asio::awaitable<bool> add_corp(std::string suite, std::string corpid,
                                         std::string sealed_code) {
    (void)suite;
    (void)corpid;
    (void)sealed_code;
    co_return false;
  }
  // Forgets the corp with its token and tells the other processes; false when unreachable.
  virtual asio::awaitable<bool> remove_corp(std::string suite, std::string corpid) {
    (void)suite;
    (void)corpid;
    co_return false;
  }
};

class memory_token_store final : public token_store {
 public:
  bool shared() const override { return false; }

  asio::awaitable<std::optional<stored_token>> load(const credential_id& id) override {
    const std::lock_guard lock(mutex_);
    const auto found = tokens_.find(id);
    if (found == tokens_.end()) co_return std::nullopt;
    co_return found->second;
  }

  asio::awaitable<save_outcome> save(const credential_id& id, const stored_token& token) override {
    const std::lock_guard lock(mutex_);
    tokens_.insert_or_assign(id, token);
    co_return save_outcome::written;
  }

  asio::awaitable<refresh_permit_answer> request_refresh(const credential_id&, bool,
                                                         std::chrono::milliseconds) override {
    co_return refresh_permit_answer{.permit = refresh_permit::granted};
  }

  asio::awaitable<void> release_refresh(const credential_id&, std::chrono::milliseconds) override {
    co_return;
  }

  asio::awaitable<std::optional<sealed_corps>> authorized_corps(std::string suite) override {
    const std::lock_guard lock(mutex_);
    co_return corps_[suite];
  }

  asio::awaitable<std::optional<std::string>> authorized_corp(std::string suite,
                                                              std::string corpid) override {
    const std::lock_guard lock(mutex_);
    const auto& corps = corps_[suite];
    const auto found = corps.find(corpid);
    if (found == corps.end()) co_return std::nullopt;
    co_return found->second;
  }

  asio::awaitable<bool> add_corp(std::string suite, std::string corpid,
                                 std::string sealed_code) override {
    const std::lock_guard lock(mutex_);
    corps_[suite].insert_or_assign(std::move(corpid), std::move(sealed_code));
    co_return true;
  }

  asio::awaitable<bool> remove_corp(std::string suite, std::string corpid) override {
    const std::lock_guard lock(mutex_);
    corps_[suite].erase(corpid);
    tokens_.erase(credential_id{credential_kind::corp_token, suite + ":" + corpid});
    co_return true;
  }

 private:
  std::mutex mutex_;
  std::map<credential_id, stored_token> tokens_;
  std::map<std::string, sealed_corps, std::less<>> corps_;
};

}  // namespace token_broker
