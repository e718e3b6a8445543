// JS-SDK tickets across replicas sharing a real Redis (issue 14, SPEC §5): each ticket fetched
// once for the whole fleet, what readers find in Redis and on the events channel, and the
// ticket call budget counted fleet-wide, through invalidations on every replica and a restart.
//
// The tests share the redis-server of the CTest fixture and keep apart by key prefix.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "redis_keyspace_fixture.hpp"
#include "redis_test_client.hpp"
#include "ticket_fixture.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using fake::fault;
using fake::fault_kind;
using fake::ticket_kind;
using fake::token_status;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

long long unix_ms(system_clock::time_point at) {
  return std::chrono::duration_cast<milliseconds>(at.time_since_epoch()).count();
}

std::string redis_url(std::uint16_t port) {
  return "redis://127.0.0.1:" + std::to_string(port) + "/0";
}

struct ticket_route {
  const char* name;  // in routes and Redis keys
  ticket_kind kind;
  const char* signed_part;  // in a jssdk_signature answer
};
constexpr ticket_route ticket_routes[] = {
    {"jsapi_ticket", ticket_kind::jsapi, "config"},
    {"agent_ticket", ticket_kind::agent_config, "agent_config"}};

class tickets_redis_test : public with_redis_keyspace<ticket_fixture> {
 protected:
  json redis_config(const json& changes) const {
    auto config = make_config(free_port(), changes);
    config["redis"] = {{"url", redis_url(keys_->port())}, {"key_prefix", prefix_}};
    return config;
  }
};

TEST_F(tickets_redis_test, three_replicas_fetch_each_ticket_once_and_share_it_through_redis) {
  const auto hr = add_app("hr");
  // A slow first gettoken: every replica is up and asking while the fleet is still cold.
  fake_->script_faults(hr.secret, {fault{.kind = fault_kind::delay, .delay = 800ms}});
  // Subscribed before the brokers start, so that the first refreshes are heard.
  redis_subscriber events(keys_->port(), prefix_ + "events");
  std::vector<broker_process*> replicas;
  for (int i = 0; i < 3; ++i)
    replicas.push_back(&start_broker(redis_config(both_tickets_for("hr"))));

  std::vector<http_exchange> requests;
  for (int i = 0; i < 15; ++i) {
    requests.push_back({.target = "/v1/apps/hr/jsapi_ticket"});
    requests.push_back({.target = "/v1/apps/hr/agent_ticket"});
    requests.push_back(
        signature_request("hr", {{"url", "https://h5.example.com/page-" + std::to_string(i)}}));
  }
  std::vector<std::vector<http_answer>> answers(replicas.size());
  {
    std::vector<std::jthread> clients;
    for (std::size_t i = 0; i < replicas.size(); ++i) {
      clients.emplace_back(
          [&, i] { answers[i] = http_concurrently(replicas[i]->port(), requests); });
    }
  }  // joins

  std::map<ticket_kind, std::set<std::string>> served;
  int signatures = 0;
  for (const auto& replica_answers : answers) {
    for (std::size_t i = 0; i < replica_answers.size(); ++i) {
      const auto& answer = replica_answers[i];
      ASSERT_EQ(answer.status, 200u) << requests[i].target << ": " << answer.error << answer.body;
      if (i % 3 < 2) {
        served[ticket_routes[i % 3].kind].insert(ticket_of(answer));
        continue;
      }
      const auto body = json::parse(answer.body);
      for (const auto& route : ticket_routes) {
        const auto ticket = signing_ticket(*fake_, hr.secret, route.kind, body, route.signed_part);
        ASSERT_TRUE(ticket) << route.signed_part << ": signed with no ticket WeCom issued";
        served[route.kind].insert(*ticket);
      }
      ++signatures;
    }
  }
  std::cout << "[ figures  ] 3 replicas, " << 3 * requests.size() << " cold requests ("
            << signatures << " signatures checked): gettoken " << fake_->gettoken_calls(hr.secret)
            << ", jsapi " << fake_->ticket_calls(hr.secret, ticket_kind::jsapi) << ", agent_config "
            << fake_->ticket_calls(hr.secret, ticket_kind::agent_config) << "\n";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
  for (const auto& route : ticket_routes) {
    EXPECT_EQ(fake_->ticket_calls(hr.secret, route.kind), 1) << route.name;
    ASSERT_EQ(served[route.kind].size(), 1u) << route.name << ": one ticket across the fleet";
    const auto& ticket = *served[route.kind].begin();
    EXPECT_EQ(fake_->check_ticket(route.kind, ticket), token_status::valid) << route.name;

    // Redis holds the raw ticket, expiring with it.
    const auto fresh = http_get(replicas[0]->port(), std::string("/v1/apps/hr/") + route.name);
    ASSERT_EQ(fresh.status, 200u);
    const auto read_from = unix_ms(system_clock::now());
    const auto stored = keys_->client().get_with_pttl(prefix_ + route.name + ":hr");
    ASSERT_TRUE(stored.value) << prefix_ << route.name << ":hr is missing";
    EXPECT_TRUE(*stored.value == ticket) << route.name << ": Redis holds another ticket";
    EXPECT_NEAR(static_cast<double>(stored.pttl),
                json::parse(fresh.body)["expires_in"].get<double>() * 1000, 1500)
        << route.name;
    const auto true_expiry = fake_->expires_at(ticket);
    ASSERT_TRUE(true_expiry);
    EXPECT_LE(read_from + stored.pttl, unix_ms(*true_expiry))
        << route.name << ": Redis keeps the ticket past its true expiry";
  }

  // Readers hear of each credential by kind.
  std::map<std::string, json> heard;
  const auto give_up_at = steady_clock::now() + 3s;
  while (heard.size() < 3 && steady_clock::now() < give_up_at) {
    const auto message = events.next_message(
        std::chrono::duration_cast<milliseconds>(give_up_at - steady_clock::now()));
    if (!message) break;
    const auto event = json::parse(*message);
    if (event.value("app", "") == "hr") heard[event.value("kind", "")] = event;
  }
  for (const auto* kind : {"access_token", "jsapi_ticket", "agent_ticket"}) {
    ASSERT_TRUE(heard.contains(kind)) << "no event of kind " << kind;
    EXPECT_EQ(heard[kind]["event"], "refreshed") << kind;
  }
  for (const auto& route : ticket_routes) {
    const auto fresh = http_get(replicas[1]->port(), std::string("/v1/apps/hr/") + route.name);
    EXPECT_NEAR(heard[route.name]["expires_at"].get<double>(),
                json::parse(fresh.body)["expires_at"].get<double>(), 1)
        << route.name;
    EXPECT_EQ(heard[route.name].dump().find(ticket_of(fresh)), std::string::npos)
        << "an event carries no ticket";
  }
}

// The budget is the fleet's: invalidations on every replica, and a replica restarted with an
// empty memory, make no more ticket calls than ticket_calls_per_hour together.
TEST_F(tickets_redis_test, the_budget_holds_fleet_wide_through_invalidations_and_a_restart) {
  constexpr int budget = 3;
  const auto hr = add_app("hr");
  auto changes = tickets_for("hr", {"jsapi"});
  changes["refresh"] = {{"ticket_calls_per_hour", budget}, {"min_interval_s", 0}};
  std::vector<json> configs;
  std::vector<broker_process*> replicas;
  for (int i = 0; i < 3; ++i) {
    configs.push_back(redis_config(changes));
    replicas.push_back(&start_broker(configs.back()));
  }
  const auto first = await_ok(*replicas[0], "/v1/apps/hr/jsapi_ticket", 5s);
  ASSERT_EQ(first.status, 200u) << first.body;

  const auto invalidate = [&](const broker_process& replica, const std::string& ticket) {
    return http_call(replica.port(), {.method = "POST",
                                      .target = "/v1/apps/hr/jsapi_ticket/invalidate",
                                      .body = json{{"ticket", ticket}}.dump()});
  };
  // Polls until `replica` serves `ticket` (it has had the event of the replica that fetched it).
  const auto await_ticket = [&](const broker_process& replica, const std::string& ticket) {
    const auto give_up_at = steady_clock::now() + 3s;
    auto answer = http_get(replica.port(), "/v1/apps/hr/jsapi_ticket");
    while (answer.status == 200 && ticket_of(answer) != ticket &&
           steady_clock::now() < give_up_at) {
      std::this_thread::sleep_for(20ms);
      answer = http_get(replica.port(), "/v1/apps/hr/jsapi_ticket");
    }
    return answer.status == 200 && ticket_of(answer) == ticket;
  };
  // Each report goes to the next replica once it holds the ticket reported, so that each one
  // would call upstream if its own count were all that held it back.
  auto held = ticket_of(first);
  for (int i = 0; i < 20; ++i) {
    const auto& replica = *replicas[i % 3];
    ASSERT_TRUE(await_ticket(replica, held)) << "replica " << i % 3 << " never had the ticket";
    const auto answer = invalidate(replica, held);
    ASSERT_EQ(answer.status, 200u) << "invalidation " << i << ": " << answer.body;
    held = ticket_of(answer);
    EXPECT_EQ(fake_->check_ticket(ticket_kind::jsapi, held), token_status::valid) << i;
  }
  const auto calls_key = prefix_ + "calls:jsapi_ticket:hr";
  const int calls = fake_->ticket_calls(hr.secret, ticket_kind::jsapi);
  const auto counted = keys_->client().command({"ZCARD", calls_key}).integer;
  std::cout << "[ figures  ] 3 replicas, 20 invalidations spread over them, "
               "ticket_calls_per_hour="
            << budget << ": " << calls << " ticket calls, " << counted << " counted in Redis\n";
  EXPECT_EQ(calls, budget) << "the first fetch and two invalidations, then none";
  EXPECT_EQ(counted, calls);
  EXPECT_TRUE(held == fake_->issued_tickets(hr.secret, ticket_kind::jsapi).back());
  EXPECT_TRUE(keys_->client().get(prefix_ + "jsapi_ticket:hr") == held);

  // A replica restarts with no memory of the calls made: Redis remembers them for it.
  ASSERT_EQ(replicas[2]->stop(SIGTERM, 5s), 0);
  const auto& restarted = start_broker(configs[2]);
  const auto adopted = await_ok(restarted, "/v1/apps/hr/jsapi_ticket", 5s);
  ASSERT_EQ(adopted.status, 200u) << adopted.body;
  EXPECT_TRUE(ticket_of(adopted) == held) << "adopted from Redis";
  for (int i = 0; i < 3; ++i) {
    const auto answer = invalidate(restarted, held);
    ASSERT_EQ(answer.status, 200u) << answer.body;
    EXPECT_TRUE(ticket_of(answer) == held) << "the held ticket is served on";
  }
  EXPECT_EQ(fake_->ticket_calls(hr.secret, ticket_kind::jsapi), budget);
  EXPECT_EQ(keys_->client().command({"ZCARD", calls_key}).integer, budget);
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

}  // namespace
}  // namespace token_broker::testing
