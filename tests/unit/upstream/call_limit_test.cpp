// The cap on concurrent upstream calls, without I/O: slots, arrival order, and many
// coroutines on several threads never holding more slots than there are.
#include "token_broker/upstream/call_limit.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace token_broker {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;

// Takes a slot, records the order it got one in, holds it until `hold` is cancelled or
// expires, then gives it back.
asio::awaitable<void> take_slot(call_limit& limit, std::vector<int>& order, int id,
                                asio::steady_timer* hold, bool& got) {
  auto slot = co_await limit.acquire();
  got = true;
  order.push_back(id);
  if (hold) co_await hold->async_wait(asio::as_tuple(asio::use_awaitable));
}

TEST(call_limit_test, grants_up_to_capacity_then_serves_waiters_in_arrival_order) {
  asio::io_context io;
  call_limit limit(2);
  std::vector<int> order;
  std::vector<std::unique_ptr<asio::steady_timer>> holds;
  bool got[5] = {};
  for (int id = 0; id < 5; ++id) {
    holds.push_back(std::make_unique<asio::steady_timer>(io, steady_clock::time_point::max()));
    asio::co_spawn(io, take_slot(limit, order, id, holds.back().get(), got[id]), asio::detached);
  }
  io.run_for(50ms);
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  EXPECT_EQ(limit.in_use(), 2u);
  EXPECT_EQ(limit.waiting(), 3u);

  holds[1]->cancel();  // 1 gives its slot back: the first in line, 2, gets it
  io.run_for(50ms);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(limit.in_use(), 2u);

  // Every holder, present and future, lets go at once.
  for (auto& hold : holds) hold->expires_at(steady_clock::time_point::min());
  io.run_for(200ms);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(limit.in_use(), 0u);
  EXPECT_EQ(limit.waiting(), 0u);
  for (const bool each : got) EXPECT_TRUE(each);
}

TEST(call_limit_test, many_coroutines_on_several_threads_never_exceed_the_capacity) {
  constexpr int capacity = 4;
  constexpr int callers = 200;
  asio::io_context io(4);
  call_limit limit(capacity);
  std::atomic<int> holding{0};
  std::atomic<int> most{0};
  std::atomic<int> done{0};

  auto caller = [&]() -> asio::awaitable<void> {
    auto slot = co_await limit.acquire();
    const int now_holding = ++holding;
    int seen = most.load();
    while (now_holding > seen && !most.compare_exchange_weak(seen, now_holding)) {
    }
    asio::steady_timer work(co_await asio::this_coro::executor, 1ms);
    co_await work.async_wait(asio::as_tuple(asio::use_awaitable));
    --holding;
    ++done;
  };
  for (int i = 0; i < callers; ++i) {
    // Each on a strand of its own: callers may come from any executor.
    asio::co_spawn(asio::make_strand(io), caller(), asio::detached);
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&io] { io.run_for(30s); });
  for (auto& thread : threads) thread.join();

  EXPECT_EQ(done.load(), callers);
  EXPECT_EQ(most.load(), capacity) << "the calls did overlap, up to the cap and no further";
  EXPECT_EQ(limit.in_use(), 0u);
  EXPECT_EQ(limit.waiting(), 0u);
}

}  // namespace
}  // namespace token_broker
