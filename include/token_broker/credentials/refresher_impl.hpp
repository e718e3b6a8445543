// basic_refresher's definitions, included where it is instantiated: src/credentials/ for the
// daemon's clock, the simulated-time tests for theirs.
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>

#include "token_broker/core/secret_digest.hpp"
#include "token_broker/credentials/engine.hpp"
#include "token_broker/credentials/refresher.hpp"

namespace token_broker {
namespace refresher_detail {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

// A caller waiting for a refresh gives up this long after the refresh's own deadline, so
// that the refresh's failure, not the caller's timeout, is what the caller reports.
constexpr milliseconds wait_slack{100};

// While another replica holds the refresh lock, look this often for its value.
constexpr milliseconds follow_poll{200};

inline std::int64_t milliseconds_between(time_point from, time_point to) {
  return duration_cast<milliseconds>(to - from).count();
}

}  // namespace refresher_detail

template <class Clock>
basic_refresher<Clock>::basic_refresher(engine_type& engine, credential_id id,
                                        std::unique_ptr<credential_source> source, origin how)
    : engine_(engine),
      id_(std::move(id)),
      source_(std::move(source)),
      dependent_(source_->dependency().has_value()),
      lifecycle_(engine.refresh_policy()),
      random_(std::random_device{}()),
      ignore_store_(how == origin::credentials_changed),
      view_(std::make_shared<const credential_view>()) {}

// Nothing runs yet: the first task the engine starts looks at the store first (run()), so that
// a start with many credentials looks a bounded number at a time.
template <class Clock>
void basic_refresher<Clock>::begin() {
  publish();
}

template <class Clock>
void basic_refresher<Clock>::end() {
  ended_ = true;
  publish();  // answers every waiter: they find the refresher ended
}

template <class Clock>
asio::awaitable<void> basic_refresher<Clock>::run() {
  try {
    if (std::exchange(first_run_, false)) {
      co_await engine_.store().settle();
      // A value with time left in the store is adopted, not fetched.
      if (const auto stored = co_await engine_.store().load(id_)) adopt_stored(*stored);
    }
    if (!ended_ && Clock::now() >= lifecycle_.next_attempt_at()) co_await negotiate_and_call();
  } catch (const std::exception& error) {
    // A broken invariant in one refresh must not end this credential's refreshing for good.
    spdlog::error("{} refresh failed unexpectedly: {}", log_name(id_), error.what());
    if (lifecycle_.in_flight()) {
      lifecycle_.attempt_failed(
          fetch_failure{failure_class::transient, local_failure_errcode, "internal error"},
          Clock::now(), jitter_unit());
    }
  }
  publish();  // and so the next refresh is planned
}

// One due refresh. With a shared store the replicas first agree on who calls upstream; the
// others adopt the caller's value. The upstream slot is taken first: the refresh lock's lease
// then covers the call alone, never the wait in line for a slot, however long the backlog.
//
// A credential fetched with another's value (a ticket, with its app's token) waits for that
// value before it takes a slot, so that no slot is held by a wait for another refresh, which
// may need a slot itself. When upstream rejects that value (rejects_dependency), the slot and
// the lock are given back, the value is reported to its refresher (compare-and-refresh, shared
// with every other report), and the refresh goes round once more with the value that
// replaces it.
template <class Clock>
asio::awaitable<void> basic_refresher<Clock>::negotiate_and_call() {
  using namespace refresher_detail;
  if (is_pushed(id_.kind)) co_return co_await look_for_push();
  lifecycle_.attempt_pending();
  publish();
  auto& store = engine_.store();
  timer follow(engine_.strand());
  std::optional<std::string> rejected;
  while (!ended_) {
    auto dependency = co_await dependency_value(rejected);
    if (ended_) break;
    if (auto* failure = std::get_if<fetch_failure>(&dependency)) {
      record(std::move(*failure), Clock::now(), failure_cause::dependency);
      co_return;
    }
    const auto& carried = std::get<std::string>(dependency);
    const auto upstream = engine_.upstream();  // a reload may replace it meanwhile
    auto reservation = upstream->reserve();
    auto held = co_await std::move(reservation);
    if (ended_) break;
    // New credentials call at once, as an invalidation does, past other replicas' cool-down.
    const bool forced = lifecycle_.revoked() || ignore_store_;
    // The lease covers the call alone: this refresher already holds its slot.
    const auto answer = co_await store.request_refresh(id_, forced, engine_.wait_limit());
    if (ended_) {
      if (answer.permit == refresh_permit::granted) {
        co_await store.release_refresh(id_, milliseconds{0});
      }
      break;
    }
    const bool granted = answer.permit == refresh_permit::granted;
    // Another replica was faster: its value arrived with this answer, and the next refresh is
    // not due before it ends. (Looks at the store asked for meanwhile wait for this task's
    // end: defer_load.)
    const bool adopted = answer.stored && adopt_stored(*answer.stored);
    if (adopted && Clock::now() < lifecycle_.next_attempt_at()) {
      if (granted) co_await store.release_refresh(id_, milliseconds{0});
      lifecycle_.attempt_withdrawn(std::nullopt);
      co_return;
    }
    switch (answer.permit) {
      case refresh_permit::granted:
      case refresh_permit::unavailable: {
        const auto ended = co_await call_upstream(*upstream, held, granted, carried, !rejected);
        if (ended == call_end::done) co_return;
        rejected = carried;
        continue;  // with the slot given back
      }
      case refresh_permit::cooling_down: {
        // In a cool-down's last millisecond Redis says 0 ms left while the key still stands:
        // wait that millisecond out rather than ask again at once.
        const auto pause = std::max(answer.wait, milliseconds{1});
        spdlog::info("{} another replica's call asks for a pause of {} ms; following it",
                     log_name(id_), pause.count());
        lifecycle_.attempt_withdrawn(Clock::now() + pause);
        co_return;
      }
      case refresh_permit::busy:
        break;
    }
    // Another replica is calling upstream: its value comes with its event (or the next look);
    // if it dies, its lease runs out and this replica is granted the call. The slot is given
    // back while following: this replica makes no call meanwhile.
    held = upstream_caller::slot{};
    follow.expires_after(std::clamp(answer.wait, milliseconds{1}, follow_poll));
    co_await follow.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  lifecycle_.attempt_withdrawn(std::nullopt);
}

// Nobody can fetch a pushed value: when it is due, only the store may have a newer one. Without
// one, the held value is served to its end, and what needs it fails as upstream would
// (40085 invalid suite_ticket) until WeCom pushes again.
template <class Clock>
asio::awaitable<void> basic_refresher<Clock>::look_for_push() {
  const auto started_at = Clock::now();
  const std::string held = lifecycle_.held() ? lifecycle_.held()->value : std::string();
  lifecycle_.attempt_started(started_at);
  publish();
  const auto stored = co_await engine_.store().load(id_);
  if (ended_) co_return lifecycle_.attempt_withdrawn(std::nullopt);
  // A push that arrived here meanwhile counts as much as one the store holds.
  const bool pushed_meanwhile = lifecycle_.held() && lifecycle_.held()->value != held;
  if ((stored && adopt_stored(*stored)) || pushed_meanwhile) {
    co_return lifecycle_.attempt_withdrawn(std::nullopt);
  }
  record(no_push(), started_at);
}

// What is missing while no push is held: what WeCom answers a call with a stale suite_ticket.
template <class Clock>
fetch_failure basic_refresher<Clock>::no_push() const {
  return fetch_failure{failure_class::transient, 40085,
                       "no " + std::string(to_string(id_.kind)) +
                           " pushed in its lifetime; waiting for WeCom's next push"};
}

template <class Clock>
asio::awaitable<bool> basic_refresher<Clock>::accept_pushed(std::string value,
                                                            std::chrono::seconds lifetime) {
  auto operation = asio::co_spawn(engine_.strand(), accept_on_strand(std::move(value), lifetime),
                                  asio::use_awaitable);
  co_return co_await std::move(operation);
}

template <class Clock>
asio::awaitable<bool> basic_refresher<Clock>::accept_on_strand(std::string value,
                                                               std::chrono::seconds lifetime) {
  const auto self = this->shared_from_this();  // a reload may drop it meanwhile
  const auto now = Clock::now();
  if (ended_) co_return false;
  const auto candidate =
      token_from_expiry(std::move(value), now + lifetime, now, wall_clock::now());
  if (!lifecycle_.adopt(candidate, jitter_unit())) {
    co_return lifecycle_.held() && lifecycle_.held()->value == candidate.value;
  }
  last_refresh_ = refresh_outcome{refresh_outcome::result::adopted, now, std::nullopt};
  spdlog::info("{} pushed, expires_at={} (in {}s)", log_name(id_),
               unix_seconds(candidate.expires_at_wall), lifetime.count());
  publish();
  co_await save_held();
  co_return true;
}

template <class Clock>
void basic_refresher<Clock>::retry_failed() {
  if (ended_ || busy() || !lifecycle_.last_failure()) return;
  lifecycle_.retry_now();
  engine_.plan(*this);
}

template <class Clock>
asio::awaitable<std::variant<std::string, fetch_failure>> basic_refresher<Clock>::dependency_value(
    const std::optional<std::string>& rejected) {
  const auto needed = source_->dependency();
  if (!needed) co_return std::string();
  const auto dependency = engine_.find(*needed);
  if (!dependency) {
    co_return fetch_failure{failure_class::configuration, local_failure_errcode,
                            to_string(*needed) + " is not configured"};
  }
  // Without a value and a refresh under way, this one fails at once and tries again when the
  // value arrives (engine::value_arrived).
  auto waiting = rejected ? dependency->invalidate(*rejected)
                          : dependency->wait_for_token(wait_mode::under_way);
  const auto outcome = co_await std::move(waiting);
  if (outcome.view) co_return outcome.view->current->value;
  co_return outcome.failure.value_or(
      fetch_failure{failure_class::transient, local_failure_errcode,
                    "no " + std::string(to_string(needed->kind)) + " to call with"});
}

template <class Clock>
asio::awaitable<std::optional<fetch_failure>> basic_refresher<Clock>::spend_budget() {
  if (!is_ticket(id_.kind)) co_return std::nullopt;
  const unsigned limit = engine_.refresh_policy().ticket_calls_per_hour;
  auto wait = calls_.wait(Clock::now(), limit);
  if (wait == std::chrono::milliseconds{0}) {
    // The fleet's count, when there is one; this process's calls are part of it.
    const auto counted = co_await engine_.store().spend_call(id_, limit);
    if (counted.outcome == call_budget_answer::verdict::spent) wait = counted.wait;
  }
  if (wait > std::chrono::milliseconds{0}) {
    co_return fetch_failure{
        .kind = failure_class::rationed,
        .errcode = local_failure_errcode,
        .errmsg = "ticket call budget spent (" + std::to_string(limit) +
                  " per hour, refresh.ticket_calls_per_hour): the next call is allowed in " +
                  std::to_string(std::chrono::ceil<std::chrono::seconds>(wait).count()) + " s",
        .retry_after = wait};
  }
  calls_.record(Clock::now());
  co_return std::nullopt;
}

template <class Clock>
asio::awaitable<fetch_result> basic_refresher<Clock>::fetch(upstream_caller& upstream,
                                                            const upstream_caller::slot& held,
                                                            const std::string& carried) {
  if (auto refused = co_await spend_budget()) co_return std::move(*refused);
  auto call = upstream.call(held, source_->request(carried));
  const auto answer = co_await std::move(call);
  auto result = std::holds_alternative<fetch_failure>(answer)
                    ? fetch_result(std::get<fetch_failure>(answer))
                    : source_->read(std::get<upstream_response>(answer));
  if (const auto* failure = std::get_if<fetch_failure>(&result)) {
    upstream_results_.record_failure(failure->errcode);
  } else {
    upstream_results_.record_ok();
  }
  co_return result;
}

template <class Clock>
asio::awaitable<typename basic_refresher<Clock>::call_end> basic_refresher<Clock>::call_upstream(
    upstream_caller& upstream, const upstream_caller::slot& held, bool holds_permit,
    const std::string& carried, bool may_retry) {
  using namespace refresher_detail;
  const auto started_at = Clock::now();
  lifecycle_.attempt_started(started_at);
  const std::string previous = lifecycle_.held() ? lifecycle_.held()->value : std::string();
  auto operation = fetch(upstream, held, carried);
  const auto result = co_await std::move(operation);
  const auto* failure = std::get_if<fetch_failure>(&result);
  const bool retry = may_retry && failure && source_->dependency() &&
                     source_->rejects_dependency(failure->errcode) && !ended_;
  if (ended_ || retry) {
    if (holds_permit) co_await engine_.store().release_refresh(id_, milliseconds{0});
    if (!retry) {
      lifecycle_.attempt_withdrawn(std::nullopt);
      co_return call_end::done;
    }
    spdlog::info("{} upstream rejected the {} it was called with (errcode {}); reporting it",
                 log_name(id_), to_string(source_->dependency()->kind), failure->errcode);
    co_return call_end::dependency_rejected;
  }
  record(result, started_at);
  const bool fetched = std::holds_alternative<fetched_token>(result);
  if (fetched) ignore_store_ = false;
  if (fetched) co_await save_held();
  if (holds_permit) {
    // A new value speaks for itself: the others adopt it. After a failure, or the same value
    // back, the other replicas wait as long as this one would before asking again.
    const bool new_value = fetched && lifecycle_.held()->value != previous;
    const auto cool_down =
        new_value ? milliseconds{0}
                  : duration_cast<milliseconds>(lifecycle_.next_attempt_at() - Clock::now());
    co_await engine_.store().release_refresh(id_, cool_down);
  }
  co_return call_end::done;
}

// A save that fails (the store unreachable) is not retried here: the store's return sets off
// a comparison of everything with it (store_sync), which writes the held value back.
template <class Clock>
asio::awaitable<void> basic_refresher<Clock>::save_held() {
  // Named, not a temporary inside the co_await: g++ 12 destroys such temporaries twice.
  const stored_token latest{lifecycle_.held()->value, lifecycle_.held()->expires_at};
  const auto outcome = co_await engine_.store().save(id_, latest);
  if (outcome == save_outcome::store_knows_better) {
    spdlog::info(
        "{} the store knows better (a newer value, or an earlier end of this one); "
        "adopting what it holds",
        log_name(id_));
    co_await load_from_store();
  }
}

// Whatever happens, the credential is planned after: a failed look at the store must not leave
// it without a next refresh.
template <class Clock>
asio::awaitable<void> basic_refresher<Clock>::load_from_store() {
  try {
    if (const auto stored = co_await engine_.store().load(id_)) adopt_stored(*stored);
  } catch (const std::exception& error) {
    spdlog::error("{} looking at the store failed unexpectedly: {}", log_name(id_), error.what());
  }
  publish();
}

template <class Clock>
bool basic_refresher<Clock>::adopt_stored(const stored_token& stored) {
  using namespace refresher_detail;
  const auto now = Clock::now();
  if (ignore_store_ || stored.expires_at <= now) return false;
  auto candidate = token_from_expiry(stored.value, stored.expires_at, now, wall_clock::now());
  if (!lifecycle_.adopt(candidate, jitter_unit())) return false;
  last_refresh_ = refresh_outcome{refresh_outcome::result::adopted, now, std::nullopt};
  spdlog::info("{} adopted the store's value, expires_at={} (in {}s)", log_name(id_),
               unix_seconds(candidate.expires_at_wall),
               milliseconds_between(now, candidate.expires_at) / 1000);
  publish();
  return true;
}

template <class Clock>
void basic_refresher<Clock>::record(const fetch_result& result, time_point started_at,
                                    failure_cause cause) {
  using namespace refresher_detail;
  const auto finished_at = Clock::now();
  const auto latency_ms = milliseconds_between(started_at, finished_at);

  if (const auto* fetched = std::get_if<fetched_token>(&result)) {
    last_refresh_ = refresh_outcome{refresh_outcome::result::fetched, finished_at, std::nullopt};
    const std::string previous = lifecycle_.held() ? lifecycle_.held()->value : std::string();
    lifecycle_.attempt_succeeded(*fetched, jitter_unit());
    publish();  // served from now on, while the store is still being told
    const token& held = *lifecycle_.held();
    spdlog::info(
        "{} refresh ok: {} value, expires_at={} (in {}s), latency_ms={}, next_refresh_in_s={}",
        log_name(id_), held.value == previous ? "same (expiry kept)" : "new",
        unix_seconds(held.expires_at_wall),
        milliseconds_between(finished_at, held.expires_at) / 1000, latency_ms,
        milliseconds_between(finished_at, lifecycle_.next_attempt_at()) / 1000);
    return;
  }

  const auto& failure = std::get<fetch_failure>(result);
  last_refresh_ = refresh_outcome{refresh_outcome::result::failed, finished_at, failure};
  lifecycle_.attempt_failed(failure, finished_at, jitter_unit());
  const token* held = lifecycle_.servable(finished_at);
  // A dependency's failure is its own refresher's warning; ten thousand corps waiting for their
  // suite's token repeat it at debug level.
  spdlog::log(
      cause == failure_cause::dependency ? spdlog::level::debug : spdlog::level::warn,
      "{} refresh failed: errcode={} errmsg=\"{}\", latency_ms={}, retry_in_ms={}, {}",
      log_name(id_), failure.errcode, failure.errmsg, latency_ms,
      milliseconds_between(finished_at, lifecycle_.next_attempt_at()),
      held ? "serving the held value for " +
                 std::to_string(milliseconds_between(finished_at, held->serve_until) / 1000) +
                 " more seconds"
           : std::string("no valid value to serve"));
}

template <class Clock>
void basic_refresher<Clock>::publish() {
  auto view = std::make_shared<credential_view>();
  const auto now = Clock::now();
  view->state = lifecycle_.state(now);
  view->last_refresh = last_refresh_;
  // A revoked value is held (to recognise stale reports) but never published.
  if (const token* held = lifecycle_.held(); held && lifecycle_.servable(now) == held) {
    view->current = *held;
    view->answers = prepare_token_answers(id_, *held);
    view->fingerprint = fingerprint_of(held->value);
  }
  const auto before = view_.load();
  const bool arrived = !before->servable(now) && view->current;
  if (id_.kind == credential_kind::access_token) {
    const auto value_of = [](const credential_view& seen) -> std::string_view {
      return seen.current ? std::string_view(seen.current->value) : std::string_view();
    };
    // An ended refresher's token is no longer its app's: it ages out as a replaced one.
    engine_.handed_out().changed(id_.scope, value_of(*before),
                                 ended_ ? std::string_view() : value_of(*view), now);
  }
  view_.store(std::move(view));

  for (auto* waiter : waiters_) waiter->cancel();
  waiters_.clear();
  if (ended_) return;
  engine_.plan(*this);
  if (arrived) engine_.value_arrived(id_);
}

// The operations are named before the co_await: g++ 12 mishandles temporaries in its operand.
template <class Clock>
asio::awaitable<token_outcome> basic_refresher<Clock>::wait_for_token(wait_mode mode) {
  auto operation = asio::co_spawn(engine_.strand(), wait_on_strand(mode), asio::use_awaitable);
  co_return co_await std::move(operation);
}

template <class Clock>
asio::awaitable<token_outcome> basic_refresher<Clock>::invalidate(std::string value) {
  auto operation =
      asio::co_spawn(engine_.strand(), invalidate_on_strand(std::move(value)), asio::use_awaitable);
  co_return co_await std::move(operation);
}

// A report of a value this replica does not hold may name one another replica has fetched
// since (its event still on the way) and the caller has found dead: the store is looked at
// before the held value is handed back. Without a shared store, or while a refresh of this
// replica is under way (another look could race with its answer), the held value is the answer.
template <class Clock>
asio::awaitable<token_outcome> basic_refresher<Clock>::invalidate_on_strand(std::string value) {
  if (!ended_ && lifecycle_.invalidate(value, Clock::now())) {
    publish();  // due at once
  } else if (!ended_ && engine_.store().shared() && !busy()) {
    // Whatever the store holds that is newer is adopted; if that is the value reported, the
    // report is about the current value after all.
    const auto stored = co_await engine_.store().load(id_);
    if (stored && !ended_ && !busy() && adopt_stored(*stored) &&
        lifecycle_.invalidate(value, Clock::now())) {
      publish();
    }
  }
  co_return co_await wait_on_strand();
}

template <class Clock>
asio::awaitable<token_outcome> basic_refresher<Clock>::wait_on_strand(wait_mode mode) {
  using namespace refresher_detail;
  const auto self = this->shared_from_this();  // a reload may drop it meanwhile
  timer waiter(engine_.strand());
  std::optional<time_point> deadline;
  for (;;) {
    const auto now = Clock::now();
    // Every change of the held value is published, so the view has what the lifecycle has.
    if (auto view = view_.load(); view->servable(now)) co_return token_outcome{std::move(view)};
    if (ended_ || engine_.stopping()) co_return unavailable(now);
    // (A pushed value's next look at the store finds nothing an event would not bring.)
    const bool under_way_only = mode == wait_mode::under_way || is_pushed(id_.kind);
    if (under_way_only && !lifecycle_.in_flight()) co_return unavailable(now);

    // Wait only for a refresh that is under way or starts soon enough to finish in time.
    const auto wait_limit = engine_.wait_limit();
    const auto starts_in =
        lifecycle_.in_flight()
            ? milliseconds{0}
            : std::max(milliseconds{0},
                       duration_cast<milliseconds>(lifecycle_.next_attempt_at() - now));
    if (!deadline) {
      if (starts_in > wait_limit) co_return unavailable(now);
      deadline = now + starts_in + wait_limit + wait_slack;
    } else if (now >= *deadline || now + starts_in >= *deadline) {
      co_return unavailable(now);
    }

    waiter.expires_at(*deadline);
    waiters_.push_back(&waiter);
    // Woken by publish() (which unregisters every waiter) or by the deadline; either way
    // this timer must not stay registered once this frame can be destroyed.
    co_await waiter.async_wait(asio::as_tuple(asio::use_awaitable));
    std::erase(waiters_, &waiter);
  }
}

template <class Clock>
token_outcome basic_refresher<Clock>::unavailable(time_point now) const {
  const auto wait =
      std::max(std::chrono::seconds{1},
               std::chrono::ceil<std::chrono::seconds>(lifecycle_.next_attempt_at() - now));
  auto failure = lifecycle_.last_failure();
  if (!failure && is_pushed(id_.kind)) failure = no_push();
  return token_outcome{nullptr, std::move(failure), wait};
}

}  // namespace token_broker
