// Every credential the broker holds, kept fresh by one scheduler: a queue of due refreshes
// ordered by time and one timer, as a janitor walks its pools — not a coroutine, a timer and a
// poll per credential, which does not reach a hundred thousand of them. The engine is also the
// registry: credentials are added and removed at runtime (a reload, an authorized corp that
// arrives by callback), each with its own source of values.
//
// Everything runs on one strand of the control loop. `Clock` is boot_clock in the daemon and a
// simulated clock in tests.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/core/clock.hpp"
#include "token_broker/core/supervisor.hpp"
#include "token_broker/credentials/credential.hpp"
#include "token_broker/credentials/handed_out_tokens.hpp"
#include "token_broker/credentials/refresher.hpp"
#include "token_broker/credentials/store_sync.hpp"
#include "token_broker/store/token_store.hpp"
#include "token_broker/upstream/upstream_client.hpp"

namespace token_broker {

template <class Clock>
class basic_engine {
 public:
  using refresher = basic_refresher<Clock>;
  using timer = asio::basic_waitable_timer<Clock>;

  // `wait_limit` bounds how long a caller waits for a refresh (upstream.timeout_ms). The
  // store must outlive the engine.
  basic_engine(asio::any_io_executor executor, const refresh_config& refresh,
               std::chrono::milliseconds wait_limit, std::shared_ptr<upstream_caller> upstream,
               token_store& store);
  basic_engine(const basic_engine&) = delete;
  basic_engine& operator=(const basic_engine&) = delete;

  // Any thread. The scheduler runs as a task of `tasks`: restarted if it ever fails.
  void start(supervisor& tasks);
  // Ends every refresh and answers every waiting caller (503); nothing is scheduled after.
  void stop();
  // Starts keeping `credential` fresh; one with the same id is ended and replaced.
  void add(std::shared_ptr<refresher> credential);
  void remove(credential_id id);
  // A reload's settings, for the decisions still to come; `upstream` when it changed.
  void apply(const refresh_config& refresh, std::chrono::milliseconds wait_limit,
             std::shared_ptr<upstream_caller> upstream);
  // The shared store may hold a newer value for `id` (another replica's event).
  void store_changed(credential_id id);
  // The store is reachable again: it may hold newer values, or have lost what it held (a
  // Redis restarted without persistence). Everything is compared with it.
  void store_returned();

  // The refreshers' side, on the strand.
  const asio::strand<asio::any_io_executor>& strand() const { return strand_; }
  const refresh_config& refresh_policy() const { return refresh_; }
  std::chrono::milliseconds wait_limit() const { return wait_limit_; }
  std::shared_ptr<upstream_caller> upstream() const { return upstream_; }
  token_store& store() { return store_; }
  bool stopping() const { return stopping_; }
  std::shared_ptr<refresher> find(const credential_id& id) const;
  // Any thread: which app a token handed out belongs to; refreshers of access_tokens tell it.
  handed_out_tokens& handed_out() { return handed_out_; }
  const handed_out_tokens& handed_out() const { return handed_out_; }
  std::vector<std::shared_ptr<refresher>> all() const;
  // `credential` loads the store's value (it may be newer than the one held).
  void load_from_store(refresher& credential);
  // `id` holds a value again after it had none: the credentials fetched with it that failed
  // (for want of it, as a suite token without a suite_ticket) try again at once.
  void value_arrived(const credential_id& id);
  // `credential`'s next attempt may have moved: plan it.
  void plan(refresher& credential);
  // The completion of a credential's task: an exception is logged, never silent.
  std::function<void(std::exception_ptr)> log_failure(const refresher& credential) const;

 private:
  asio::awaitable<void> run();
  void task_ended(refresher& credential);
  void unqueue(refresher& credential);
  void forget_dependency(const refresher& credential);

  asio::strand<asio::any_io_executor> strand_;
  token_store& store_;
  // Everything below is touched only on strand_.
  refresh_config refresh_;
  std::chrono::milliseconds wait_limit_;
  std::shared_ptr<upstream_caller> upstream_;
  std::map<credential_id, std::shared_ptr<refresher>> registry_;
  // Each dependency (source().dependency()) with the credentials fetched with it.
  std::multimap<credential_id, credential_id> dependents_;
  // One entry per idle credential, by when it is due; of those due at one time, credentials
  // others are fetched with (tokens) first: a ticket started before its token would hold one
  // of the tasks while it waits for that token, and enough of them would hold them all.
  struct due_entry {
    time_point at;
    bool dependent;
    refresher* credential;
    auto operator<=>(const due_entry&) const = default;
  };
  std::set<due_entry> due_;
  std::size_t running_ = 0;  // tasks of credentials under way
  std::size_t ended_since_trim_ = 0;
  timer wake_;
  time_point wake_at_{};
  bool stopping_ = false;
  std::optional<basic_store_sync<Clock>> sync_;  // with a shared store
  handed_out_tokens handed_out_;
};

using credential_engine = basic_engine<boot_clock>;

}  // namespace token_broker
