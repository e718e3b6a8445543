// Redis behind Sentinel (SPEC §5): a master, two replicas and three sentinels, each a
// redis-server of this test; the broker finds the master through the sentinels, which want a
// password (read from a file, never logged). A manual
// failover (SENTINEL FAILOVER) and a master killed with SIGKILL, while a client asks for the
// token every 100 ms: no request fails, the current token is on the new master within moments
// of the promotion (the sentinels' failover-timeout here is 5 s: a broker that waited for every
// sentinel's +switch-master would miss it), and upstream sees one call per refresh throughout.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "broker_fixture.hpp"
#include "redis_process.hpp"
#include "redis_test_client.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

const std::string master_name = "tokens";
const std::string prefix = "sentinel:";
const std::string sentinel_password = "sentinel-password-4d9c";

class redis_sentinel_test : public broker_fixture {
 protected:
  void SetUp() override {
    broker_fixture::SetUp();
    forbid_in_logs(sentinel_password, "the sentinels' password");
    const auto master_port = free_port();
    servers_.push_back(std::make_unique<redis_process>(master_port, scratch_.path()));
    for (int i = 0; i < 2; ++i) {
      servers_.push_back(std::make_unique<redis_process>(
          free_port(), scratch_.path(),
          std::vector<std::string>{"--replicaof", "127.0.0.1", std::to_string(master_port)}));
    }
    for (int i = 0; i < 3; ++i) {
      sentinels_.push_back(redis_process::sentinel(
          free_port(), scratch_.path(),
          {"sentinel monitor " + master_name + " 127.0.0.1 " + std::to_string(master_port) + " 2",
           "sentinel down-after-milliseconds " + master_name + " 1000",
           "sentinel failover-timeout " + master_name + " 5000",
           // Wanted of clients and, between sentinels, of each other.
           "requirepass " + sentinel_password, "sentinel sentinel-pass " + sentinel_password}));
    }
    // Every sentinel knows both replicas and the other two sentinels.
    const auto give_up_at = steady_clock::now() + 20s;
    for (const auto& sentinel : sentinels_) {
      redis_client asking(sentinel->port(), sentinel_password);
      for (;;) {
        const auto replicas = asking.command({"SENTINEL", "replicas", master_name});
        const auto others = asking.command({"SENTINEL", "sentinels", master_name});
        if (replicas.elements.size() == 2 && others.elements.size() == 2) break;
        ASSERT_LT(steady_clock::now(), give_up_at) << "the sentinels did not meet";
        std::this_thread::sleep_for(100ms);
      }
    }
  }

  // The master's port as the first sentinel sees it now.
  std::uint16_t master_port() {
    redis_client asking(sentinels_.front()->port(), sentinel_password);
    const auto answer = asking.command({"SENTINEL", "get-master-addr-by-name", master_name});
    return static_cast<std::uint16_t>(std::stoi(answer.elements.at(1).string));
  }

  redis_process& server_on(std::uint16_t port) {
    for (auto& server : servers_) {
      if (server->port() == port) return *server;
    }
    throw std::runtime_error("no server on that port");
  }

  json sentinel_config(const std::string& password = sentinel_password) {
    auto config = make_config(free_port(), {{"refresh", {{"min_interval_s", 1}}}});
    json nodes = json::array();
    for (const auto& sentinel : sentinels_) {
      nodes.push_back("127.0.0.1:" + std::to_string(sentinel->port()));
    }
    config["redis"] = {{"url", "redis://" + master_name + "/0"},
                       {"key_prefix", prefix},
                       {"sentinel",
                        {{"master", master_name},
                         {"nodes", nodes},
                         {"password_file", scratch_.write("sentinel-password", password)}}}};
    return config;
  }

  // Milliseconds until the master on `port` holds the token the broker serves (a refresh may
  // change it meanwhile), or -1 after `limit`.
  long long until_current(const broker_process& broker, std::uint16_t port, milliseconds limit) {
    const auto started = steady_clock::now();
    while (steady_clock::now() - started < limit) {
      const auto served = token_of(get_token(broker, "hr"));
      try {
        redis_client master(port);
        if (master.get(prefix + "access_token:hr") == served) {
          return std::chrono::duration_cast<milliseconds>(steady_clock::now() - started).count();
        }
      } catch (const std::runtime_error&) {
        // Not reachable yet: asked again.
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }

  std::vector<std::unique_ptr<redis_process>> servers_;
  std::vector<std::unique_ptr<redis_process>> sentinels_;
};

TEST_F(redis_sentinel_test, failovers_fail_no_request_and_the_token_follows_the_master) {
  constexpr auto lifetime = 8s;
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  const auto& broker = start_broker(sentinel_config());
  const auto first = token_of(await_token(broker, "hr", 5s));
  ASSERT_FALSE(first.empty());
  ASSERT_GE(until_current(broker, master_port(), 3s), 0) << "the token never reached the master";

  // A client that asks every 100 ms throughout.
  std::atomic<bool> polling{true};
  std::atomic<int> asked{0}, failed{0};
  std::jthread client([&] {
    while (polling) {
      const auto answer = get_token(broker, "hr");
      ++asked;
      if (answer.status != 200) {
        ++failed;
        ADD_FAILURE() << "request failed during a failover: " << answer.status << " "
                      << answer.body;
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  const auto started = steady_clock::now();

  const auto follow_the_promotion = [&](const char* what) {
    const auto old_port = master_port();
    const auto promoted_by = steady_clock::now() + 30s;
    while (master_port() == old_port && steady_clock::now() < promoted_by) {
      std::this_thread::sleep_for(50ms);
    }
    const auto new_port = master_port();
    ASSERT_NE(new_port, old_port) << what << ": no promotion";
    const auto held_after = until_current(broker, new_port, 3s);
    std::cout << "[ figures  ] " << what << ": the current token on the new master " << held_after
              << " ms after the promotion was seen\n";
    EXPECT_GE(held_after, 0) << what << ": the new master never held the current token";
  };

  {
    redis_client asking(sentinels_.front()->port(), sentinel_password);
    asking.command({"SENTINEL", "FAILOVER", master_name});
  }
  follow_the_promotion("SENTINEL FAILOVER");
  server_on(master_port()).kill();
  follow_the_promotion("kill -9 of the master");

  // A lifetime more, to see the refreshes go on through the new master.
  std::this_thread::sleep_for(lifetime);
  polling = false;
  client.join();
  // No write was lost to a demoted master: the master holds what the broker serves.
  EXPECT_GE(until_current(broker, master_port(), 3s), 0)
      << "the master does not hold the token the broker serves";
  const auto seconds = std::chrono::duration<double>(steady_clock::now() - started).count();
  const auto calls = fake_->gettoken_calls(hr.secret);
  std::cout << "[ figures  ] " << asked << " requests, " << failed << " failed, " << calls
            << " gettoken over " << seconds << " s of " << lifetime.count() << " s tokens\n";
  EXPECT_EQ(failed, 0);
  // Refreshes at mid-life: two calls a lifetime, and the first.
  EXPECT_LE(calls, 1 + 2 * static_cast<int>(std::ceil(seconds / lifetime.count())));
}

// Sentinels that refuse the broker's password: each says so once in the log (discovery and
// the watch alike), Redis is down to the broker, and tokens are served from memory.
TEST_F(redis_sentinel_test, a_wrong_sentinel_password_is_logged_clearly_and_tokens_are_served) {
  const std::string wrong = "not-the-sentinel-password";
  forbid_in_logs(wrong, "the wrong sentinel password");
  add_app("hr");
  const auto& broker = start_broker(sentinel_config(wrong));

  const auto answer = await_token(broker, "hr", 5s);
  EXPECT_EQ(answer.status, 200u) << answer.error << answer.body;
  const auto first = "127.0.0.1:" + std::to_string(sentinels_.front()->port());
  EXPECT_TRUE(log_shows(
      broker,
      "unreachable at master tokens: no sentinel named the master tokens: " + first + ": WRONGPASS",
      5s))
      << broker.log();
  EXPECT_TRUE(log_shows(broker, "watch of sentinel " + first + ": WRONGPASS", 5s)) << broker.log();
  EXPECT_EQ(metric_sample(http_get(broker.port(), "/metrics").body, "token_broker_redis_up"), 0);
}

// A master demoted under the broker answers writes with -READONLY: the broker drops the
// connection to find the master again (here the same server, promoted back) and, once back,
// the master holds the token it serves.
class redis_readonly_test : public broker_fixture {};

TEST_F(redis_readonly_test, a_readonly_reply_reconnects_and_the_held_token_is_written_back) {
  fake_->set_lifetime(4s);
  add_app("hr");
  const redis_process redis(free_port(), scratch_.path());
  auto config = make_config(free_port(), {{"refresh", {{"min_interval_s", 1}}}});
  config["redis"] = {{"url", "redis://127.0.0.1:" + std::to_string(redis.port()) + "/0"},
                     {"key_prefix", prefix}};
  const auto& broker = start_broker(config);
  const auto first = token_of(await_token(broker, "hr", 5s));
  ASSERT_FALSE(first.empty());

  redis_client admin(redis.port());
  // A replica of a master that is not there: it keeps its keys and refuses writes.
  admin.command({"REPLICAOF", "127.0.0.1", std::to_string(free_port())});
  ASSERT_TRUE(log_shows(broker, "READONLY from 127.0.0.1:" + std::to_string(redis.port()), 10s))
      << broker.log();
  admin.command({"REPLICAOF", "NO", "ONE"});
  // The refresh that met READONLY is on the master once the broker is back.
  const auto give_up_at = steady_clock::now() + 10s;
  while (admin.get(prefix + "access_token:hr") != token_of(get_token(broker, "hr")) &&
         steady_clock::now() < give_up_at) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(admin.get(prefix + "access_token:hr"), token_of(get_token(broker, "hr")));
}

}  // namespace
}  // namespace token_broker::testing
