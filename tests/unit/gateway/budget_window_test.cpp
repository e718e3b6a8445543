// The budget's window rule as pure arithmetic on simulated time: which calls pass, how long a
// refused one must wait, and that no period ever holds more than the cap.
#include "token_broker/gateway/budget_window.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <random>
#include <vector>

namespace token_broker {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

constexpr std::int64_t minute_bucket_ms = 10'000;

std::vector<std::uint32_t> covering_of(const budget_window& window, std::int64_t now_ms) {
  std::vector<std::uint32_t> counts(window.shape().covering());
  window.covering(now_ms, counts);
  return counts;
}

TEST(budget_window_test, buckets_are_aligned_on_their_width) {
  EXPECT_EQ(bucket_of(0, minute_window), 0);
  EXPECT_EQ(bucket_of(9'999, minute_window), 0);
  EXPECT_EQ(bucket_of(10'000, minute_window), 1);
  EXPECT_EQ(bucket_of(-1, minute_window), -1);
  EXPECT_EQ(bucket_of(3'600'000, hour_window), 12);
  EXPECT_EQ(minute_window.period(), 60s);
  EXPECT_EQ(hour_window.period(), 1h);
  EXPECT_EQ(hour_window.covering(), max_covering_buckets);
}

TEST(budget_window_test, a_call_fits_while_the_covering_counts_stay_below_the_cap) {
  const std::vector<std::uint32_t> two{1, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(budget_window_wait(two, 3, 100 * minute_bucket_ms, minute_window), 0ms);
  // No cap: nothing ever waits.
  EXPECT_EQ(budget_window_wait(two, 0, 100 * minute_bucket_ms, minute_window), 0ms);
}

TEST(budget_window_test, a_full_window_waits_until_the_oldest_counted_bucket_leaves) {
  // Now is 3 s into bucket 100: the covering buckets are 94..100, and bucket 94 stops
  // covering when bucket 100 ends (the period then starts at 101 * 10 s - 60 s = bucket 95).
  const std::int64_t now_ms = 100 * minute_bucket_ms + 3'000;
  const std::vector<std::uint32_t> oldest_full{2, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(budget_window_wait(oldest_full, 3, now_ms, minute_window), 7s);

  // Freeing bucket 94's one call is not enough for a cap of 2: bucket 96's two must go too,
  // at the end of bucket 102.
  const std::vector<std::uint32_t> spread{1, 0, 2, 0, 0, 0, 0};
  EXPECT_EQ(budget_window_wait(spread, 2, now_ms, minute_window), 27s);

  // Everything in the current bucket: the wait lasts until it has left, 60 s after its end.
  const std::vector<std::uint32_t> current_only{0, 0, 0, 0, 0, 0, 3};
  EXPECT_EQ(budget_window_wait(current_only, 3, now_ms, minute_window), 67s);
}

TEST(budget_window_test, counts_move_through_the_ring_and_leave_it) {
  budget_window window(minute_window);
  const std::int64_t start = 1'000 * minute_bucket_ms;
  window.count(start);
  window.count(start + 1);
  window.count(start + 25'000);  // bucket + 2
  EXPECT_EQ(covering_of(window, start + 25'000), (std::vector<std::uint32_t>{0, 0, 0, 0, 2, 0, 1}));
  // 60 s later the first bucket is the oldest covering one; 10 s more and it is gone.
  EXPECT_EQ(covering_of(window, start + 60'000), (std::vector<std::uint32_t>{2, 0, 1, 0, 0, 0, 0}));
  EXPECT_EQ(covering_of(window, start + 70'000), (std::vector<std::uint32_t>{0, 1, 0, 0, 0, 0, 0}));
  EXPECT_FALSE(window.empty(start + 89'999));
  EXPECT_TRUE(window.empty(start + 90'000));
  // A jump past the whole ring forgets everything.
  window.count(start + 10 * 60'000);
  EXPECT_EQ(covering_of(window, start + 10 * 60'000),
            (std::vector<std::uint32_t>{0, 0, 0, 0, 0, 0, 1}));
}

// Calls arrive at random over simulated hours; the window grants what its rule allows. Then:
// (1) no interval of the period holds more than the cap, (2) a refused call's wait is exact:
// one millisecond earlier it is still refused, at its end it fits (nothing granted between),
// (3) the window does not refuse far more than it must: every refusal comes with at least cap
// calls in the last period plus one bucket.
void check_against_arrivals(const budget_window_shape& shape, std::uint32_t cap,
                            std::int64_t mean_gap_ms, std::int64_t duration_ms, unsigned seed) {
  std::mt19937_64 random(seed);
  std::exponential_distribution<double> gap(1.0 / static_cast<double>(mean_gap_ms));
  budget_window window(shape);
  std::vector<std::int64_t> granted;
  std::deque<std::int64_t> recent;  // granted within the last period + one bucket
  const auto period_ms = shape.period().count();
  const auto reach_ms = period_ms + shape.bucket_width.count();
  std::vector<std::uint32_t> counts(shape.covering());
  unsigned refusals = 0;
  for (std::int64_t now = 5 * period_ms; now < 5 * period_ms + duration_ms;
       now += static_cast<std::int64_t>(gap(random))) {
    window.covering(now, counts);
    const auto wait = budget_window_wait(counts, cap, now, shape);
    while (!recent.empty() && recent.front() <= now - reach_ms) recent.pop_front();
    if (wait == 0ms) {
      window.count(now);
      granted.push_back(now);
      recent.push_back(now);
      continue;
    }
    ++refusals;
    ASSERT_GE(recent.size(), cap) << "refused at " << now << " with fewer than cap calls in reach";
    window.covering(now + wait.count() - 1, counts);
    ASSERT_GT(budget_window_wait(counts, cap, now + wait.count() - 1, shape), 0ms) << now;
    window.covering(now + wait.count(), counts);
    ASSERT_EQ(budget_window_wait(counts, cap, now + wait.count(), shape), 0ms) << now;
  }
  EXPECT_GT(refusals, 0u) << "the arrivals never reached the cap: the test checks nothing";
  // Any interval [t - period, t] holding the most calls starts at a granted call.
  std::size_t last = 0;
  for (std::size_t first = 0; first < granted.size(); ++first) {
    while (last < granted.size() && granted[last] <= granted[first] + period_ms) ++last;
    ASSERT_LE(last - first, cap) << "more than the cap within one period from " << granted[first];
  }
}

TEST(budget_window_test, no_minute_ever_holds_more_than_the_cap) {
  for (unsigned seed = 1; seed <= 5; ++seed) {
    check_against_arrivals(minute_window, 20, 1'500, 2 * 3'600'000, seed);
  }
}

TEST(budget_window_test, no_hour_ever_holds_more_than_the_cap) {
  for (unsigned seed = 1; seed <= 3; ++seed) {
    check_against_arrivals(hour_window, 50, 40'000, 20 * 3'600'000, seed);
  }
}

TEST(budget_window_test, a_verdict_names_the_cap_that_refuses_longest) {
  budget_verdict verdict;
  verdict.consider("per_minute", 0ms);
  EXPECT_TRUE(verdict.admitted());
  verdict.consider("per_minute", 1'200ms);
  verdict.consider("per_hour", 600'000ms);
  verdict.consider("concurrency", concurrency_retry);
  EXPECT_FALSE(verdict.admitted());
  EXPECT_EQ(verdict.cap(), "per_hour");
  EXPECT_EQ(verdict.retry_after(), 600s);

  budget_verdict short_wait;
  short_wait.consider("per_minute", 1ms);
  EXPECT_EQ(short_wait.retry_after(), 1s) << "Retry-After is at least a second";
  budget_verdict rounded;
  rounded.consider("per_minute", 1'001ms);
  EXPECT_EQ(rounded.retry_after(), 2s) << "rounded up: sooner would be refused again";
}

}  // namespace
}  // namespace token_broker
