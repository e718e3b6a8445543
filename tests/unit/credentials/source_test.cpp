// What each credential source asks WeCom for and how it reads the answer: the service
// provider's and an authorized corp's token (POSTs with JSON bodies, as WeCom's service APIs
// take them).
#include "token_broker/credentials/source.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace token_broker {
namespace {

upstream_response answer(std::string body) {
  return upstream_response{.status = 200, .body = std::move(body)};
}

TEST(provider_token_source, posts_corpid_and_provider_secret_and_reads_the_provider_token) {
  const provider_token_source source(std::make_shared<const provider_config>(
      provider_config{.id = "isv", .corpid = "wwprovider", .provider_secret = "s3cr+t/&"}));
  EXPECT_FALSE(source.dependency());
  const auto request = source.request("");
  EXPECT_EQ(request.method, http::verb::post);
  EXPECT_EQ(request.target, "/cgi-bin/service/get_provider_token");
  ASSERT_TRUE(request.json_body);
  EXPECT_EQ(nlohmann::json::parse(*request.json_body),
            (nlohmann::json{{"corpid", "wwprovider"}, {"provider_secret", "s3cr+t/&"}}));

  const auto read = source.read(answer(
      R"({"errcode":0,"errmsg":"ok","provider_access_token":"enLSZ5xxxxxxJRL","expires_in":7200})"));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(read));
  EXPECT_EQ(std::get<fetched_token>(read).value, "enLSZ5xxxxxxJRL");
  EXPECT_EQ(std::get<fetched_token>(read).expires_in, std::chrono::seconds(7200));

  const auto refused = source.read(answer(R"({"errcode":40089,"errmsg":"invalid secret"})"));
  ASSERT_TRUE(std::holds_alternative<fetch_failure>(refused));
  EXPECT_EQ(std::get<fetch_failure>(refused).errcode, 40089);
}

TEST(corp_token_source, posts_with_the_suite_token_and_reads_the_corps_access_token) {
  const corp_token_source source("crm-suite", "wwcorpA", "permanent-code");
  EXPECT_EQ(source.dependency(), (credential_id{credential_kind::suite_token, "crm-suite"}));
  const auto request = source.request("suite token/+");
  EXPECT_EQ(request.method, http::verb::post);
  EXPECT_EQ(request.target,
            "/cgi-bin/service/get_corp_token?suite_access_token=suite%20token%2F%2B");
  ASSERT_TRUE(request.json_body);
  EXPECT_EQ(nlohmann::json::parse(*request.json_body),
            (nlohmann::json{{"auth_corpid", "wwcorpA"}, {"permanent_code", "permanent-code"}}));

  const auto read = source.read(
      answer(R"({"errcode":0,"errmsg":"ok","access_token":"corp-token","expires_in":7200})"));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(read));
  EXPECT_EQ(std::get<fetched_token>(read).value, "corp-token");
}

}  // namespace
}  // namespace token_broker
