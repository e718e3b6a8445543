#include "token_broker/app_refresher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "token_broker/logging.hpp"

namespace token_broker {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

// A caller waiting for a refresh gives up this long after the refresh's own deadline, so
// that the refresh's failure, not the caller's timeout, is what the caller reports.
constexpr milliseconds wait_slack{100};

// The refresher re-plans at least this often: a timer sleeps on CLOCK_MONOTONIC, which
// stands still while the host is suspended, but token time (CLOCK_BOOTTIME) does not.
constexpr milliseconds max_sleep{30000};

// While another replica holds the refresh lock, a replica looks this often for that
// replica's token (its event may come first).
constexpr milliseconds follow_poll{200};

std::int64_t milliseconds_between(time_point from, time_point to) {
  return duration_cast<milliseconds>(to - from).count();
}

}  // namespace

app_refresher::app_refresher(asio::any_io_executor executor, app_config app,
                             const refresh_config& refresh, milliseconds wait_limit,
                             shared_upstream& upstream, token_store& store, origin how)
    : strand_(asio::make_strand(executor)),
      app_(std::move(app)),
      wait_limit_(wait_limit),
      upstream_(upstream),
      store_(store),
      lifecycle_(refresh),
      wake_(strand_),
      random_(std::random_device{}()),
      ignore_store_(how == origin::credentials_changed),
      view_(std::make_shared<const app_view>()) {}

void app_refresher::start() {
  asio::co_spawn(strand_, run(), log_unexpected_end("app=" + app_.id + " refresher"));
}

void app_refresher::stop() {
  asio::post(strand_, [self = shared_from_this()] {
    self->stopping_ = true;
    self->wake_.cancel();
    self->publish();
  });
}

void app_refresher::apply(const refresh_config& refresh, milliseconds wait_limit) {
  asio::post(strand_, [self = shared_from_this(), refresh, wait_limit] {
    self->lifecycle_.set_policy(refresh);
    self->wait_limit_ = wait_limit;
  });
}

asio::awaitable<void> app_refresher::run() {
  const auto self = shared_from_this();  // the coroutine keeps its refresher alive

  co_await store_.settle();
  co_await load_from_store();  // a token with time left in the store is adopted, not fetched
  while (!stopping_) {
    if (store_news_) {
      co_await load_from_store();
      continue;
    }
    const auto now = clock::now();
    const auto attempt_at = lifecycle_.next_attempt_at();
    if (attempt_at > now) {
      wake_.expires_after(std::min<clock::duration>(attempt_at - now, max_sleep));
      // Woken early (invalidation, waiter, the store's news, stop) or on time.
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    co_await refresh();
    publish();
  }
}

// One due refresh. With a shared store the replicas first agree on who calls upstream; the
// others adopt the caller's token.
asio::awaitable<void> app_refresher::refresh() {
  lifecycle_.attempt_pending();
  publish();
  while (!stopping_) {
    // New credentials call at once, as an invalidation does, past other replicas' cool-down.
    const bool forced = lifecycle_.revoked() || ignore_store_;
    store_news_ = false;  // the answer brings the stored token
    const auto answer = co_await store_.request_refresh(app_.id, forced);
    const bool granted = answer.permit == refresh_permit::granted;
    if (answer.stored && adopt_stored(*answer.stored)) {  // another replica was faster
      if (granted) co_await store_.release_refresh(app_.id, milliseconds{0});
      lifecycle_.attempt_withdrawn(std::nullopt);
      co_return;
    }
    switch (answer.permit) {
      case refresh_permit::granted:
        co_await call_upstream(true);
        co_return;
      case refresh_permit::unavailable:
        co_await call_upstream(false);
        co_return;
      case refresh_permit::cooling_down: {
        // In a cool-down's last millisecond Redis says 0 ms left while the key still stands:
        // wait that millisecond out rather than ask again at once.
        const auto pause = std::max(answer.wait, milliseconds{1});
        spdlog::info("app={} another replica's gettoken asks for a pause of {} ms; following it",
                     app_.id, pause.count());
        lifecycle_.attempt_withdrawn(clock::now() + pause);
        co_return;
      }
      case refresh_permit::busy:
        // Another replica is calling upstream: its token comes with its event (or the next
        // look); if it dies, its lease runs out and this replica is granted the call.
        wake_.expires_after(std::clamp(answer.wait, milliseconds{1}, follow_poll));
        co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
        break;
    }
  }
  lifecycle_.attempt_withdrawn(std::nullopt);
}

asio::awaitable<void> app_refresher::call_upstream(bool holds_permit) {
  const auto started_at = clock::now();
  lifecycle_.attempt_started(started_at);
  const std::string previous = lifecycle_.held() ? lifecycle_.held()->value : std::string();
  try {
    const auto upstream = upstream_.load();  // a reload may replace it while the call runs
    const auto result = co_await upstream->fetch_token(app_.corpid, app_.secret);
    if (stopping_) co_return;
    record(result, started_at);
    const bool fetched = std::holds_alternative<fetched_token>(result);
    if (fetched) ignore_store_ = false;
    if (fetched) co_await save_held();
    if (holds_permit) {
      // A new token speaks for itself: the others adopt it. After a failure, or the same
      // token back, the other replicas wait as long as this one would before asking again.
      const bool new_token = fetched && lifecycle_.held()->value != previous;
      const auto cool_down =
          new_token ? milliseconds{0}
                    : duration_cast<milliseconds>(lifecycle_.next_attempt_at() - clock::now());
      co_await store_.release_refresh(app_.id, cool_down);
    }
  } catch (const std::exception& error) {
    // A broken invariant in one refresh must not end this app's refreshing for good.
    spdlog::error("app={} refresh failed unexpectedly: {}", app_.id, error.what());
    if (lifecycle_.in_flight()) {
      lifecycle_.attempt_failed(
          fetch_failure{failure_class::transient, local_failure_errcode, "internal error"},
          clock::now(), jitter_unit());
    }
  }
}

// A save that fails (the store unreachable) is not retried here: the store's return sets
// off a comparison of every app with it (store_sync), which writes the held token back.
asio::awaitable<void> app_refresher::save_held() {
  // Named, not a temporary inside the co_await: g++ 12 destroys such temporaries twice.
  const stored_token latest{lifecycle_.held()->value, lifecycle_.held()->expires_at};
  const auto outcome = co_await store_.save(app_.id, latest);
  if (outcome == save_outcome::newer_kept) {
    spdlog::info("app={} the store holds a newer token than the one held here; adopting it",
                 app_.id);
    co_await load_from_store();
  }
}

asio::awaitable<void> app_refresher::load_from_store() {
  store_news_ = false;  // news that comes while this look is under way asks for another
  if (const auto stored = co_await store_.load(app_.id)) adopt_stored(*stored);
}

bool app_refresher::adopt_stored(const stored_token& stored) {
  const auto now = clock::now();
  if (ignore_store_ || stored.expires_at <= now) return false;
  auto candidate = token_from_expiry(stored.value, stored.expires_at, now, wall_clock::now());
  if (!lifecycle_.adopt(candidate, jitter_unit())) return false;
  spdlog::info("app={} adopted the store's token, expires_at={} (in {}s)", app_.id,
               unix_seconds(candidate.expires_at_wall),
               milliseconds_between(now, candidate.expires_at) / 1000);
  publish();
  return true;
}

void app_refresher::store_changed() {
  asio::post(strand_, [self = shared_from_this()] {
    self->store_news_ = true;
    self->wake_.cancel();
  });
}

void app_refresher::record(const fetch_result& result, time_point started_at) {
  const auto finished_at = clock::now();
  const auto latency_ms = milliseconds_between(started_at, finished_at);

  if (const auto* fetched = std::get_if<fetched_token>(&result)) {
    upstream_results_.record_ok();
    const std::string previous = lifecycle_.held() ? lifecycle_.held()->value : std::string();
    lifecycle_.attempt_succeeded(*fetched, jitter_unit());
    publish();  // served from now on, while the store is still being told
    const token& held = *lifecycle_.held();
    spdlog::info(
        "app={} refresh ok: {} token, expires_at={} (in {}s), latency_ms={}, next_refresh_in_s={}",
        app_.id, held.value == previous ? "same (expiry kept)" : "new",
        unix_seconds(held.expires_at_wall),
        milliseconds_between(finished_at, held.expires_at) / 1000, latency_ms,
        milliseconds_between(finished_at, lifecycle_.next_attempt_at()) / 1000);
    return;
  }

  const auto& failure = std::get<fetch_failure>(result);
  upstream_results_.record_failure(failure.errcode);
  lifecycle_.attempt_failed(failure, finished_at, jitter_unit());
  const token* held = lifecycle_.servable(finished_at);
  spdlog::warn(
      "app={} refresh failed: errcode={} errmsg=\"{}\", latency_ms={}, retry_in_ms={}, {}", app_.id,
      failure.errcode, failure.errmsg, latency_ms,
      milliseconds_between(finished_at, lifecycle_.next_attempt_at()),
      held ? "serving the held token for " +
                 std::to_string(milliseconds_between(finished_at, held->serve_until) / 1000) +
                 " more seconds"
           : std::string("no valid token to serve"));
}

void app_refresher::publish() {
  auto view = std::make_shared<app_view>();
  const auto now = clock::now();
  view->state = lifecycle_.state(now);
  // A revoked token is held (to recognise stale reports) but never published.
  if (const token* held = lifecycle_.held(); held && lifecycle_.servable(now) == held) {
    view->current = *held;
    view->answers = prepare_token_answers(app_.id, *held);
  }
  view_.store(std::move(view));

  for (auto* waiter : waiters_) waiter->cancel();
  waiters_.clear();
}

// The operations are named before the co_await: g++ 12 mishandles temporaries in its operand.
asio::awaitable<token_outcome> app_refresher::wait_for_token() {
  auto operation = asio::co_spawn(strand_, wait_on_strand(), asio::use_awaitable);
  co_return co_await std::move(operation);
}

asio::awaitable<token_outcome> app_refresher::invalidate(std::string value) {
  auto operation =
      asio::co_spawn(strand_, invalidate_on_strand(std::move(value)), asio::use_awaitable);
  co_return co_await std::move(operation);
}

asio::awaitable<token_outcome> app_refresher::invalidate_on_strand(std::string value) {
  if (lifecycle_.invalidate(value, clock::now())) {
    wake_.cancel();  // the refresher plans again and finds the refresh due
    publish();
  }
  co_return co_await wait_on_strand();
}

asio::awaitable<token_outcome> app_refresher::wait_on_strand() {
  asio::steady_timer waiter(strand_);
  std::optional<steady_clock::time_point> deadline;
  for (;;) {
    const auto now = clock::now();
    // Every change of the held token is published, so the view has what the lifecycle has.
    if (auto view = view_.load(); view->servable(now)) co_return token_outcome{std::move(view)};
    if (stopping_) co_return unavailable(now);
    // An attempt that is due but not started means the refresher sleeps too long (a host that
    // was suspended): wake it.
    if (!lifecycle_.in_flight() && lifecycle_.next_attempt_at() <= now) wake_.cancel();

    // Wait only for a refresh that is under way or starts soon enough to finish in time.
    const auto starts_in =
        lifecycle_.in_flight()
            ? milliseconds{0}
            : std::max(milliseconds{0},
                       duration_cast<milliseconds>(lifecycle_.next_attempt_at() - now));
    const auto steady_now = steady_clock::now();
    if (!deadline) {
      if (starts_in > wait_limit_) co_return unavailable(now);
      deadline = steady_now + starts_in + wait_limit_ + wait_slack;
    } else if (steady_now >= *deadline || steady_now + starts_in >= *deadline) {
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

token_outcome app_refresher::unavailable(time_point now) const {
  const auto wait =
      std::max(seconds{1}, std::chrono::ceil<seconds>(lifecycle_.next_attempt_at() - now));
  return token_outcome{nullptr, lifecycle_.last_failure(), wait};
}

}  // namespace token_broker
