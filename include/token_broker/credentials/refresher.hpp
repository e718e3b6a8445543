// One credential kept fresh: token_lifecycle's decisions carried out with a store, upstream and
// time, and the lock-free view every HTTP worker reads on the hot path. A refresher has no task
// of its own while idle: its engine starts a refresh when one is due, so a hundred thousand
// credentials cost a hundred thousand small objects, not coroutines and timers.
//
// Everything runs on the engine's strand. `Clock` is boot_clock in the daemon and a simulated
// clock in tests, which run hours of a credential's life in milliseconds.
#pragma once

#include <memory>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "token_broker/core/asio.hpp"
#include "token_broker/core/clock.hpp"
#include "token_broker/core/published.hpp"
#include "token_broker/credentials/call_budget.hpp"
#include "token_broker/credentials/credential.hpp"
#include "token_broker/credentials/fetch_result.hpp"
#include "token_broker/credentials/source.hpp"
#include "token_broker/credentials/token_lifecycle.hpp"
#include "token_broker/http/token_answer.hpp"
#include "token_broker/ops/metrics.hpp"
#include "token_broker/store/token_store.hpp"

namespace token_broker {

// How the last refresh this process made of a credential ended: a value fetched, one adopted
// from the store (another replica's, or a push), or a failure. The listings' "last_refresh".
struct refresh_outcome {
  enum class result { fetched, adopted, failed } outcome = result::fetched;
  time_point at;                         // when it ended
  std::optional<fetch_failure> failure;  // with `failed`; its errmsg never holds a secret
};

// What any thread may read about one credential without taking a lock; replaced whole on
// change.
struct credential_view {
  app_state state = app_state::unknown;
  std::optional<token> current;                 // the held value unless revoked; check serve_until
  prepared_token_answers answers;               // current's 200 answers, when there is a current
  std::string fingerprint;                      // current's, for the audit trail (fingerprint_of)
  std::optional<refresh_outcome> last_refresh;  // none before this process's first

  const token* servable(time_point now) const {
    return current && now < current->serve_until ? &*current : nullptr;
  }
  // The state as of `now`: a value can expire without anything being published.
  app_state state_at(time_point now) const {
    return state == app_state::fresh && !servable(now) ? app_state::unknown : state;
  }
};

// The answer to someone who needs the credential: it, or why there is none and when to come
// back.
struct token_outcome {
  std::shared_ptr<const credential_view> view;  // with a servable value, or null
  std::optional<fetch_failure> failure;         // the last upstream failure, if that is why
  std::chrono::seconds retry_after{1};
};

template <class Clock>
class basic_engine;

template <class Clock>
class basic_refresher : public std::enable_shared_from_this<basic_refresher<Clock>> {
 public:
  using engine_type = basic_engine<Clock>;
  using timer = asio::basic_waitable_timer<Clock>;

  // How a refresher begins: as at start (a value with time left in the store is adopted), or
  // with credentials a reload changed (the store's value came from the old ones, so the first
  // value is fetched with the new ones, proving they work).
  enum class origin { configured, credentials_changed };

  // `source` is how it is fetched.
  basic_refresher(engine_type& engine, credential_id id, std::unique_ptr<credential_source> source,
                  origin how = origin::configured);

  const credential_id& id() const { return id_; }
  // How answers and metrics name it: its scope (an app id).
  const std::string& label() const { return id_.scope; }
  const credential_source& source() const { return *source_; }
  // Fetched with another credential's value (source().dependency()).
  bool dependent() const { return dependent_; }
  std::shared_ptr<const credential_view> view() const { return view_.load(); }
  // For the hot path: read through a published<credential_view>::reader.
  const published<credential_view>& published_view() const { return view_; }
  const upstream_metrics& upstream_results() const { return upstream_results_; }

  // How long a caller without a value waits: for the next refresh, when it starts soon enough
  // (a client), or only for one under way (a credential fetched with this one: a task of the
  // engine that waited for a refresh still to come could hold the task that refresh needs).
  enum class wait_mode { next_refresh, under_way };
  // Any thread. Every caller that waits is answered (503 once stopped).
  asio::awaitable<token_outcome> wait_for_token(wait_mode mode = wait_mode::next_refresh);
  // A caller saw upstream reject `value` (SPEC §4 invalidate): compare, refresh once, answer.
  asio::awaitable<token_outcome> invalidate(std::string value);

  // Any thread. A pushed value (is_pushed: a suite_ticket) that arrived here, living
  // `lifetime` from now: held, served and saved to the store unless a newer one is held. True
  // when it is the value held now.
  asio::awaitable<bool> accept_pushed(std::string value, std::chrono::seconds lifetime);

  // The engine's side, on its strand.
  void begin();                 // plans its first task
  asio::awaitable<void> run();  // its task when due: the first looks at the store, any may
                                // refresh; plans the next
  // Adopts the store's value if it is newer than the one held.
  asio::awaitable<void> load_from_store();
  void end();  // stopped or removed: no more refreshes, waiters answered
  // The value it is fetched with arrived: after a failure, try again at once.
  void retry_failed();
  void apply(const refresh_config& refresh) { lifecycle_.set_policy(refresh); }
  bool ended() const { return ended_; }
  // The engine has not started its first task (which looks at the store) yet.
  bool started() const { return !first_run_; }
  // A task of it runs, or a refresh is under way: it plans itself when that ends.
  bool busy() const { return running_ || lifecycle_.in_flight(); }
  void set_running(bool running) { running_ = running; }
  // A look at the store asked for while busy waits for the task's end: a value adopted while
  // a call is under way could be overwritten by that call's older answer.
  void defer_load() { load_deferred_ = true; }
  bool take_deferred_load() { return std::exchange(load_deferred_, false); }
  time_point next_attempt_at() const { return lifecycle_.next_attempt_at(); }
  // The engine's bookkeeping: where this refresher stands in its queue of due refreshes.
  std::optional<time_point>& queued_at() { return queued_at_; }

 private:
  asio::awaitable<void> negotiate_and_call();
  // A pushed credential's refresh: the store may hold a newer push (another replica's).
  asio::awaitable<void> look_for_push();
  fetch_failure no_push() const;
  asio::awaitable<bool> accept_on_strand(std::string value, std::chrono::seconds lifetime);
  // The value of the credential this one is fetched with ("" for none), or why there is none.
  // `rejected`: the value upstream rejected, reported first (compare-and-refresh).
  asio::awaitable<std::variant<std::string, fetch_failure>> dependency_value(
      const std::optional<std::string>& rejected);
  // How a call ended: done (recorded), or upstream rejected the dependency's value `carried`
  // and nothing was recorded: the refresh goes on with a new value.
  enum class call_end { done, dependency_rejected };
  // `upstream` is the client `held` is a slot of: a reload may replace the one in force.
  // `carried`: the dependency's value.
  asio::awaitable<call_end> call_upstream(upstream_caller& upstream,
                                          const upstream_caller::slot& held, bool holds_permit,
                                          const std::string& carried, bool may_retry);
  // One call: the budget spent, upstream asked, its answer read and counted.
  asio::awaitable<fetch_result> fetch(upstream_caller& upstream, const upstream_caller::slot& held,
                                      const std::string& carried);
  // For a budgeted credential, counts the call it is about to make, or says why it may not.
  asio::awaitable<std::optional<fetch_failure>> spend_budget();
  asio::awaitable<void> save_held();
  bool adopt_stored(const stored_token& stored);
  // Where a failure came from: this credential's own attempt, or the one it is fetched with.
  enum class failure_cause { own, dependency };
  void record(const fetch_result& result, time_point started_at,
              failure_cause cause = failure_cause::own);
  asio::awaitable<token_outcome> wait_on_strand(wait_mode mode = wait_mode::next_refresh);
  asio::awaitable<token_outcome> invalidate_on_strand(std::string value);
  token_outcome unavailable(time_point now) const;
  void publish();
  double jitter_unit() { return std::uniform_real_distribution<double>(0.0, 1.0)(random_); }

  engine_type& engine_;
  const credential_id id_;
  const std::unique_ptr<credential_source> source_;
  const bool dependent_;

  // Everything below is touched only on the engine's strand.
  token_lifecycle lifecycle_;
  std::vector<timer*> waiters_;  // callers waiting for the next change
  std::minstd_rand random_;      // jitter needs spread, not quality: 8 bytes, not 2.5 KB
  std::optional<time_point> queued_at_;
  call_window calls_;          // budgeted kinds: this process's calls in the window
  bool ignore_store_ = false;  // credentials changed: adopt nothing until a fetch succeeds
  bool ended_ = false;
  bool first_run_ = true;  // the store is not looked at yet
  bool running_ = false;
  bool load_deferred_ = false;
  std::optional<refresh_outcome> last_refresh_;  // published with the view

  upstream_metrics upstream_results_;  // any thread
  published<credential_view> view_;
};

using credential_refresher = basic_refresher<boot_clock>;

}  // namespace token_broker
