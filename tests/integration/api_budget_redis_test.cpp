// The gateway's budget on the fixture's real redis-server (SPEC §8): replicas sharing one Redis
// share the caps, a lease its holder never gave back frees itself after lease_ttl, and without
// Redis each process still caps on its own. Each "replica" is an io_context on a thread of its
// own with its own connection, as in separate processes.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <future>
#include <thread>

#include "redis_keyspace_fixture.hpp"
#include "token_broker/core/supervisor.hpp"
#include "token_broker/gateway/api_budget.hpp"
#include "token_broker/redis/redis_connection.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr auto corpid = "wwcorp0000000001";
constexpr auto api = "cgi-bin/message/send";

redis_config redis_at(std::uint16_t port, std::string prefix) {
  redis_config settings;
  settings.url = "redis://127.0.0.1:" + std::to_string(port) + "/0";
  settings.host = "127.0.0.1";
  settings.port = port;
  settings.key_prefix = std::move(prefix);
  return settings;
}

bool granted(const budget_decision& decision) {
  return std::holds_alternative<budget_grant>(decision);
}

class replica {
 public:
  replica(const redis_config& settings, api_budget_limits limits, milliseconds lease_ttl)
      : connection_(std::make_shared<redis_connection>(io_.get_executor(), settings, "commands")),
        budget_(make_redis_budget(limits, connection_, settings.key_prefix, lease_ttl)) {
    connection_->start(tasks_);
    // spdlog's registry is made on first use, inside the uninstrumented library: made here,
    // before the thread starts, ThreadSanitizer sees it made before any replica's thread logs.
    spdlog::default_logger_raw();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~replica() {
    connection_->stop();
    thread_.join();  // run() returns once the connection loop has ended
  }

  // Waits until the connection is up (or, `tried_only`, until its first attempt has ended).
  bool await_connection(bool tried_only = false) {
    const auto give_up_at = steady_clock::now() + 5s;
    while (steady_clock::now() < give_up_at) {
      if (tried_only ? connection_->tried() : connection_->up()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  bool await_down() {
    const auto give_up_at = steady_clock::now() + 5s;
    while (connection_->up() && steady_clock::now() < give_up_at) std::this_thread::sleep_for(5ms);
    return !connection_->up();
  }
  void disconnect() { connection_->stop(); }

  budget_decision acquire() {
    auto decided = asio::co_spawn(io_, budget_->try_acquire(corpid, api), asio::use_future);
    if (decided.wait_for(5s) != std::future_status::ready) {
      throw std::runtime_error("try_acquire did not answer within 5 s");
    }
    return decided.get();
  }

 private:
  asio::io_context io_;
  supervisor tasks_;
  std::shared_ptr<redis_connection> connection_;
  std::unique_ptr<api_budget> budget_;
  std::thread thread_;
};

class api_budget_redis_test : public testing::with_redis_keyspace<::testing::Test> {
 protected:
  redis_config settings() const { return redis_at(keys_->port(), prefix_); }
};

TEST_F(api_budget_redis_test, two_replicas_on_one_redis_share_the_minute_cap) {
  const api_budget_limits limits{.per_minute = 5, .per_hour = 0, .concurrency = 0};
  replica first(settings(), limits, 10s);
  replica second(settings(), limits, 10s);
  ASSERT_TRUE(first.await_connection());
  ASSERT_TRUE(second.await_connection());

  int grants = 0;
  for (int round = 0; round < 6; ++round) {
    for (auto* each : {&first, &second}) {
      const auto decision = each->acquire();
      if (granted(decision)) {
        ++grants;
        continue;
      }
      const auto& refused = std::get<budget_refusal>(decision);
      EXPECT_EQ(refused.cap, "per_minute");
      // The calls sit in at most two buckets of 10 s, counted until 60 s after their end.
      EXPECT_GE(refused.retry_after, 50s);
      EXPECT_LE(refused.retry_after, 70s);
    }
  }
  EXPECT_EQ(grants, 5) << "the replicas counted apart";

  // What Redis holds: one counter per bucket under the prefix, expiring when no longer needed.
  auto& redis = keys_->client();
  const auto key = prefix_ + "gateway:" + corpid + ":" + api;
  const auto fields = redis.command({"HGETALL", key});
  ASSERT_GE(fields.elements.size(), 2u);
  ASSERT_LE(fields.elements.size(), 4u) << "at most two buckets were used";
  long long counted = 0;
  for (std::size_t i = 0; i < fields.elements.size(); i += 2) {
    EXPECT_EQ(fields.elements[i].string.substr(0, 2), "m:");
    counted += std::stoll(fields.elements[i + 1].string);
  }
  EXPECT_EQ(counted, 5) << "refused calls count nothing";
  const auto ttl = redis.pttl(key);
  EXPECT_GT(ttl, 60'000);
  EXPECT_LE(ttl, 70'000);
  EXPECT_EQ(redis.pttl(prefix_ + "gateway_leases:" + corpid + ":" + api), -2)
      << "no concurrency cap, no leases";
}

TEST_F(api_budget_redis_test,
       two_replicas_share_the_concurrency_cap_and_a_grant_gives_its_place_back) {
  const api_budget_limits limits{.per_minute = 0, .per_hour = 0, .concurrency = 2};
  replica first(settings(), limits, 10s);
  replica second(settings(), limits, 10s);
  ASSERT_TRUE(first.await_connection());
  ASSERT_TRUE(second.await_connection());

  auto held_first = first.acquire();
  auto held_second = second.acquire();
  ASSERT_TRUE(granted(held_first));
  ASSERT_TRUE(granted(held_second));
  EXPECT_TRUE(std::get<budget_grant>(held_first).holds_place());
  for (auto* each : {&first, &second}) {
    const auto decision = each->acquire();
    ASSERT_FALSE(granted(decision));
    EXPECT_EQ(std::get<budget_refusal>(decision).cap, "concurrency");
    EXPECT_EQ(std::get<budget_refusal>(decision).retry_after, 1s);
  }
  const auto leases = prefix_ + "gateway_leases:" + corpid + ":" + api;
  EXPECT_EQ(keys_->client().command({"ZCARD", leases}).integer, 2);

  // The first replica's grant ends: its release is sent without waiting, so the second
  // replica sees the place free shortly after.
  held_first = budget_grant{};
  const auto give_up_at = steady_clock::now() + 2s;
  budget_decision third = budget_refusal{};
  while (!granted(third) && steady_clock::now() < give_up_at) {
    third = second.acquire();
    if (!granted(third)) std::this_thread::sleep_for(2ms);
  }
  EXPECT_TRUE(granted(third)) << "the released place never came back";
  EXPECT_FALSE(granted(first.acquire())) << "two in flight again";
  EXPECT_EQ(keys_->client().command({"ZCARD", leases}).integer, 2);
}

// After a reload, replicas may cap different windows for a while: one that does not cap the
// hour must neither count in it nor erase what the others counted there.
TEST_F(api_budget_redis_test, a_replica_without_an_hour_cap_leaves_the_hour_to_the_others) {
  replica hourly(settings(), {.per_minute = 0, .per_hour = 3, .concurrency = 0}, 10s);
  replica minutely(settings(), {.per_minute = 100, .per_hour = 0, .concurrency = 0}, 10s);
  ASSERT_TRUE(hourly.await_connection());
  ASSERT_TRUE(minutely.await_connection());

  EXPECT_TRUE(granted(hourly.acquire()));
  EXPECT_TRUE(granted(hourly.acquire()));
  for (int call = 0; call < 5; ++call) EXPECT_TRUE(granted(minutely.acquire()));
  EXPECT_TRUE(granted(hourly.acquire()));
  const auto refused = hourly.acquire();
  ASSERT_FALSE(granted(refused)) << "the hour's counts were lost";
  EXPECT_EQ(std::get<budget_refusal>(refused).cap, "per_hour");
  const auto ttl = keys_->client().pttl(prefix_ + "gateway:" + corpid + ":" + api);
  EXPECT_GT(ttl, 60 * 60'000) << "the minute's shorter life cut the hour's short";
}

TEST_F(api_budget_redis_test, a_lease_its_holder_never_gave_back_frees_itself_after_lease_ttl) {
  // Long enough that a loaded machine still checks the lease before it ends (CTest runs
  // other tests beside this one).
  constexpr auto short_lease = 1500ms;
  const api_budget_limits limits{.per_minute = 0, .per_hour = 0, .concurrency = 2};
  // The survivor's leases last long, and keep the set of leases alive: only the lost lease's
  // own deadline can free its place.
  replica survivor(settings(), limits, 10s);
  replica crashed(settings(), limits, short_lease);
  ASSERT_TRUE(survivor.await_connection());
  ASSERT_TRUE(crashed.await_connection());

  const auto held = survivor.acquire();
  ASSERT_TRUE(granted(held));
  const auto acquired_from = steady_clock::now();
  auto lost = crashed.acquire();
  ASSERT_TRUE(granted(lost));
  const auto leases = prefix_ + "gateway_leases:" + corpid + ":" + api;
  EXPECT_GT(keys_->client().pttl(leases), 9'000) << "a short lease shortened the set's life";
  // The holder loses Redis before its call ends: its release cannot reach Redis, as after a
  // crash.
  crashed.disconnect();
  ASSERT_TRUE(crashed.await_down());
  lost = budget_grant{};
  EXPECT_FALSE(granted(survivor.acquire())) << "the lost lease must hold until its deadline";

  const auto give_up_at = steady_clock::now() + 3s;
  bool freed = false;
  while (!freed && steady_clock::now() < give_up_at) {
    freed = granted(survivor.acquire());
    if (!freed) std::this_thread::sleep_for(10ms);
  }
  const auto waited = steady_clock::now() - acquired_from;
  ASSERT_TRUE(freed) << "the lost lease never expired";
  // Redis counts the lease from its own clock, a moment after acquired_from, but in whole
  // milliseconds of its wall clock: the lease may end up to a millisecond before short_lease
  // of this process's steady clock has passed (CI saw 1499.99 ms).
  EXPECT_GE(waited, short_lease - 2ms);
  EXPECT_LT(waited, short_lease + 1s);
}

TEST_F(api_budget_redis_test, without_redis_each_process_still_caps_on_its_own) {
  // A port nothing listens on: bound and released again.
  asio::io_context probe;
  asio::ip::tcp::acceptor closed(probe, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = closed.local_endpoint().port();
  closed.close();

  const api_budget_limits limits{.per_minute = 3, .per_hour = 0, .concurrency = 1};
  replica alone(redis_at(port, prefix_), limits, 10s);
  ASSERT_TRUE(alone.await_connection(/*tried_only=*/true));
  {
    auto held = alone.acquire();
    ASSERT_TRUE(granted(held));
    EXPECT_TRUE(std::get<budget_grant>(held).holds_place());
    const auto refused = alone.acquire();
    ASSERT_FALSE(granted(refused));
    EXPECT_EQ(std::get<budget_refusal>(refused).cap, "concurrency");
  }
  EXPECT_TRUE(granted(alone.acquire()));
  EXPECT_TRUE(granted(alone.acquire()));
  const auto refused = alone.acquire();
  ASSERT_FALSE(granted(refused));
  EXPECT_EQ(std::get<budget_refusal>(refused).cap, "per_minute");
  EXPECT_GE(std::get<budget_refusal>(refused).retry_after, 60s);
}

}  // namespace
}  // namespace token_broker
