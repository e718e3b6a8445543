// The per-process budget on a simulated clock: its caps, its refusals' Retry-After, places of
// the concurrency cap given back by the grants, windows that slide, and many workers at once.
#include "token_broker/gateway/api_budget.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>
#include <vector>

namespace token_broker {
namespace {

using namespace std::chrono_literals;

// A time on the bucket boundaries of both windows, as the tests' start.
const time_point start{std::chrono::hours{1000}};

class api_budget_test : public ::testing::Test {
 protected:
  std::unique_ptr<api_budget> make(api_budget_limits limits) {
    return make_local_budget(limits, [this] { return now_.load(); });
  }

  static budget_decision acquire(api_budget& budget, std::string corpid = "wwcorp",
                                 std::string api = "cgi-bin/message/send") {
    asio::io_context io;
    auto decided =
        asio::co_spawn(io, budget.try_acquire(std::move(corpid), std::move(api)), asio::use_future);
    io.run();
    return decided.get();
  }

  // How many calls pass in a row from now on, up to `at_most`; the grants are dropped.
  static int passing(api_budget& budget, int at_most = 1000) {
    for (int passed = 0; passed < at_most; ++passed) {
      if (!std::holds_alternative<budget_grant>(acquire(budget))) return passed;
    }
    return at_most;
  }

  static budget_refusal refusal(api_budget& budget) {
    auto decision = acquire(budget);
    if (auto* refused = std::get_if<budget_refusal>(&decision)) return *refused;
    ADD_FAILURE() << "the call was granted";
    return {};
  }

  void advance(std::chrono::milliseconds by) { now_ = now_.load() + by; }

  std::atomic<time_point> now_{start};
};

TEST_F(api_budget_test, a_minute_cap_refuses_until_the_calls_have_left_the_window) {
  auto budget = make({.per_minute = 3, .per_hour = 0, .concurrency = 0});
  advance(2s);
  EXPECT_EQ(passing(*budget), 3);
  const auto refused = refusal(*budget);
  EXPECT_EQ(refused.cap, "per_minute");
  // All three sit in the bucket [0 s, 10 s): it covers the last minute until 70 s.
  EXPECT_EQ(refused.retry_after, 68s);

  advance(68s - 1ms);
  EXPECT_EQ(passing(*budget), 0) << "refused until the very end of the wait";
  advance(1ms);
  // The refused calls counted nothing: a full cap passes again.
  EXPECT_EQ(passing(*budget), 3);
}

TEST_F(api_budget_test, the_window_slides_bucket_by_bucket) {
  auto budget = make({.per_minute = 3, .per_hour = 0, .concurrency = 0});
  EXPECT_EQ(passing(*budget, 2), 2);  // at 0 s
  advance(30s);
  EXPECT_EQ(passing(*budget), 1);  // at 30 s: the cap is reached
  // The two calls of 0 s cover until 70 s; the one of 30 s until 100 s.
  EXPECT_EQ(refusal(*budget).retry_after, 40s);
  advance(40s);
  EXPECT_EQ(passing(*budget), 2);
  EXPECT_EQ(refusal(*budget).retry_after, 30s);
}

TEST_F(api_budget_test, an_hour_cap_counts_across_minutes) {
  auto budget = make({.per_minute = 10, .per_hour = 25, .concurrency = 0});
  for (int minute = 0; minute < 2; ++minute) {
    EXPECT_EQ(passing(*budget), 10);
    EXPECT_EQ(refusal(*budget).cap, "per_minute");
    advance(2min);
  }
  EXPECT_EQ(passing(*budget), 5);  // at 4 min: 25 in the hour
  const auto refused = refusal(*budget);
  EXPECT_EQ(refused.cap, "per_hour");
  // The first ten calls, in the 5-minute bucket [0, 5 min), cover until 65 min.
  EXPECT_EQ(refused.retry_after, 61min);
  advance(61min);
  EXPECT_EQ(passing(*budget), 10);
}

TEST_F(api_budget_test, corps_and_apis_have_budgets_of_their_own) {
  auto budget = make({.per_minute = 1, .per_hour = 0, .concurrency = 0});
  EXPECT_TRUE(std::holds_alternative<budget_grant>(acquire(*budget, "wwA", "cgi-bin/user/get")));
  EXPECT_TRUE(std::holds_alternative<budget_grant>(acquire(*budget, "wwB", "cgi-bin/user/get")));
  EXPECT_TRUE(std::holds_alternative<budget_grant>(acquire(*budget, "wwA", "cgi-bin/user/list")));
  EXPECT_TRUE(std::holds_alternative<budget_refusal>(acquire(*budget, "wwA", "cgi-bin/user/get")));
}

TEST_F(api_budget_test, no_cap_grants_everything_and_holds_nothing) {
  auto budget = make({.per_minute = 0, .per_hour = 0, .concurrency = 0});
  EXPECT_EQ(passing(*budget, 20'000), 20'000);
  auto decision = acquire(*budget);
  EXPECT_FALSE(std::get<budget_grant>(decision).holds_place());
}

TEST_F(api_budget_test, a_grant_holds_its_place_until_it_is_destroyed_and_gives_it_back_once) {
  auto budget = make({.per_minute = 0, .per_hour = 0, .concurrency = 2});
  auto first = std::get<budget_grant>(acquire(*budget));
  auto second = std::get<budget_grant>(acquire(*budget));
  EXPECT_TRUE(first.holds_place());
  const auto refused = refusal(*budget);
  EXPECT_EQ(refused.cap, "concurrency");
  EXPECT_EQ(refused.retry_after, 1s);

  // Moving a grant moves its place: the moved-from one gives nothing back.
  auto moved = std::move(first);
  { budget_grant gone = std::move(first); }
  EXPECT_EQ(passing(*budget), 0);
  moved = budget_grant{};  // gives the place back once
  auto third = std::get<budget_grant>(acquire(*budget));
  EXPECT_EQ(passing(*budget), 0) << "two in flight again";
  second.release();
  second.release();
  EXPECT_EQ(passing(*budget, 1), 1);
  EXPECT_EQ(passing(*budget, 1), 1) << "the grants of passing() were dropped at once";
}

TEST_F(api_budget_test, a_grant_may_outlive_its_budget) {
  auto budget = make({.per_minute = 0, .per_hour = 0, .concurrency = 1});
  auto grant = std::get<budget_grant>(acquire(*budget));
  budget.reset();
  grant.release();  // must not touch freed memory (ASan would say)
}

TEST_F(api_budget_test, a_refused_call_counts_nothing_in_any_cap) {
  auto budget = make({.per_minute = 2, .per_hour = 3, .concurrency = 1});
  {
    auto held = std::get<budget_grant>(acquire(*budget));
    EXPECT_EQ(refusal(*budget).cap, "concurrency");
  }
  EXPECT_EQ(passing(*budget), 1) << "the concurrency refusal took nothing of the minute";
  EXPECT_EQ(refusal(*budget).cap, "per_minute");
  advance(70s);
  EXPECT_EQ(passing(*budget), 1) << "the minute refusal took nothing of the hour";
  EXPECT_EQ(refusal(*budget).cap, "per_hour");
}

TEST_F(api_budget_test, many_workers_at_once_never_pass_more_than_the_caps) {
  constexpr int cap = 5000;
  constexpr int concurrency = 3;
  auto budget = make({.per_minute = cap, .per_hour = 0, .concurrency = concurrency});
  std::atomic<int> granted{0};
  std::atomic<int> in_flight{0};
  std::atomic<int> most_in_flight{0};
  asio::thread_pool workers(4);
  for (int worker = 0; worker < 4; ++worker) {
    asio::co_spawn(
        workers,
        [&]() -> asio::awaitable<void> {
          for (int call = 0; call < 10'000; ++call) {
            auto acquiring = budget->try_acquire("wwcorp", "cgi-bin/user/get");
            auto decision = co_await std::move(acquiring);
            if (!std::holds_alternative<budget_grant>(decision)) continue;
            ++granted;
            const int now_in_flight = ++in_flight;
            int most = most_in_flight.load();
            while (most < now_in_flight &&
                   !most_in_flight.compare_exchange_weak(most, now_in_flight)) {
            }
            --in_flight;  // before the grant gives its place back
          }
        },
        asio::detached);
  }
  workers.join();
  EXPECT_EQ(granted.load(), cap);
  EXPECT_LE(most_in_flight.load(), concurrency);
  EXPECT_GE(most_in_flight.load(), 1);
}

}  // namespace
}  // namespace token_broker
