// The gateway through the real binary against the fake of WeCom (issue 15, SPEC §8): bodies
// byte-identical both ways (JSON, multipart, binary), the caller's token replaced by the
// app's, a revoked token retried exactly once, the drop-in keyed by tokens the broker handed
// out, the body cap, a hanging upstream cut at the deadline, the budget, and what operators
// see. No token may reach the broker's output (the fixture checks every one seen).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "broker_fixture.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string random_bytes(std::size_t size, unsigned seed) {
  std::mt19937 generator(seed);
  std::string bytes(size, '\0');
  for (auto& byte : bytes) byte = static_cast<char>(generator());
  return bytes;
}

class gateway_test : public broker_fixture {
 protected:
  // A broker with the gateway on, `gateway` merged into its settings, serving app "hr".
  broker_process& start_gateway(const json& gateway = json::object()) {
    hr_ = add_app("hr");
    json settings{{"enabled", true}, {"timeout_ms", 2000}};
    settings.merge_patch(gateway);
    return start_broker(make_config(free_port(), {{"gateway", settings}, {"log_level", "debug"}}));
  }

  // The app's token as a service would get it, kept for the log check.
  std::string handed_out_token(const broker_process& broker) {
    auto token = token_of(get_token(broker, "hr"));
    forbid_in_logs(token, "an access_token handed out");
    return token;
  }

  http_answer api(const broker_process& broker, http_exchange exchange) {
    exchange.target = "/v1/apps/hr/api/" + exchange.target;
    return http_call(broker.port(), exchange);
  }

  // The last call the fake saw.
  fake::api_call last_call() const {
    const auto calls = fake_->api_calls();
    if (calls.empty()) throw std::runtime_error("the fake saw no API call");
    return calls.back();
  }

  app_spec hr_;
};

TEST_F(gateway_test, json_multipart_and_binary_bodies_arrive_byte_identical_both_ways) {
  const auto& broker = start_gateway();

  // JSON, with headers a caller must not pass on.
  const json message{{"touser", "zhangsan"},
                     {"msgtype", "text"},
                     {"agentid", 1000002},
                     {"text", {{"content", "你好, \"gateway\" \\ ok"}}}};
  const auto sent = api(broker, {.method = "POST",
                                 .target = "cgi-bin/message/send?debug=1",
                                 .body = message.dump(),
                                 .headers = {{"Content-Type", "application/json"},
                                             {"Authorization", "Bearer caller-key"},
                                             {"Cookie", "session=caller"}}});
  ASSERT_EQ(sent.status, 200u) << sent.body;
  EXPECT_EQ(json::parse(sent.body)["errcode"], 0);
  EXPECT_EQ(sent.headers.at("cache-control"), "no-store");
  auto call = last_call();
  EXPECT_EQ(call.method, "POST");
  EXPECT_EQ(call.path, "/cgi-bin/message/send");
  EXPECT_TRUE(call.token_ok);
  EXPECT_EQ(call.token_app, corpid);
  EXPECT_EQ(call.query_keys, (std::vector<std::string>{"access_token", "debug"}));
  EXPECT_EQ(call.content_type, "application/json");
  EXPECT_EQ(call.body_sha256, fake::sha256_hex(message.dump()));
  for (const auto* header : {"authorization", "cookie"}) {
    EXPECT_EQ(std::count(call.headers.begin(), call.headers.end(), header), 0) << header;
  }

  // Multipart up, binary down.
  const auto file = random_bytes(1024 * 1024 + 17, 15);
  const std::string boundary = "----token-broker-test-boundary";
  const std::string multipart = "--" + boundary +
                                "\r\nContent-Disposition: form-data; name=\"media\"; "
                                "filename=\"report.bin\"; filelength=" +
                                std::to_string(file.size()) +
                                "\r\nContent-Type: application/octet-stream\r\n\r\n" + file +
                                "\r\n--" + boundary + "--\r\n";
  const auto uploaded =
      api(broker, {.method = "POST",
                   .target = "cgi-bin/media/upload?type=file",
                   .body = multipart,
                   .headers = {{"Content-Type", "multipart/form-data; boundary=" + boundary}}});
  ASSERT_EQ(uploaded.status, 200u) << uploaded.body;
  ASSERT_TRUE(json::parse(uploaded.body).contains("media_id")) << uploaded.body;
  const auto media_id = json::parse(uploaded.body).at("media_id").get<std::string>();
  EXPECT_EQ(last_call().body_sha256, fake::sha256_hex(multipart));
  const auto downloaded = api(broker, {.target = "cgi-bin/media/get?media_id=" + media_id});
  ASSERT_EQ(downloaded.status, 200u);
  EXPECT_EQ(fake::sha256_hex(downloaded.body), fake::sha256_hex(file));
  EXPECT_NE(downloaded.headers.at("content-disposition").find("report.bin"), std::string::npos);

  // Larger than any buffer on the way: streamed, not held.
  constexpr std::size_t large = 24 * 1024 * 1024 + 5;
  const auto streamed =
      api(broker, {.target = "cgi-bin/media/get?media_id=generated-" + std::to_string(large)});
  ASSERT_EQ(streamed.status, 200u) << streamed.error;
  ASSERT_EQ(streamed.body.size(), large);
  EXPECT_EQ(fake::sha256_hex(streamed.body), fake::sha256_hex(fake::generated_media(0, large)));
}

TEST_F(gateway_test, the_callers_token_is_replaced_by_the_apps_current_one) {
  const auto& broker = start_gateway();
  const auto answer =
      api(broker, {.target = "cgi-bin/user/get?access_token=stale-or-stolen&userid=zhangsan"});
  ASSERT_EQ(answer.status, 200u) << answer.body;
  EXPECT_EQ(json::parse(answer.body)["userid"], "zhangsan");
  const auto call = last_call();
  EXPECT_TRUE(call.token_ok) << "the app's token, not the caller's";
  EXPECT_EQ(call.query_keys, (std::vector<std::string>{"access_token", "userid"}))
      << "one access_token only";
}

TEST_F(gateway_test, a_revoked_token_is_reported_and_the_call_made_exactly_once_more) {
  const auto& broker = start_gateway();
  handed_out_token(broker);
  const auto gettokens = fake_->gettoken_calls(hr_.secret);
  fake_->revoke_tokens(hr_.secret);
  fake_->clear_api_calls();

  const auto answer = api(broker, {.target = "cgi-bin/user/get?userid=lisi"});
  ASSERT_EQ(answer.status, 200u);
  EXPECT_EQ(json::parse(answer.body)["errcode"], 0) << "the caller sees the second answer only";
  const auto calls = fake_->api_calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_FALSE(calls[0].token_ok);
  EXPECT_TRUE(calls[1].token_ok);
  EXPECT_EQ(fake_->gettoken_calls(hr_.secret), gettokens + 1) << "one refresh";
  handed_out_token(broker);  // the new one, for the log check

  // A token WeCom keeps rejecting is retried once, not forever.
  fake_->revoke_tokens(hr_.secret);
  fake_->clear_api_calls();
  fake_->script_faults(hr_.secret, {});
  EXPECT_EQ(api(broker, {.target = "cgi-bin/user/get?userid=lisi"}).status, 200u);
  EXPECT_LE(fake_->api_calls().size(), 2u);
}

TEST_F(gateway_test, the_drop_in_takes_tokens_the_broker_handed_out_and_no_other) {
  const auto& broker = start_gateway();
  const auto first = handed_out_token(broker);
  // Replaced (WeCom revoked it and a caller reported it): still good for 5 minutes.
  fake_->revoke_tokens(hr_.secret);
  const auto reported = http_call(broker.port(), {.method = "POST",
                                                  .target = "/v1/apps/hr/token/invalidate",
                                                  .body = json{{"access_token", first}}.dump()});
  ASSERT_EQ(reported.status, 200u);
  const auto second = token_of(reported);
  forbid_in_logs(second, "the replacement token");
  ASSERT_NE(first, second);

  fake_->clear_api_calls();
  const auto stale =
      http_get(broker.port(), "/cgi-bin/user/get?access_token=" + first + "&userid=zhangsan");
  ASSERT_EQ(stale.status, 200u);
  EXPECT_EQ(json::parse(stale.body)["userid"], "zhangsan");
  EXPECT_TRUE(last_call().token_ok) << "forwarded with the current token";

  const auto unknown =
      http_get(broker.port(), "/cgi-bin/user/get?access_token=not-from-this-broker&userid=x");
  EXPECT_EQ(json::parse(unknown.body)["errcode"], 40014);
  EXPECT_EQ(fake_->api_calls().size(), 1u) << "no upstream call for an unknown token";
  const auto credential = http_call(
      broker.port(), {.method = "POST", .target = "/cgi-bin/gettoken?access_token=" + second});
  EXPECT_EQ(json::parse(credential.body)["errcode"], 48002) << "credentials are not forwarded";
}

TEST_F(gateway_test, a_body_over_the_cap_is_refused_with_413_and_other_routes_keep_theirs) {
  const auto& broker = start_gateway({{"max_body_bytes", 100000}});
  const auto too_large = api(broker, {.method = "POST",
                                      .target = "cgi-bin/message/send",
                                      .body = std::string(100001, 'x'),
                                      .headers = {{"Content-Type", "application/json"}}});
  EXPECT_EQ(too_large.status, 413u);
  EXPECT_TRUE(fake_->api_calls().empty());
  const auto ordinary = http_call(broker.port(), {.method = "POST",
                                                  .target = "/v1/apps/hr/token/invalidate",
                                                  .body = std::string(50000, 'x')});
  EXPECT_EQ(ordinary.status, 413u) << "only the gateway's routes take large bodies";
  const auto fits = api(broker, {.method = "POST",
                                 .target = "cgi-bin/message/send",
                                 .body = json{{"pad", std::string(99000, 'x')}}.dump(),
                                 .headers = {{"Content-Type", "application/json"}}});
  EXPECT_EQ(fits.status, 200u);
}

TEST_F(gateway_test, a_hanging_upstream_is_answered_504_at_the_deadline) {
  const auto& broker = start_gateway({{"timeout_ms", 600}});
  handed_out_token(broker);
  fake_->hang_api_calls(true);
  const auto answer = api(broker, {.target = "cgi-bin/user/get?userid=x"});
  fake_->hang_api_calls(false);
  EXPECT_EQ(answer.status, 504u) << answer.body;
  EXPECT_EQ(json::parse(answer.body)["error"], "gateway_timeout");
  EXPECT_GE(answer.took, 500ms);
  EXPECT_LT(answer.took, 3s);
  EXPECT_EQ(api(broker, {.target = "cgi-bin/user/get?userid=x"}).status, 200u)
      << "the next call goes through";
}

TEST_F(gateway_test, the_budget_refuses_without_an_upstream_call_and_upstream_limits_pass) {
  const auto& broker = start_gateway({{"budget", {{"per_minute", 3}}}});
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(json::parse(api(broker, {.target = "cgi-bin/user/get?userid=x"}).body)["errcode"], 0);
  }
  const auto refused = api(broker, {.target = "cgi-bin/user/get?userid=x"});
  EXPECT_EQ(refused.status, 200u);
  EXPECT_EQ(json::parse(refused.body)["errcode"], 45009);
  EXPECT_GE(std::stoi(refused.headers.at("retry-after")), 1);
  EXPECT_EQ(fake_->api_calls_by_path()["/cgi-bin/user/get"], 3);
  // Another path has a budget of its own; WeCom's own limit passes through, counted.
  fake_->set_api_limit(corpid, "/cgi-bin/message/send", 1);
  const auto send = [&] {
    return json::parse(api(broker, {.method = "POST",
                                    .target = "cgi-bin/message/send",
                                    .body = R"({"touser":"x","msgtype":"text"})",
                                    .headers = {{"Content-Type", "application/json"}}})
                           .body)["errcode"];
  };
  EXPECT_EQ(send(), 0);
  EXPECT_EQ(send(), 45009);

  const auto page = http_get(broker.port(), "/metrics").body;
  EXPECT_EQ(
      metric_sample(
          page, R"(token_broker_gateway_budget_rejections_total{app="hr",api="cgi-bin/user/get"})"),
      1);
  EXPECT_EQ(
      metric_sample(
          page,
          R"(token_broker_gateway_requests_total{app="hr",api="cgi-bin/user/get",outcome="ok"})"),
      3);
  EXPECT_EQ(
      metric_sample(
          page,
          R"(token_broker_gateway_requests_total{app="hr",api="cgi-bin/message/send",outcome="upstream_limited"})"),
      1);
  EXPECT_GE(metric_sample(page, R"(token_broker_gateway_request_duration_seconds_count{app="hr"})"),
            6);
}

TEST_F(gateway_test, clients_reach_only_their_apps_and_the_gateway_is_off_unless_enabled) {
  hr_ = add_app("hr");
  add_app("crm");
  const std::string key = "gateway-test-client-key";
  forbid_in_logs(key, "a client key");
  const json clients{{"svc", {{"key_sha256", hex_sha256(key)}, {"apps", {"hr"}}}}};
  const auto& broker = start_broker(
      make_config(free_port(), {{"gateway", {{"enabled", true}}}, {"clients", clients}}));
  const auto as_client = [&](const std::string& target) {
    return http_call(broker.port(),
                     {.target = target, .headers = {{"Authorization", "Bearer " + key}}});
  };
  EXPECT_EQ(as_client("/v1/apps/hr/api/cgi-bin/user/get?userid=x").status, 200u);
  EXPECT_EQ(as_client("/v1/apps/crm/api/cgi-bin/user/get?userid=x").status, 403u);
  EXPECT_EQ(http_get(broker.port(), "/v1/apps/hr/api/cgi-bin/user/get").status, 401u);
  EXPECT_EQ(as_client("/v1/apps/hr/api/cgi-bin/../gettoken").status, 400u);
  EXPECT_EQ(as_client("/v1/apps/hr/api/cgi-bin/gettoken").status, 403u);

  const auto& off = start_broker(make_config(free_port()));
  EXPECT_EQ(http_get(off.port(), "/v1/apps/hr/api/cgi-bin/user/get").status, 404u);
  EXPECT_EQ(http_get(off.port(), "/cgi-bin/user/get?access_token=x").status, 404u);
}

}  // namespace
}  // namespace token_broker::testing
