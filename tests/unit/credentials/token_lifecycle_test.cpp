// The token lifecycle's decisions, with time and randomness injected: every rule of the
// issue (refresh timing, the three upstream behaviours, revocation, errcode classes,
// backoff bounds, the min_interval floor) without sleeping.
#include "token_broker/credentials/token_lifecycle.hpp"

#include <gtest/gtest.h>

namespace token_broker {
namespace {

using namespace std::chrono_literals;

constexpr double no_jitter = 0.0;
constexpr double full_jitter = 0.999999;

refresh_config policy() {
  return refresh_config{
      .ahead = 300s, .jitter = 30s, .retry_min = 500ms, .retry_max = 60s, .min_interval = 5s};
}

// The same, without the min_interval floor, for rules the floor would mask.
refresh_config unfloored() {
  auto config = policy();
  config.min_interval = 0s;
  return config;
}

// An upstream answer: `value` valid for `expires_in`, asked at `sent`, answered `latency` later.
fetched_token answer(std::string value, std::chrono::seconds expires_in, time_point sent,
                     std::chrono::milliseconds latency = 100ms) {
  return fetched_token{std::move(value), expires_in, sent, sent + latency};
}

fetch_failure wecom_error(int errcode) {
  return fetch_failure{classify_errcode(errcode), errcode, "errmsg"};
}

class token_lifecycle_test : public ::testing::Test {
 protected:
  // Runs one successful attempt started at `at`.
  void succeed(time_point at, fetched_token fetched, double jitter = no_jitter) {
    lifecycle_.attempt_started(at);
    lifecycle_.attempt_succeeded(fetched, jitter);
  }
  void fail(time_point at, fetch_failure failure, double jitter = no_jitter) {
    lifecycle_.attempt_started(at);
    lifecycle_.attempt_failed(std::move(failure), at + 100ms, jitter);
  }

  const time_point t0_ = time_point{} + std::chrono::hours{24 * 365 * 56};
  token_lifecycle lifecycle_{policy()};
};

TEST_F(token_lifecycle_test, cold_start_asks_at_once_and_serves_nothing) {
  EXPECT_LE(lifecycle_.next_attempt_at(), t0_);
  EXPECT_EQ(lifecycle_.servable(t0_), nullptr);
  EXPECT_EQ(lifecycle_.state(t0_), app_state::unknown);
}

TEST_F(token_lifecycle_test, expiry_counts_from_the_moment_the_request_was_sent) {
  succeed(t0_, answer("A", 7200s, t0_, /*latency=*/3s));
  ASSERT_NE(lifecycle_.held(), nullptr);
  EXPECT_EQ(lifecycle_.held()->expires_at, t0_ + 7200s);
  EXPECT_EQ(lifecycle_.held()->replaceable_at, t0_ + 3s + 7200s);
}

TEST_F(token_lifecycle_test, refreshes_ahead_of_expiry_less_jitter) {
  succeed(t0_, answer("A", 7200s, t0_));
  EXPECT_EQ(lifecycle_.next_attempt_at(), t0_ + 7200s - 300s);

  token_lifecycle jittered(policy());
  jittered.attempt_started(t0_);
  jittered.attempt_succeeded(answer("A", 7200s, t0_), full_jitter);
  const auto at = jittered.next_attempt_at();
  EXPECT_LT(at, t0_ + 7200s - 300s - 29s);
  EXPECT_GE(at, t0_ + 7200s - 300s - 30s);
}

TEST_F(token_lifecycle_test, ahead_is_capped_at_half_the_lifetime_and_jitter_at_a_quarter) {
  token_lifecycle lifecycle(unfloored());
  lifecycle.attempt_started(t0_);
  lifecycle.attempt_succeeded(answer("A", 6s, t0_), full_jitter);
  // ahead 300 s → 3 s, jitter 30 s → at most 1.5 s: refresh between 1.5 s and 3 s in.
  EXPECT_GE(lifecycle.next_attempt_at(), t0_ + 1500ms);
  EXPECT_LE(lifecycle.next_attempt_at(), t0_ + 3s);
}

TEST_F(token_lifecycle_test, serves_until_just_before_expiry_and_never_after) {
  succeed(t0_, answer("A", 7200s, t0_));
  EXPECT_NE(lifecycle_.servable(t0_ + 7198s), nullptr);
  EXPECT_EQ(lifecycle_.servable(t0_ + 7199s), nullptr) << "1 s safety margin";
  EXPECT_EQ(lifecycle_.servable(t0_ + 7200s), nullptr);

  token_lifecycle short_lived(policy());
  short_lived.attempt_started(t0_);
  short_lived.attempt_succeeded(answer("B", 6s, t0_), no_jitter);
  EXPECT_NE(short_lived.servable(t0_ + 5300ms), nullptr);
  EXPECT_EQ(short_lived.servable(t0_ + 5400ms), nullptr) << "margin is a tenth of a short lifetime";
}

TEST_F(token_lifecycle_test, behaviour_a_same_token_with_full_expires_in_keeps_its_expiry) {
  succeed(t0_, answer("A", 7200s, t0_));
  const auto refresh_at = lifecycle_.next_attempt_at();
  succeed(refresh_at, answer("A", 7200s, refresh_at));  // upstream: same token, "7200 s"
  EXPECT_EQ(lifecycle_.held()->expires_at, t0_ + 7200s) << "expiry must not move forward";
  EXPECT_EQ(lifecycle_.servable(t0_ + 7199s), nullptr);
  // No re-asking until upstream will surely issue a new token.
  EXPECT_EQ(lifecycle_.next_attempt_at(), t0_ + 100ms + 7200s);
}

TEST_F(token_lifecycle_test, behaviour_b_same_token_with_seconds_left) {
  succeed(t0_, answer("A", 7200s, t0_));
  const auto refresh_at = lifecycle_.next_attempt_at();
  succeed(refresh_at, answer("A", 300s, refresh_at));
  EXPECT_EQ(lifecycle_.held()->expires_at, t0_ + 7200s);
  EXPECT_EQ(lifecycle_.next_attempt_at(), t0_ + 100ms + 7200s);
}

TEST_F(token_lifecycle_test, behaviour_b_tighter_answer_wins) {
  succeed(t0_, answer("A", 7200s, t0_));
  const auto refresh_at = t0_ + 7000s;
  succeed(refresh_at, answer("A", 150s, refresh_at));  // upstream says less than we thought
  EXPECT_EQ(lifecycle_.held()->expires_at, t0_ + 7150s);
}

TEST_F(token_lifecycle_test, behaviour_b_whole_second_rounding_does_not_shorten_the_expiry) {
  succeed(t0_, answer("A", 6s, t0_));
  const auto refresh_at = t0_ + 3s;
  succeed(refresh_at, answer("A", 2s, refresh_at, 1ms));  // 2.9 s left, floored to 2
  EXPECT_EQ(lifecycle_.held()->expires_at, t0_ + 6s);
  EXPECT_EQ(lifecycle_.held()->replaceable_at, t0_ + 6s + 1ms);
}

TEST_F(token_lifecycle_test, behaviour_c_new_token_replaces_and_reschedules) {
  succeed(t0_, answer("A", 7200s, t0_));
  const auto refresh_at = lifecycle_.next_attempt_at();
  succeed(refresh_at, answer("B", 7200s, refresh_at));
  EXPECT_EQ(lifecycle_.servable(refresh_at + 1s)->value, "B");
  EXPECT_EQ(lifecycle_.next_attempt_at(), refresh_at + 7200s - 300s);
}

TEST_F(token_lifecycle_test, after_same_token_the_next_call_brings_the_new_one) {
  lifecycle_ = token_lifecycle(unfloored());
  succeed(t0_, answer("A", 6s, t0_));
  const auto early = lifecycle_.next_attempt_at();
  EXPECT_EQ(early, t0_ + 3s);
  succeed(early, answer("A", 6s, early));
  const auto replace_at = lifecycle_.next_attempt_at();
  EXPECT_EQ(replace_at, t0_ + 100ms + 6s);
  succeed(replace_at, answer("B", 6s, replace_at));
  EXPECT_EQ(lifecycle_.servable(replace_at + 200ms)->value, "B");
}

TEST_F(token_lifecycle_test, same_token_after_its_expiry_is_retried_shortly_not_in_a_loop) {
  succeed(t0_, answer("A", 6s, t0_));
  const auto late = t0_ + 7s;  // upstream's clock runs behind: still hands out A
  succeed(late, answer("A", 6s, late));
  EXPECT_EQ(lifecycle_.servable(late + 200ms), nullptr);
  EXPECT_EQ(lifecycle_.next_attempt_at(), late + 5s) << "min_interval floor";
}

TEST_F(token_lifecycle_test, invalidating_the_current_token_stops_serving_and_refreshes) {
  succeed(t0_, answer("A", 7200s, t0_));
  const auto report = t0_ + 60s;
  EXPECT_TRUE(lifecycle_.invalidate("A", report));
  EXPECT_EQ(lifecycle_.servable(report), nullptr);
  EXPECT_EQ(lifecycle_.next_attempt_at(), report);
  // More reports of the same token: still current, nothing rescheduled.
  EXPECT_TRUE(lifecycle_.invalidate("A", report + 1s));
  EXPECT_EQ(lifecycle_.next_attempt_at(), report);

  succeed(report, answer("B", 7200s, report));
  EXPECT_FALSE(lifecycle_.invalidate("A", report + 2s)) << "stale report changes nothing";
  EXPECT_EQ(lifecycle_.servable(report + 2s)->value, "B");
}

TEST_F(token_lifecycle_test, invalidation_respects_the_min_interval_floor) {
  succeed(t0_, answer("A", 7200s, t0_));
  EXPECT_TRUE(lifecycle_.invalidate("A", t0_ + 1s));
  EXPECT_EQ(lifecycle_.next_attempt_at(), t0_ + 5s);
}

TEST_F(token_lifecycle_test, unknown_token_report_changes_nothing) {
  EXPECT_FALSE(lifecycle_.invalidate("never-issued", t0_));
  succeed(t0_, answer("A", 7200s, t0_));
  EXPECT_FALSE(lifecycle_.invalidate("other", t0_ + 1s));
  EXPECT_NE(lifecycle_.servable(t0_ + 1s), nullptr);
}

TEST_F(token_lifecycle_test, upstream_vouching_for_a_reported_token_restores_it) {
  succeed(t0_, answer("A", 7200s, t0_));
  EXPECT_TRUE(lifecycle_.invalidate("A", t0_ + 10s));
  succeed(t0_ + 10s, answer("A", 7200s, t0_ + 10s));
  EXPECT_NE(lifecycle_.servable(t0_ + 11s), nullptr);
}

TEST_F(token_lifecycle_test, report_during_a_call_is_not_answered_by_that_call) {
  succeed(t0_, answer("A", 7200s, t0_));
  const auto refresh_at = t0_ + 100s;
  lifecycle_.attempt_started(refresh_at);
  EXPECT_TRUE(lifecycle_.invalidate("A", refresh_at + 50ms));
  lifecycle_.attempt_succeeded(answer("A", 7200s, refresh_at), no_jitter);
  EXPECT_EQ(lifecycle_.servable(refresh_at + 200ms), nullptr);
  EXPECT_EQ(lifecycle_.next_attempt_at(), refresh_at + 5s);
}

TEST_F(token_lifecycle_test, transient_failures_back_off_exponentially_within_bounds) {
  std::vector<std::chrono::milliseconds> delays;
  auto at = t0_;
  for (int i = 0; i < 12; ++i) {
    fail(at, wecom_error(-1), no_jitter);
    const auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(
        lifecycle_.next_attempt_at() - (at + 100ms));
    delays.push_back(delay);
    at = lifecycle_.next_attempt_at();
  }
  // min_interval (5 s) floors the early steps; the ladder itself doubles from 500 ms.
  EXPECT_EQ(delays[0], 4900ms);
  for (std::size_t i = 1; i < delays.size(); ++i) EXPECT_GE(delays[i], delays[i - 1]);
  EXPECT_EQ(delays.back(), 30s) << "equal jitter at 0 gives half the 60 s cap";
}

TEST_F(token_lifecycle_test, backoff_stays_between_retry_min_and_retry_max) {
  for (const double jitter : {0.0, 0.5, full_jitter}) {
    token_lifecycle lifecycle(unfloored());
    auto at = t0_;
    for (int i = 0; i < 20; ++i) {
      lifecycle.attempt_started(at);
      lifecycle.attempt_failed(wecom_error(45033), at, jitter);
      const auto delay = lifecycle.next_attempt_at() - at;
      EXPECT_GE(delay, 500ms);
      EXPECT_LE(delay, 60s);
      at = lifecycle.next_attempt_at();
    }
  }
}

TEST_F(token_lifecycle_test, throttling_backs_off_harder_than_a_transient_failure) {
  token_lifecycle transient(
      refresh_config{.retry_min = 500ms, .retry_max = 60s, .min_interval = 0s});
  token_lifecycle throttled = transient;
  transient.attempt_started(t0_);
  transient.attempt_failed(wecom_error(-1), t0_, no_jitter);
  throttled.attempt_started(t0_);
  throttled.attempt_failed(wecom_error(45009), t0_, no_jitter);
  EXPECT_EQ(transient.next_attempt_at(), t0_ + 500ms);
  EXPECT_EQ(throttled.next_attempt_at(), t0_ + 2s);  // 8 × 500 ms, equal jitter at 0
}

TEST_F(token_lifecycle_test, configuration_errors_retry_only_at_retry_max) {
  for (const int errcode : {40001, 40013, 40091, 41002, 41004, 48002, 60020}) {
    token_lifecycle lifecycle(policy());
    lifecycle.attempt_started(t0_);
    lifecycle.attempt_failed(wecom_error(errcode), t0_, no_jitter);
    EXPECT_EQ(lifecycle.next_attempt_at(), t0_ + 60s) << errcode;
    EXPECT_EQ(lifecycle.last_failure()->errcode, errcode);
  }
}

TEST_F(token_lifecycle_test, errcode_classes) {
  EXPECT_EQ(classify_errcode(-1), failure_class::transient);
  EXPECT_EQ(classify_errcode(45033), failure_class::transient);
  EXPECT_EQ(classify_errcode(45009), failure_class::throttled);
  for (const int errcode : {40001, 40013, 40091, 41002, 41004, 48002, 60020}) {
    EXPECT_EQ(classify_errcode(errcode), failure_class::configuration) << errcode;
  }
}

TEST_F(token_lifecycle_test, static_stability_serves_the_held_token_while_upstream_fails) {
  succeed(t0_, answer("A", 7200s, t0_));
  fail(t0_ + 6900s, wecom_error(-1));
  EXPECT_EQ(lifecycle_.state(t0_ + 6901s), app_state::failing);
  EXPECT_NE(lifecycle_.servable(t0_ + 7000s), nullptr);
  EXPECT_EQ(lifecycle_.servable(t0_ + 7200s), nullptr) << "but never past expiry";
  EXPECT_EQ(lifecycle_.last_failure()->errcode, -1);
}

TEST_F(token_lifecycle_test, success_clears_the_failure_and_the_backoff) {
  fail(t0_, wecom_error(-1));
  fail(t0_ + 10s, wecom_error(-1));
  succeed(t0_ + 30s, answer("A", 7200s, t0_ + 30s));
  EXPECT_FALSE(lifecycle_.last_failure());
  EXPECT_EQ(lifecycle_.state(t0_ + 31s), app_state::fresh);
  fail(t0_ + 7000s, wecom_error(-1));
  EXPECT_EQ(lifecycle_.next_attempt_at(), t0_ + 7000s + 5s) << "back to the first step (floored)";
}

TEST_F(token_lifecycle_test, in_flight_state) {
  lifecycle_.attempt_started(t0_);
  EXPECT_TRUE(lifecycle_.in_flight());
  EXPECT_EQ(lifecycle_.state(t0_), app_state::refreshing);
}

TEST_F(token_lifecycle_test, min_interval_floors_every_call) {
  token_lifecycle floored(refresh_config{.ahead = 300s, .jitter = 0s, .min_interval = 10s});
  floored.attempt_started(t0_);
  floored.attempt_succeeded(answer("A", 6s, t0_), no_jitter);
  EXPECT_EQ(floored.next_attempt_at(), t0_ + 10s);
}

TEST_F(token_lifecycle_test, adopts_only_a_token_that_outlives_the_held_one) {
  const auto wall_t0 = wall_time_point{} + std::chrono::hours{24 * 365 * 56};
  const auto stored = token_from_expiry("S", t0_ + 3600s, t0_, wall_t0);
  EXPECT_EQ(stored.expires_at, t0_ + 3600s);
  EXPECT_EQ(stored.expires_at_wall, wall_t0 + 3600s);
  EXPECT_TRUE(lifecycle_.adopt(stored, no_jitter));
  EXPECT_EQ(lifecycle_.servable(t0_)->value, "S");
  EXPECT_EQ(lifecycle_.next_attempt_at(), t0_ + 3600s - 300s);
  EXPECT_FALSE(lifecycle_.adopt(token_from_expiry("older", t0_ + 100s, t0_, wall_t0), no_jitter));
  EXPECT_EQ(lifecycle_.servable(t0_)->value, "S");
}

TEST_F(token_lifecycle_test, adopting_the_held_token_only_ever_shortens_its_expiry) {
  const auto wall_t0 = wall_time_point{} + std::chrono::hours{24 * 365 * 56};
  ASSERT_TRUE(lifecycle_.adopt(token_from_expiry("S", t0_ + 3600s, t0_, wall_t0), no_jitter));
  EXPECT_FALSE(lifecycle_.adopt(token_from_expiry("S", t0_ + 7200s, t0_, wall_t0), no_jitter));
  EXPECT_EQ(lifecycle_.held()->expires_at, t0_ + 3600s);
  // Another replica learned from upstream that it ends sooner (behaviour b).
  EXPECT_TRUE(lifecycle_.adopt(token_from_expiry("S", t0_ + 600s, t0_, wall_t0), no_jitter));
  EXPECT_EQ(lifecycle_.held()->expires_at, t0_ + 600s);
  EXPECT_EQ(lifecycle_.held()->expires_at_wall, wall_t0 + 600s);
  EXPECT_LE(lifecycle_.held()->serve_until, t0_ + 600s - 1s);
  // Asked again no later than when upstream can issue its successor.
  EXPECT_LE(lifecycle_.next_attempt_at(), lifecycle_.held()->replaceable_at);
  EXPECT_LE(lifecycle_.held()->replaceable_at, t0_ + 601s);
}

TEST_F(token_lifecycle_test, a_revoked_token_is_not_adopted_back_but_its_replacement_is) {
  const auto wall_t0 = wall_time_point{} + std::chrono::hours{24 * 365 * 56};
  succeed(t0_, answer("T", 7200s, t0_));
  ASSERT_TRUE(lifecycle_.invalidate("T", t0_ + 60s));
  EXPECT_TRUE(lifecycle_.revoked());
  EXPECT_FALSE(
      lifecycle_.adopt(token_from_expiry("T", t0_ + 7200s, t0_ + 60s, wall_t0), no_jitter));
  EXPECT_TRUE(
      lifecycle_.adopt(token_from_expiry("T2", t0_ + 7100s, t0_ + 60s, wall_t0), no_jitter));
  EXPECT_FALSE(lifecycle_.revoked());
  EXPECT_EQ(lifecycle_.servable(t0_ + 60s)->value, "T2");
}

TEST_F(token_lifecycle_test, a_pending_attempt_makes_callers_wait_without_counting_as_a_call) {
  succeed(t0_, answer("A", 7200s, t0_));
  const auto due = lifecycle_.next_attempt_at();
  lifecycle_.attempt_pending();
  EXPECT_TRUE(lifecycle_.in_flight());
  EXPECT_EQ(lifecycle_.state(due), app_state::refreshing);
  // Another replica cools down for 30 s: no call before then, and no floor from this attempt.
  lifecycle_.attempt_withdrawn(due + 30s);
  EXPECT_FALSE(lifecycle_.in_flight());
  EXPECT_EQ(lifecycle_.next_attempt_at(), due + 30s);
  lifecycle_.attempt_pending();
  lifecycle_.attempt_withdrawn(std::nullopt);
  EXPECT_EQ(lifecycle_.next_attempt_at(), due + 30s);
}

}  // namespace
// A budgeted credential (a JS-SDK ticket) whose budget is spent: no call was made, so the held
// value, even one reported dead, is served until its expiry, and the next attempt waits for
// the budget.
TEST_F(token_lifecycle_test, a_spent_call_budget_serves_the_held_value_and_waits_for_the_budget) {
  succeed(t0_, answer("A", 7200s, t0_));
  const auto report = t0_ + 60s;
  ASSERT_TRUE(lifecycle_.invalidate("A", report));
  ASSERT_EQ(lifecycle_.servable(report), nullptr);
  lifecycle_.attempt_started(report + 5s);
  lifecycle_.attempt_failed(
      fetch_failure{.kind = failure_class::rationed, .errmsg = "spent", .retry_after = 1200s},
      report + 5s, no_jitter);
  ASSERT_NE(lifecycle_.servable(report + 5s), nullptr) << "served again: it cannot be replaced";
  EXPECT_EQ(lifecycle_.servable(report + 5s)->value, "A");
  EXPECT_EQ(lifecycle_.next_attempt_at(), report + 5s + 1200s);
  EXPECT_EQ(lifecycle_.state(report + 5s), app_state::failing);
  EXPECT_EQ(lifecycle_.servable(t0_ + 7200s), nullptr) << "never past its expiry";
}

}  // namespace token_broker
