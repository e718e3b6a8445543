// Brokers sharing a real Redis (SPEC §5), against the fake of WeCom: what readers find in
// Redis, one gettoken per refresh however many replicas ask, adoption at start, takeover from
// a dead lock holder, and serving on through a Redis outage.
//
// Most tests share the redis-server of the CTest fixture and keep apart by key prefix; the
// ones that stop Redis or need a password run a server of their own.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "broker_fixture.hpp"
#include "redis_keyspace_fixture.hpp"
#include "redis_process.hpp"
#include "redis_test_client.hpp"
#include "sanitizers.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using fake::expiry_behaviour;
using fake::fault;
using fake::fault_kind;
using fake::token_status;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

long long unix_ms(system_clock::time_point at) {
  return std::chrono::duration_cast<milliseconds>(at.time_since_epoch()).count();
}

long long unix_ms_now() {
  return unix_ms(system_clock::now());
}

long long elapsed_ms(steady_clock::time_point since) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - since).count();
}

std::string redis_url(std::uint16_t port, int database = 0) {
  return "redis://127.0.0.1:" + std::to_string(port) + "/" + std::to_string(database);
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> fields;
  std::size_t start = 0;
  for (;;) {
    const auto end = text.find(separator, start);
    fields.push_back(text.substr(start, end - start));
    if (end == std::string::npos) return fields;
    start = end + 1;
  }
}

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

// Sends `exchanges` to every replica at once (each replica's batch concurrently too) and
// returns the answers per replica.
std::vector<std::vector<http_answer>> on_every_replica(
    const std::vector<broker_process*>& replicas, const std::vector<http_exchange>& exchanges) {
  std::vector<std::vector<http_answer>> answers(replicas.size());
  std::vector<std::jthread> clients;
  for (std::size_t i = 0; i < replicas.size(); ++i) {
    clients.emplace_back(
        [&, i] { answers[i] = http_concurrently(replicas[i]->port(), exchanges); });
  }
  clients.clear();  // joins
  return answers;
}

class redis_test : public with_redis_keyspace<broker_fixture> {
 protected:
  std::string token_key(const std::string& app) const { return prefix_ + "access_token:" + app; }
  std::string lock_key(const std::string& app) const { return prefix_ + "lock:" + app; }
  std::string events_channel() const { return prefix_ + "events"; }

  // A broker config on a free port using Redis at `url` with this test's key prefix.
  json redis_config(const std::string& url, const json& changes = json::object()) const {
    auto config = make_config(free_port(), changes);
    config["redis"] = {{"url", url}, {"key_prefix", prefix_}};
    return config;
  }

  // `count` brokers on the fixture server, each on a port of its own.
  std::vector<broker_process*> start_replicas(int count, const json& changes = json::object()) {
    std::vector<broker_process*> replicas;
    for (int i = 0; i < count; ++i) {
      replicas.push_back(&start_broker(redis_config(redis_url(keys_->port()), changes)));
    }
    return replicas;
  }

  // Polls until `key` holds `expected` or `limit` passes.
  static bool await_value(redis_client& redis, const std::string& key, const std::string& expected,
                          milliseconds limit) {
    const auto give_up_at = steady_clock::now() + limit;
    do {
      if (redis.get(key) == expected) return true;
      std::this_thread::sleep_for(20ms);
    } while (steady_clock::now() < give_up_at);
    return false;
  }

  // Waits for the broker's first "hr" token and for it to reach the Redis on `redis_port`.
  void await_first_token_in_redis(const broker_process& broker, std::uint16_t redis_port,
                                  http_answer& first) {
    first = await_token(broker, "hr", 5s);
    ASSERT_EQ(first.status, 200u) << first.error << first.body;
    redis_client redis(redis_port);
    ASSERT_TRUE(await_value(redis, token_key("hr"), token_of(first), 3s));
  }

  // Reads the app's token key and checks that Redis never promises more than WeCom: the key
  // has an expiry, and it is no later than the fake's true expiry of the token it holds.
  // Returns the token, or nothing if the key is absent.
  std::optional<std::string> expect_no_later_than_true_expiry(redis_client& redis,
                                                              const std::string& app) {
    const auto read_from = unix_ms_now();  // PTTL counts from a moment after this
    const auto stored = redis.get_with_pttl(token_key(app));
    if (!stored.value) return std::nullopt;
    EXPECT_NE(stored.pttl, -1) << "the token key has no expiry";
    const auto true_expiry = fake_->expires_at(*stored.value);
    if (!true_expiry) {
      ADD_FAILURE() << "Redis holds a token WeCom never issued";
    } else {
      EXPECT_LE(read_from + stored.pttl, unix_ms(*true_expiry))
          << "Redis keeps the token " << read_from + stored.pttl - unix_ms(*true_expiry)
          << " ms past its true expiry";
    }
    return stored.value;
  }
};

TEST_F(redis_test, a_refresh_writes_the_token_with_its_expiry_and_announces_it) {
  const auto hr = add_app("hr");
  // Subscribed before the broker starts, so its very first refresh is heard.
  redis_subscriber events(keys_->port(), events_channel());
  const auto& broker = start_broker(redis_config(redis_url(keys_->port())));
  const auto answer = await_token(broker, "hr", 5s);
  ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;
  const auto token = token_of(answer);
  const auto expires_at = expires_at_of(answer);

  ASSERT_TRUE(await_value(keys_->client(), token_key("hr"), token, 3s))
      << "the token never reached Redis";
  const auto stored = keys_->client().get_with_pttl(token_key("hr"));
  // expires_at is floored to the second and PTTL read a moment before `now`: the difference
  // lies in [0, 1 s) plus the time between the two reads.
  EXPECT_NEAR(stored.pttl, expires_at * 1000 - unix_ms_now(), 1500)
      << "the key must expire when the token does";
  EXPECT_EQ(expect_no_later_than_true_expiry(keys_->client(), "hr"), token);

  const auto message = events.next_message(5s);
  ASSERT_TRUE(message.has_value()) << "nothing published on " << events_channel();
  const auto event = json::parse(*message);
  EXPECT_EQ(event["app"], "hr") << *message;
  EXPECT_EQ(event["event"], "refreshed") << *message;
  // The same expiry, turned into seconds from clocks read a moment apart.
  EXPECT_NEAR(event["expires_at"].get<double>(), static_cast<double>(expires_at), 1.0) << *message;
  EXPECT_FALSE(events.next_message(500ms).has_value()) << "one refresh, one event";

  std::cout << "[ figures  ] written to Redis with PTTL " << stored.pttl
            << " ms; gettoken calls: " << fake_->gettoken_calls(hr.secret) << "\n";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

// Upstream behaviour (a): an early refresh brings the same token back with a full expires_in
// though its expiry has not moved. Redis must keep the true expiry, never the promised one.
TEST_F(redis_test, a_same_token_refresh_keeps_the_true_expiry_in_redis) {
  constexpr auto lifetime = 8s;
  constexpr auto observed = 10s;  // past the first token's expiry: its successor is checked too
  fake_->set_behaviour(expiry_behaviour::same_token_keeps_expiry);
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  // ahead_s is capped at half the lifetime: the refresh comes at 4 s, well inside the window
  // in which WeCom repeats the token.
  const auto& broker = start_broker(redis_config(
      redis_url(keys_->port()), {{"refresh", {{"ahead_s", 6}, {"min_interval_s", 1}}}}));
  const auto first = await_token(broker, "hr", 5s);
  ASSERT_EQ(first.status, 200u) << first.error << first.body;

  int samples = 0;
  int samples_after_a_repeat = 0;  // the first token, read after WeCom answered it again
  const auto started = steady_clock::now();
  while (steady_clock::now() - started < observed) {
    const int calls = fake_->gettoken_calls(hr.secret);
    if (const auto stored = expect_no_later_than_true_expiry(keys_->client(), "hr")) {
      ++samples;
      if (calls >= 2 && *stored == token_of(first)) ++samples_after_a_repeat;
    }
    std::this_thread::sleep_for(100ms);
  }

  std::cout << "[ figures  ] " << samples << " samples of the key over " << observed.count()
            << " s, " << samples_after_a_repeat
            << " after a same-token answer; gettoken calls: " << fake_->gettoken_calls(hr.secret)
            << "\n";
  EXPECT_GE(samples, 50);
  EXPECT_GT(samples_after_a_repeat, 0) << "the same-token refresh did not happen in time";
}

TEST_F(redis_test, a_restarted_broker_adopts_the_token_in_redis_without_calling_upstream) {
  const auto hr = add_app("hr");
  const auto config = redis_config(redis_url(keys_->port()));
  auto& first = start_broker(config);
  const auto before = await_token(first, "hr", 5s);
  ASSERT_EQ(before.status, 200u) << before.error << before.body;
  ASSERT_TRUE(await_value(keys_->client(), token_key("hr"), token_of(before), 3s));
  EXPECT_EQ(first.stop(SIGTERM, 5s), 0);

  const auto& second = start_broker(config);
  const auto after = await_token(second, "hr", 5s);
  ASSERT_EQ(after.status, 200u) << after.error << after.body;
  EXPECT_EQ(token_of(after), token_of(before));
  EXPECT_NEAR(static_cast<double>(expires_at_of(after)), static_cast<double>(expires_at_of(before)),
              1.0);
  // Nor a late call in the background: the adopted token has nearly two hours left.
  std::this_thread::sleep_for(1s);
  std::cout << "[ figures  ] gettoken calls over a restart: " << fake_->gettoken_calls(hr.secret)
            << "\n";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

// Three replicas behind one Redis: a cold stampede spread over them makes one gettoken, and
// over several short lifetimes they refresh together, at most twice per lifetime in all, and
// hand out the same token at the same moment.
TEST_F(redis_test, three_replicas_make_one_gettoken_per_refresh_and_agree_on_the_token) {
  constexpr auto lifetime = 8s;
  constexpr int lifetimes = 3;
  constexpr int requests_per_replica = 60;
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  // A slow first answer keeps the app cold at every replica while the requests pile up.
  fake_->script_faults(hr.secret, {fault{.kind = fault_kind::delay, .delay = 2000ms}});
  const auto replicas =
      start_replicas(3, {{"upstream", {{"timeout_ms", 3000}}},
                         {"refresh", {{"ahead_s", 3}, {"jitter_s", 1}, {"min_interval_s", 1}}}});

  const auto cold = on_every_replica(
      replicas, std::vector<http_exchange>(requests_per_replica, {.target = "/v1/apps/hr/token"}));
  std::set<std::string> cold_tokens;
  int waited = 0;  // answers that had to wait for the slow first gettoken: truly cold
  for (const auto& answers : cold) {
    for (const auto& answer : answers) {
      ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;
      cold_tokens.insert(token_of(answer));
      if (answer.took >= 200ms) ++waited;
    }
  }
  const int cold_calls = fake_->gettoken_calls(hr.secret);
  std::cout << "[ figures  ] " << 3 * requests_per_replica << " cold requests over 3 replicas, "
            << waited << " waited; gettoken calls: " << cold_calls << "\n";
  EXPECT_GE(waited, 2 * requests_per_replica) << "the requests must have arrived while cold";
  EXPECT_EQ(cold_tokens.size(), 1u);
  EXPECT_EQ(fake_->check(*cold_tokens.begin()), token_status::valid);
  EXPECT_EQ(cold_calls, 1);

  // Rounds of one request to each replica at the same moment, over several lifetimes.
  int rounds = 0, split_rounds = 0, served = 0, failed = 0, invalid = 0;
  const auto started = steady_clock::now();
  while (steady_clock::now() - started < lifetimes * lifetime) {
    std::set<std::string> distinct;
    for (const auto& answers : on_every_replica(replicas, {{.target = "/v1/apps/hr/token"}})) {
      const auto& answer = answers.front();
      if (answer.status != 200) {
        ++failed;
        ADD_FAILURE() << "request failed: " << answer.status << " " << answer.error << " "
                      << answer.body;
        continue;
      }
      const auto token = token_of(answer);
      if (fake_->check(token) != token_status::valid) {
        ++invalid;
        ADD_FAILURE() << "served a token WeCom rejects: " << fake::to_string(fake_->check(token));
      }
      distinct.insert(token);
      ++served;
    }
    ++rounds;
    // Around a switch one replica may answer a moment before the others; never three tokens.
    EXPECT_LE(distinct.size(), 2u);
    if (distinct.size() > 1) ++split_rounds;
    std::this_thread::sleep_for(50ms);
  }

  const auto elapsed = std::chrono::duration<double>(steady_clock::now() - started);
  const double lifetimes_elapsed =
      elapsed.count() / std::chrono::duration<double>(lifetime).count();
  const int calls = fake_->gettoken_calls(hr.secret) - cold_calls;
  std::cout << "[ figures  ] 3 replicas: rounds=" << rounds << " split=" << split_rounds
            << " served=" << served << " failed=" << failed << " invalid=" << invalid
            << " gettoken=" << calls << " over " << lifetimes_elapsed << " lifetimes\n";
  EXPECT_GT(rounds, 100);
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(invalid, 0);
  EXPECT_LE(split_rounds * 10, rounds) << "the replicas disagree on the token too often";
  EXPECT_GE(calls, lifetimes - 1) << "the replicas stopped refreshing";
  EXPECT_LE(calls, static_cast<int>(2 * lifetimes_elapsed) + 1);
}

// The replica holding the lock dies in the middle of its gettoken: the others wait out its
// lease, then one of them refreshes.
TEST_F(redis_test, a_killed_lock_holder_is_taken_over_once_its_lease_runs_out) {
  constexpr auto upstream_timeout = 4000ms;
  constexpr auto lease = upstream_timeout + 2000ms;  // the contract's lease
  const auto hr = add_app("hr");
  // A 3 s gettoken: time to find the replica holding the lock and kill it mid-call.
  fake_->script_faults(hr.secret, {fault{.kind = fault_kind::delay, .delay = 3000ms}});
  auto replicas = start_replicas(3, {{"upstream", {{"timeout_ms", upstream_timeout.count()}}}});

  std::optional<std::string> holder;  // "<hostname>:<pid>:<random hex>"
  const auto give_up_at = steady_clock::now() + 3s;
  while (!holder && steady_clock::now() < give_up_at) {
    holder = keys_->client().get(lock_key("hr"));
    if (!holder) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(holder.has_value()) << "no replica took the lock for the cold refresh";
  const auto lock_ttl = keys_->client().pttl(lock_key("hr"));
  EXPECT_LE(lock_ttl, lease.count()) << "the lease is upstream.timeout_ms + 2000 ms";
  EXPECT_GT(lock_ttl, lease.count() - 3000) << "the lease is upstream.timeout_ms + 2000 ms";

  const auto fields = split(*holder, ':');
  ASSERT_EQ(fields.size(), 3u) << "lock value: " << *holder;
  EXPECT_EQ(fields[0], host_name()) << "lock value: " << *holder;
  EXPECT_TRUE(!fields[2].empty() &&
              fields[2].find_first_not_of("0123456789abcdefABCDEF") == std::string::npos)
      << "lock value: " << *holder;
  pid_t holder_pid = 0;
  std::from_chars(fields[1].data(), fields[1].data() + fields[1].size(), holder_pid);
  const auto holding = std::find_if(replicas.begin(), replicas.end(), [&](broker_process* replica) {
    return replica->pid() == holder_pid;
  });
  ASSERT_NE(holding, replicas.end()) << "the lock names no replica of this test: " << *holder;
  ASSERT_EQ(fake_->gettoken_calls(hr.secret), 1) << "the holder's gettoken is in flight";
  ASSERT_FALSE(keys_->client().get(token_key("hr")).has_value())
      << "the holder finished before the kill";

  const auto killed_at = steady_clock::now();
  (*holding)->stop(SIGKILL, 5s);
  replicas.erase(holding);

  std::set<std::string> tokens;
  for (auto* replica : replicas) {
    const auto left = lease + 5s - (steady_clock::now() - killed_at);
    const auto answer = await_token(*replica, "hr", std::chrono::duration_cast<milliseconds>(left));
    ASSERT_EQ(answer.status, 200u)
        << "no token within lease + 5 s: " << answer.error << answer.body;
    EXPECT_EQ(fake_->check(token_of(answer)), token_status::valid);
    tokens.insert(token_of(answer));
  }
  std::cout << "[ figures  ] lock holder killed; the others served a token after "
            << elapsed_ms(killed_at) << " ms (lease " << lease.count()
            << " ms); gettoken calls: " << fake_->gettoken_calls(hr.secret) << "\n";
  EXPECT_EQ(tokens.size(), 1u);
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 2) << "the dead call, then one takeover";
}

// Issue 13, defect 2: a lock taken before the wait for an upstream slot ran out while its
// holder was still in line (48 cold apps, 16 slots, 1.5 s answers: three rounds, 4.5 s, and
// a lease of 2.5 + 2 s), and another replica called too: 80 gettoken calls for 48 apps.
TEST_F(redis_test, a_backlog_of_cold_apps_makes_one_gettoken_per_app_across_replicas) {
  constexpr int app_count = 48;
  for (int i = 0; i < app_count; ++i) {
    const auto app = add_app("app" + std::to_string(i));
    // Every call this app might make answers after 1.5 s.
    fake_->script_faults(app.secret,
                         std::vector<fault>(3, fault{.kind = fault_kind::delay, .delay = 1500ms}));
  }
  const auto started = steady_clock::now();
  const auto replicas = start_replicas(3, {{"upstream", {{"timeout_ms", 2500}}}});

  for (const auto* replica : replicas) {
    for (const auto& app : apps_) {
      const auto left = 15s - (steady_clock::now() - started);
      const auto answer =
          await_token(*replica, app.id, std::chrono::duration_cast<milliseconds>(left));
      ASSERT_EQ(answer.status, 200u) << app.id << ": " << answer.error << answer.body;
    }
  }
  const auto served_after = elapsed_ms(started);
  // A replica still holding a lock may still call: done once no lock is left.
  const auto locks_left = [&] {
    return std::count_if(apps_.begin(), apps_.end(), [&](const app_spec& app) {
      return keys_->client().get(lock_key(app.id));
    });
  };
  const auto give_up_at = steady_clock::now() + 5s;
  while (locks_left() > 0 && steady_clock::now() < give_up_at) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(locks_left(), 0) << "locks still held 5 s after every app was served";

  std::cout << "[ figures  ] " << app_count << " cold apps on 3 replicas, answers after 1.5 s: "
            << "all served after " << served_after
            << " ms; gettoken calls: " << fake_->gettoken_calls() << "\n";
  EXPECT_EQ(fake_->gettoken_calls(), app_count);
  for (const auto& app : apps_) EXPECT_EQ(fake_->gettoken_calls(app.secret), 1) << app.id;
}

// Invalidation is compare-and-refresh across replicas: once any replica has replaced T, a
// report of T anywhere answers the replacement without calling upstream.
TEST_F(redis_test, an_invalidation_at_one_replica_is_honoured_by_all) {
  const auto hr = add_app("hr");
  const auto replicas = start_replicas(3);
  std::set<std::string> held;
  for (const auto* replica : replicas) {
    const auto answer = await_token(*replica, "hr", 5s);
    ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;
    held.insert(token_of(answer));
  }
  ASSERT_EQ(held.size(), 1u) << "the replicas started on different tokens";
  ASSERT_EQ(fake_->gettoken_calls(hr.secret), 1) << "the later replicas adopt the first's token";
  const auto revoked = *held.begin();

  fake_->revoke_tokens(hr.secret);
  const http_exchange report{.method = "POST",
                             .target = "/v1/apps/hr/token/invalidate",
                             .body = json{{"access_token", revoked}}.dump()};
  const auto first = http_call(replicas[0]->port(), report);
  ASSERT_EQ(first.status, 200u) << first.error << first.body;
  const auto replacement = token_of(first);
  EXPECT_NE(replacement, revoked);
  EXPECT_EQ(fake_->check(replacement), token_status::valid);
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 2);

  // Straight after, before any replica has necessarily heard of the replacement.
  for (std::size_t i = 1; i < replicas.size(); ++i) {
    const auto answer = http_call(replicas[i]->port(), report);
    ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;
    EXPECT_EQ(token_of(answer), replacement) << "replica " << i;
  }
  for (const auto* replica : replicas) {
    const auto answer = get_token(*replica, "hr");
    ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;
    EXPECT_EQ(token_of(answer), replacement);
  }
  EXPECT_EQ(keys_->client().get(token_key("hr")), replacement);
  std::cout << "[ figures  ] invalidation reported at 3 replicas; gettoken calls: "
            << fake_->gettoken_calls(hr.secret) << "\n";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 2);
}

// Redis goes away mid-run: the broker serves and refreshes from memory, and when Redis comes
// back (empty, as a restarted server without persistence) it writes its current token.
TEST_F(redis_test, a_redis_outage_does_not_stop_serving_and_redis_catches_up_when_back) {
  constexpr auto lifetime = 6s;
  constexpr auto outage = 2 * lifetime;
  constexpr auto catch_up_limit = 10s;
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  redis_process redis_server(free_port(), scratch_.path());
  const auto& broker = start_broker(
      redis_config(redis_url(redis_server.port()), {{"refresh", {{"min_interval_s", 1}}}}));
  http_answer first;
  ASSERT_NO_FATAL_FAILURE(await_first_token_in_redis(broker, redis_server.port(), first));

  redis_server.stop();
  const int calls_before = fake_->gettoken_calls(hr.secret);
  int served = 0, failed = 0, invalid = 0;
  const auto outage_started = steady_clock::now();
  while (steady_clock::now() - outage_started < outage) {
    const auto answer = get_token(broker, "hr");
    if (answer.status != 200) {
      ++failed;
      ADD_FAILURE() << "request failed without Redis: " << answer.status << " " << answer.error
                    << " " << answer.body;
    } else if (fake_->check(token_of(answer)) != token_status::valid) {
      ++invalid;
      ADD_FAILURE() << "served a token WeCom rejects without Redis";
    } else {
      ++served;
    }
    std::this_thread::sleep_for(50ms);
  }
  const int outage_calls = fake_->gettoken_calls(hr.secret) - calls_before;
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(invalid, 0);
  EXPECT_GE(outage_calls, 2) << "refreshes stopped with Redis";

  redis_server.start();
  redis_client redis(redis_server.port());
  const auto back_at = steady_clock::now();
  bool caught_up = false;
  while (!caught_up && steady_clock::now() - back_at < catch_up_limit) {
    // Compared with what the broker serves right now: it may refresh meanwhile.
    const auto current = get_token(broker, "hr");
    caught_up = current.status == 200 && redis.get(token_key("hr")) == token_of(current);
    if (!caught_up) std::this_thread::sleep_for(100ms);
  }
  std::cout << "[ figures  ] " << outage.count() << " s without Redis: served=" << served
            << " failed=" << failed << " invalid=" << invalid << " gettoken=" << outage_calls
            << "; Redis caught up after " << elapsed_ms(back_at) << " ms\n";
  EXPECT_TRUE(caught_up) << "Redis did not get the current token within 10 s of coming back";
  expect_no_later_than_true_expiry(redis, "hr");
}

// Redis restarts empty (no persistence) while no refresh is due, so no write failed during
// the outage: the broker still writes its token back as soon as it reconnects, not at its
// next refresh (hours away with real tokens). Found by the fault soak.
TEST_F(redis_test, a_redis_restarted_empty_gets_the_held_token_back_without_a_refresh) {
  const auto hr = add_app("hr");  // 7200 s tokens: no refresh during this test
  redis_process redis_server(free_port(), scratch_.path());
  const auto& broker = start_broker(redis_config(redis_url(redis_server.port())));
  http_answer first;
  ASSERT_NO_FATAL_FAILURE(await_first_token_in_redis(broker, redis_server.port(), first));

  redis_server.stop();
  redis_server.start();
  redis_client redis(redis_server.port());
  const auto back_at = steady_clock::now();
  const bool caught_up = await_value(redis, token_key("hr"), token_of(first), 5s);
  std::cout << "[ figures  ] Redis restarted empty: " << (caught_up ? "token back after " : "")
            << (caught_up ? std::to_string(elapsed_ms(back_at)) + " ms" : "no token in 5 s")
            << "; gettoken calls: " << fake_->gettoken_calls(hr.secret) << "\n";
  EXPECT_TRUE(caught_up) << "the broker did not write its token back to the returned Redis";
  expect_no_later_than_true_expiry(redis, "hr");
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

// Catching up writes only if newer: a replica that refreshed while Redis was away must not
// overwrite a token with a later expiry that another replica wrote meanwhile.
TEST_F(redis_test, a_returning_redis_keeps_a_newer_token_written_meanwhile) {
  constexpr auto lifetime = 6s;
  constexpr auto watched = 10s;
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  redis_process redis_server(free_port(), scratch_.path());
  const auto& broker = start_broker(
      redis_config(redis_url(redis_server.port()), {{"refresh", {{"min_interval_s", 1}}}}));
  http_answer first;
  ASSERT_NO_FATAL_FAILURE(await_first_token_in_redis(broker, redis_server.port(), first));

  // The broker refreshes while Redis is away, so it has a token Redis has not seen.
  redis_server.stop();
  http_answer refreshed;
  const auto give_up_at = steady_clock::now() + lifetime;
  while (steady_clock::now() < give_up_at) {
    refreshed = get_token(broker, "hr");
    if (refreshed.status == 200 && token_of(refreshed) != token_of(first)) break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(refreshed.status, 200u) << refreshed.error << refreshed.body;
  ASSERT_NE(token_of(refreshed), token_of(first)) << "no refresh while Redis was away";

  // Another replica's token, two minutes later than anything this broker can hold, written
  // the moment Redis is back: before this broker's reconnection backoff has run out.
  redis_server.start();
  redis_client redis(redis_server.port());
  const std::string newer = "token-written-by-another-replica";
  const auto newer_expiry_ms = unix_ms_now() + 120'000;
  redis.command({"SET", token_key("hr"), newer, "PXAT", std::to_string(newer_expiry_ms)});

  int overwritten = 0;
  const auto watch_started = steady_clock::now();
  while (steady_clock::now() - watch_started < watched) {
    if (redis.get(token_key("hr")) != newer) ++overwritten;
    std::this_thread::sleep_for(100ms);
  }
  const auto stored = redis.get_with_pttl(token_key("hr"));
  const auto clients = redis.command({"CLIENT", "LIST"}).string;
  const auto connections = std::count(clients.begin(), clients.end(), '\n');
  std::cout << "[ figures  ] newer token watched for " << watched.count() << " s: overwritten in "
            << overwritten << " samples; Redis connections: " << connections
            << "; gettoken calls: " << fake_->gettoken_calls(hr.secret) << "\n";
  EXPECT_GE(connections, 2) << "the broker never reconnected, so this proves nothing:\n" << clients;
  EXPECT_EQ(overwritten, 0);
  EXPECT_EQ(stored.value, newer);
  EXPECT_NEAR(static_cast<double>(unix_ms_now() + stored.pttl),
              static_cast<double>(newer_expiry_ms), 1500.0)
      << "the newer token's expiry was changed";
}

TEST_F(redis_test, a_broker_with_redis_unreachable_from_the_start_serves_from_memory) {
  constexpr auto lifetime = 4s;
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  const auto nobody_listens = free_port();
  const auto& broker =
      start_broker(redis_config(redis_url(nobody_listens), {{"refresh", {{"min_interval_s", 1}}}}));
  const auto first = await_token(broker, "hr", 5s);
  ASSERT_EQ(first.status, 200u) << first.error << first.body;

  // A lifetime and a half: it refreshes from memory too.
  int served = 0, failed = 0;
  const auto started = steady_clock::now();
  while (steady_clock::now() - started < lifetime * 3 / 2) {
    const auto answer = get_token(broker, "hr");
    if (answer.status == 200 && fake_->check(token_of(answer)) == token_status::valid) {
      ++served;
    } else {
      ++failed;
      ADD_FAILURE() << "no valid token without Redis: " << answer.status << " " << answer.error
                    << " " << answer.body;
    }
    std::this_thread::sleep_for(50ms);
  }
  std::cout << "[ figures  ] no Redis from the start: served=" << served << " failed=" << failed
            << " gettoken=" << fake_->gettoken_calls(hr.secret) << "\n";
  EXPECT_EQ(failed, 0);
  EXPECT_GE(fake_->gettoken_calls(hr.secret), 2) << "no refresh without Redis";
}

// A secret rotated at one replica by SIGHUP: that replica fetches with the new secret at once
// instead of adopting the token in Redis (which the old secret brought), and the replica not
// yet reloaded adopts the new token from Redis.
TEST_F(redis_test, a_secret_rotated_by_reload_is_used_at_once_and_shared_through_redis) {
  const auto hr = add_app("hr");
  const auto replicas = start_replicas(2);
  const auto old_token = token_of(await_token(*replicas[0], "hr", 5s));
  ASSERT_EQ(token_of(await_token(*replicas[1], "hr", 5s)), old_token);
  const auto scraped = http_get(replicas[0]->port(), "/metrics");
  EXPECT_EQ(metric_sample(scraped.body, "token_broker_redis_up"), 1);

  const std::string new_secret = hr.secret + "-rotated";
  fake_->add_app(corpid, new_secret);
  forbid_in_logs(new_secret, "the rotated secret");
  auto rotated = redis_config(redis_url(keys_->port()));
  rotated["listen"] = "127.0.0.1:" + std::to_string(replicas[0]->port());
  rotated["apps"]["hr"]["secret"] = new_secret;
  reload_broker(*replicas[0], rotated);

  const auto after = await_token(*replicas[0], "hr", 5s);
  ASSERT_EQ(after.status, 200u) << after.error << after.body;
  const auto new_token = token_of(after);
  EXPECT_NE(new_token, old_token);
  EXPECT_EQ(fake_->gettoken_calls(new_secret), 1);
  EXPECT_TRUE(await_value(keys_->client(), token_key("hr"), new_token, 3s));
  bool adopted = false;
  for (int i = 0; i < 100 && !adopted; ++i) {
    adopted = token_of(get_token(*replicas[1], "hr")) == new_token;
    if (!adopted) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(adopted) << "the replica not reloaded kept the old token";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1) << "the old secret was not used again";
  EXPECT_EQ(fake_->gettoken_calls(new_secret), 1);
}

TEST_F(redis_test, a_password_and_a_database_in_the_url_are_used_and_the_password_never_logged) {
  const auto hr = add_app("hr");
  const std::string password = "Redis-Pw-" + std::to_string(free_port()) + "-q7";
  forbid_in_logs(password, "the Redis password");
  redis_process redis_server(free_port(), scratch_.path(), {"--requirepass", password});
  const auto& broker = start_broker(redis_config(
      "redis://:" + password + "@127.0.0.1:" + std::to_string(redis_server.port()) + "/3"));
  const auto answer = await_token(broker, "hr", 5s);
  ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;

  redis_client database_3(redis_server.port(), password, 3);
  EXPECT_TRUE(await_value(database_3, token_key("hr"), token_of(answer), 3s))
      << "the token did not land in database 3";
  redis_client database_0(redis_server.port(), password, 0);
  EXPECT_FALSE(database_0.get(token_key("hr")).has_value()) << "written to database 0";
  std::cout << "[ figures  ] password-protected Redis, database 3; gettoken calls: "
            << fake_->gettoken_calls(hr.secret) << "\n";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

TEST_F(redis_test, a_unix_socket_url_reaches_redis) {
  const auto hr = add_app("hr");
  // The fixture's server listens on DIR/redis.sock as well as on its TCP port.
  const std::string socket =
      std::string(std::getenv("TOKEN_BROKER_TEST_REDIS_DIR")) + "/redis.sock";
  const auto& broker = start_broker(redis_config("unix://" + socket));
  const auto answer = await_token(broker, "hr", 5s);
  ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;
  EXPECT_TRUE(await_value(keys_->client(), token_key("hr"), token_of(answer), 3s))
      << "the token did not reach Redis over the unix socket";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

// ---- Clocks that differ between hosts (SPEC §1 "Time") ----

// The environment of a broker whose host's wall clock is off by `offset`: libfaketime shifts
// CLOCK_REALTIME only (DONT_FAKE_MONOTONIC also leaves CLOCK_BOOTTIME, the broker's clock,
// alone), as on a host whose NTP is broken.
std::vector<std::string> wall_clock_off_by(std::chrono::seconds offset) {
  static const std::string library = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
  if (!std::filesystem::exists(library)) {
    throw std::runtime_error(library + " is missing: install Debian's libfaketime");
  }
  std::vector<std::string> environment{"LD_PRELOAD=" + library,
                                       "FAKETIME=" + std::string(offset.count() >= 0 ? "+" : "") +
                                           std::to_string(offset.count()) + "s",
                                       "DONT_FAKE_MONOTONIC=1"};
  if (testing::under_address_sanitizer) {
    // libfaketime is loaded ahead of ASan's runtime, which ASan (as g++ links it, a shared
    // library) refuses unless told it is fine.
    const char* options = std::getenv("ASAN_OPTIONS");
    environment.push_back("ASAN_OPTIONS=" + std::string(options ? options : "") +
                          ":verify_asan_link_order=0");
  }
  return environment;
}

class redis_clock_test : public redis_test {
 protected:
  // Starts a broker whose wall clock is off by `offset` and checks that it is: its answer's
  // expires_at (wall clock) and expires_in (its own boot clock) disagree with the true
  // wall clock by that much. Otherwise faketime did nothing and the test would prove nothing.
  broker_process& start_skewed_broker(const json& config, std::chrono::seconds offset,
                                      const std::string& app) {
    auto& broker = start_broker(config, std::nullopt, wall_clock_off_by(offset));
    const auto answer = await_token(broker, app, 5s);
    EXPECT_EQ(answer.status, 200u) << answer.error << answer.body;
    if (answer.status == 200) {
      const auto expires_in = json::parse(answer.body).at("expires_in").get<std::int64_t>();
      const auto skew = expires_at_of(answer) - expires_in - unix_ms_now() / 1000;
      EXPECT_NEAR(static_cast<double>(skew), static_cast<double>(offset.count()), 1.5)
          << "the broker's wall clock is not off as asked: is libfaketime preloaded?";
    }
    return broker;
  }

  // The key's PTTL against the true time left of the token it holds, per the fake: never
  // more, and less only by the latency of the call that fetched it.
  void expect_true_time_left_in_redis(const std::string& app, const std::string& token) {
    const auto read_from = unix_ms_now();
    const auto stored = keys_->client().get_with_pttl(token_key(app));
    ASSERT_EQ(stored.value, token);
    const auto true_expiry = fake_->expires_at(token);
    ASSERT_TRUE(true_expiry.has_value());
    const auto true_left = unix_ms(*true_expiry) - read_from;
    std::cout << "[ figures  ] PTTL " << stored.pttl << " ms, true time left " << true_left
              << " ms\n";
    EXPECT_LE(stored.pttl, true_left) << "Redis keeps the token past its true expiry";
    EXPECT_GE(stored.pttl, true_left - 500) << "Redis loses the token before its true expiry";
  }
};

// A replica whose wall clock runs 5 s fast writes a token: Redis must hold it for its true
// life, and a replica that adopts it after the writer stopped must not serve it past its true
// expiry (before the fix: PTTL 11 s for a 6-second token, and the adopter served it for 5 s
// after WeCom had let it go).
TEST_F(redis_clock_test, a_fast_clock_neither_stretches_the_key_nor_an_adopted_token) {
  constexpr auto lifetime = 6s;
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  // Refresh only 1 s before the expiry believed: a stretched expiry shows as a served token
  // that WeCom rejects, not hidden by an early refresh.
  const auto config =
      redis_config(redis_url(keys_->port()),
                   {{"refresh", {{"ahead_s", 1}, {"jitter_s", 0}, {"min_interval_s", 0}}}});
  auto& writer = start_skewed_broker(config, 5s, "hr");
  const auto written = token_of(await_token(writer, "hr", 1s));
  ASSERT_TRUE(await_value(keys_->client(), token_key("hr"), written, 3s));
  expect_true_time_left_in_redis("hr", written);
  EXPECT_EQ(writer.stop(SIGTERM, 5s), 0);

  const auto& adopter = start_broker(config);
  const auto true_expiry = *fake_->expires_at(written);
  int served = 0, served_adopted = 0, rejected = 0;
  while (system_clock::now() < true_expiry + 1500ms) {
    const auto answer = get_token(adopter, "hr");
    if (answer.status == 200) {
      const auto token = token_of(answer);
      ++served;
      if (token == written) ++served_adopted;
      if (fake_->check(token) != token_status::valid) {
        ++rejected;
        if (rejected == 1) {
          ADD_FAILURE() << "served a token WeCom rejects (" << fake::to_string(fake_->check(token))
                        << "), " << unix_ms_now() - unix_ms(true_expiry)
                        << " ms after its true expiry";
        }
      }
    }
    std::this_thread::sleep_for(50ms);
  }
  std::cout << "[ figures  ] adopter: served=" << served
            << " of the adopted token=" << served_adopted << " rejected=" << rejected
            << " gettoken=" << fake_->gettoken_calls(hr.secret) << "\n";
  EXPECT_GT(served_adopted, 0) << "the token in Redis was not adopted";
  EXPECT_EQ(rejected, 0);
  EXPECT_GE(fake_->gettoken_calls(hr.secret), 2) << "the adopter never refreshed";
}

// A replica whose wall clock runs 5 s slow writes a token: Redis must keep it its whole life
// (before the fix: PTTL 7195 s for a 7200-second token), and a slow replica adopting it must
// not count on more time than it has.
TEST_F(redis_clock_test, a_slow_clock_neither_shortens_the_key_nor_stretches_an_adopted_token) {
  const auto hr = add_app("hr");
  const auto config = redis_config(redis_url(keys_->port()));
  auto& writer = start_skewed_broker(config, -5s, "hr");
  const auto written = token_of(await_token(writer, "hr", 1s));
  ASSERT_TRUE(await_value(keys_->client(), token_key("hr"), written, 3s));
  expect_true_time_left_in_redis("hr", written);
  EXPECT_EQ(writer.stop(SIGTERM, 5s), 0);

  const auto& adopter = start_skewed_broker(config, -5s, "hr");
  const auto answer = get_token(adopter, "hr");
  ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;
  EXPECT_EQ(token_of(answer), written) << "the token in Redis was not adopted";
  const auto true_left_s = (unix_ms(*fake_->expires_at(written)) - unix_ms_now()) / 1000.0;
  const auto expires_in = json::parse(answer.body).at("expires_in").get<double>();
  std::cout << "[ figures  ] adopter's expires_in " << expires_in << " s, true time left "
            << true_left_s << " s\n";
  EXPECT_LE(expires_in, true_left_s) << "the adopter counts on time the token does not have";
  EXPECT_GE(expires_in, true_left_s - 2) << "the adopter shortened the token";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

// ---- Redis traffic and the number of apps (issue 13, defect 3) ----

// INFO commandstats as command → calls. Commands that scripts run count too, under their own
// names; a round trip from the broker is one EVALSHA or EVAL (or SCRIPT, SUBSCRIBE).
std::map<std::string, long long> command_calls(redis_client& redis) {
  std::map<std::string, long long> calls;
  const auto info = redis.command({"INFO", "commandstats"}).string;
  for (const auto& line : split(info, '\n')) {
    // cmdstat_evalsha:calls=12,usec=…
    const auto colon = line.find(':');
    if (line.rfind("cmdstat_", 0) != 0 || colon == std::string::npos) continue;
    const auto value = line.find("calls=", colon);
    if (value == std::string::npos) continue;
    calls[line.substr(8, colon - 8)] = std::stoll(line.substr(value + 6));
  }
  return calls;
}

long long calls_of(const std::map<std::string, long long>& calls, const std::string& command) {
  const auto found = calls.find(command);
  return found == calls.end() ? 0 : found->second;
}

// The broker's round trips: every script it runs, and whatever else a connection sends.
long long round_trips(const std::map<std::string, long long>& calls) {
  return calls_of(calls, "evalsha") + calls_of(calls, "eval") + calls_of(calls, "script|load") +
         calls_of(calls, "subscribe");
}

std::string describe(const std::map<std::string, long long>& calls) {
  std::string text;
  for (const auto& [command, count] : calls) {
    text += (text.empty() ? "" : " ") + command + "=" + std::to_string(count);
  }
  return text.empty() ? "none" : text;
}

class redis_traffic_test : public redis_test {
 protected:
  // Registers `count` apps with the fake ("app0", "app1", …) and writes a token with two
  // hours left for each into the Redis on `port`, so brokers start by adopting them.
  void add_apps_with_tokens_in_redis(int count, std::uint16_t port) {
    redis_client redis(port);
    std::vector<std::string> command{"EVAL",
                                     "for i, key in ipairs(KEYS) do "
                                     "redis.call('SET', key, ARGV[i], 'PX', 7200000) end",
                                     std::to_string(count)};
    std::vector<std::string> tokens;
    for (int i = 0; i < count; ++i) {
      const auto app = add_app("app" + std::to_string(i));
      command.push_back(token_key(app.id));
      tokens.push_back("stored-token-" + std::to_string(i));
    }
    command.insert(command.end(), tokens.begin(), tokens.end());
    ASSERT_NE(redis.command(command).type, redis_reply::kind::error);
  }

  // A broker for the first `count` apps on the Redis at `port`.
  broker_process& start_broker_for_apps(int count, std::uint16_t port) {
    auto config = redis_config(redis_url(port));
    json apps = json::object();
    for (int i = 0; i < count; ++i) {
      const auto id = "app" + std::to_string(i);
      apps[id] = config["apps"][id];
    }
    config["apps"] = apps;
    return start_broker(config);
  }

  // Waits until every app of the broker is fresh; the count of fresh apps.
  static std::size_t await_all_fresh(const broker_process& broker, std::size_t count,
                                     milliseconds limit) {
    const auto give_up_at = steady_clock::now() + limit;
    std::size_t fresh = 0;
    do {
      const auto listed = http_get(broker.port(), "/v1/apps");
      fresh = 0;
      if (listed.status == 200) {
        for (const auto& app : json::parse(listed.body)) fresh += app["state"] == "fresh";
      }
      if (fresh == count) break;
      std::this_thread::sleep_for(100ms);
    } while (steady_clock::now() < give_up_at);
    return fresh;
  }
};

// Every app used to poll Redis every 5 s with the whole Lua text (EVAL): 2,000 apps made 400
// EVAL/s per replica. Now nothing is polled per app: two brokers, one with 4 times the apps
// of the other, make the same (next to no) traffic in steady state, by EVALSHA.
TEST_F(redis_traffic_test, steady_traffic_does_not_grow_with_the_number_of_apps) {
  constexpr int few = 500, many = 2000;
  constexpr auto window = 6s;  // longer than the 5 s poll of every app before the fix
  redis_process small_redis(free_port(), scratch_.path());
  redis_process large_redis(free_port(), scratch_.path());
  ASSERT_NO_FATAL_FAILURE(add_apps_with_tokens_in_redis(many, large_redis.port()));
  {
    redis_client redis(large_redis.port());
    std::vector<std::string> copy{"MIGRATE", "127.0.0.1", std::to_string(small_redis.port()),
                                  "",        "0",         "5000",
                                  "COPY",    "KEYS"};
    for (int i = 0; i < few; ++i) copy.push_back(token_key("app" + std::to_string(i)));
    ASSERT_NE(redis.command(copy).type, redis_reply::kind::error);
  }
  const auto& small = start_broker_for_apps(few, small_redis.port());
  const auto& large = start_broker_for_apps(many, large_redis.port());
  ASSERT_EQ(await_all_fresh(small, few, 10s), static_cast<std::size_t>(few));
  ASSERT_EQ(await_all_fresh(large, many, 10s), static_cast<std::size_t>(many));
  EXPECT_EQ(fake_->gettoken_calls(), 0) << "the tokens in Redis were not adopted";

  redis_client small_stats(small_redis.port()), large_stats(large_redis.port());
  const auto started = command_calls(large_stats);
  EXPECT_GT(calls_of(started, "evalsha"), 0) << describe(started);
  small_stats.command({"CONFIG", "RESETSTAT"});
  large_stats.command({"CONFIG", "RESETSTAT"});
  std::this_thread::sleep_for(window);  // the window measured
  const auto small_calls = command_calls(small_stats);
  const auto large_calls = command_calls(large_stats);
  const auto per_second = [&](const auto& calls) {
    return static_cast<double>(round_trips(calls)) / static_cast<double>(window.count());
  };
  std::cout << "[ figures  ] at start (" << many << " apps): " << describe(started) << "\n"
            << "[ figures  ] steady state, " << few << " apps: " << per_second(small_calls)
            << " round trips/s (" << describe(small_calls) << ")\n"
            << "[ figures  ] steady state, " << many << " apps: " << per_second(large_calls)
            << " round trips/s (" << describe(large_calls) << ")\n";
  EXPECT_LE(per_second(large_calls), per_second(small_calls) + 1.0)
      << "Redis traffic grows with the number of apps";
  EXPECT_LE(per_second(large_calls), 1.0);
  EXPECT_EQ(calls_of(large_calls, "eval"), 0) << "scripts are sent by SHA1 (EVALSHA)";
}

// Redis restarts empty under a broker with 2,000 apps: writing back the held tokens and
// catching up take a few scripts per batch of keys, not a save and a load per app.
TEST_F(redis_traffic_test, a_reconnect_costs_commands_by_batches_not_by_apps) {
  constexpr int apps = 2000;
  constexpr int batches = 2;  // of up to 1,000 keys
  redis_process redis_server(free_port(), scratch_.path());
  ASSERT_NO_FATAL_FAILURE(add_apps_with_tokens_in_redis(apps, redis_server.port()));
  const auto& broker = start_broker_for_apps(apps, redis_server.port());
  ASSERT_EQ(await_all_fresh(broker, apps, 10s), static_cast<std::size_t>(apps));

  redis_server.stop();
  redis_server.start();  // empty, and its command statistics with it
  redis_client redis(redis_server.port());
  const auto back_at = steady_clock::now();
  long long keys = 0;
  while (keys < apps && steady_clock::now() - back_at < 10s) {
    keys = redis.command({"DBSIZE"}).integer;
    if (keys < apps) std::this_thread::sleep_for(50ms);
  }
  const auto caught_up_ms = elapsed_ms(back_at);
  ASSERT_EQ(keys, apps) << "the held tokens were not written back";
  // What the catching up costs, including what it sets off (events echoed back, a second
  // connection's sweep): measured over a second more.
  std::this_thread::sleep_for(1s);
  const auto calls = command_calls(redis);
  std::cout << "[ figures  ] Redis restarted empty under " << apps << " apps: keys back after "
            << caught_up_ms << " ms; " << round_trips(calls) << " round trips (" << describe(calls)
            << ")\n";
  EXPECT_LE(round_trips(calls), 12 * batches + 8) << "a reconnect storm";
  EXPECT_EQ(calls_of(calls, "eval"), 0) << "scripts are sent by SHA1 (EVALSHA)";
  EXPECT_EQ(fake_->gettoken_calls(), 0);
  for (const auto* app : {"app0", "app1999"}) {
    EXPECT_EQ(redis.get(token_key(app)), "stored-token-" + std::string(app).substr(3)) << app;
  }
}

// A Redis whose script cache was flushed (SCRIPT FLUSH, or a restart) answers EVALSHA with
// NOSCRIPT: the broker sends the script's text once and carries on.
TEST_F(redis_traffic_test, a_flushed_script_cache_is_refilled_by_eval) {
  const auto hr = add_app("hr");
  redis_process redis_server(free_port(), scratch_.path());
  redis_client redis(redis_server.port());
  const auto& broker = start_broker(redis_config(redis_url(redis_server.port())));
  http_answer first;
  ASSERT_NO_FATAL_FAILURE(await_first_token_in_redis(broker, redis_server.port(), first));

  redis.command({"SCRIPT", "FLUSH"});
  redis.command({"CONFIG", "RESETSTAT"});
  fake_->revoke_tokens(hr.secret);
  const auto replaced =
      http_call(broker.port(), {.method = "POST",
                                .target = "/v1/apps/hr/token/invalidate",
                                .body = json{{"access_token", token_of(first)}}.dump()});
  ASSERT_EQ(replaced.status, 200u) << replaced.error << replaced.body;
  EXPECT_NE(token_of(replaced), token_of(first));
  EXPECT_TRUE(await_value(redis, token_key("hr"), token_of(replaced), 3s))
      << "the new token did not reach Redis after SCRIPT FLUSH";
  const auto calls = command_calls(redis);
  const auto errors = redis.command({"INFO", "errorstats"}).string;
  std::cout << "[ figures  ] after SCRIPT FLUSH: " << describe(calls) << "\n";
  EXPECT_GT(calls_of(calls, "evalsha"), 0) << "scripts are sent by SHA1 (EVALSHA)";
  EXPECT_GT(calls_of(calls, "eval"), 0) << "no fallback to EVAL";
  EXPECT_NE(errors.find("errorstat_NOSCRIPT"), std::string::npos) << errors;
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 2);
}

}  // namespace
}  // namespace token_broker::testing
