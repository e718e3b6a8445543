// The gateway's budget across replicas sharing a real Redis (issue 15, SPEC §8): the caps
// hold for the fleet, not per replica. The tests share the redis-server of the CTest fixture
// and keep apart by key prefix.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker_fixture.hpp"
#include "redis_keyspace_fixture.hpp"

namespace token_broker::testing {
namespace {

using nlohmann::json;

class gateway_redis_test : public with_redis_keyspace<broker_fixture> {
 protected:
  json replica_config(const json& budget) const {
    auto config = make_config(free_port(), {{"gateway", {{"enabled", true}, {"budget", budget}}}});
    config["redis"] = {{"url", "redis://127.0.0.1:" + std::to_string(keys_->port()) + "/0"},
                       {"key_prefix", prefix_}};
    return config;
  }
};

TEST_F(gateway_redis_test, the_budget_holds_across_two_replicas_on_one_redis) {
  add_app("hr");
  const auto& first = start_broker(replica_config({{"per_minute", 5}}));
  const auto& second = start_broker(replica_config({{"per_minute", 5}}));
  int granted = 0, refused = 0;
  for (int i = 0; i < 12; ++i) {
    const auto& replica = i % 2 == 0 ? first : second;
    const auto answer =
        http_get(replica.port(), "/v1/apps/hr/api/cgi-bin/user/get?userid=u" + std::to_string(i));
    ASSERT_EQ(answer.status, 200u) << answer.body;
    const auto errcode = json::parse(answer.body)["errcode"].get<int>();
    if (errcode == 0) ++granted;
    if (errcode == 45009) {
      ++refused;
      EXPECT_GE(std::stoi(answer.headers.at("retry-after")), 1);
    }
  }
  EXPECT_EQ(granted, 5) << "the fleet's cap, not each replica's";
  EXPECT_EQ(refused, 7);
  EXPECT_EQ(fake_->api_calls_by_path()["/cgi-bin/user/get"], 5);
}

}  // namespace
}  // namespace token_broker::testing
