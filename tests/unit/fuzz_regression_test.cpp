// What the fuzz targets (fuzz/) found, each input kept as a test of the function it broke.
// The same inputs are seeds in fuzz/corpus/<target>/, named in each test.
#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "token_broker/config/config.hpp"
#include "token_broker/redis/redis_replies.hpp"
#include "token_broker/redis/reply_reader.hpp"
#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;

// ---- upstream answers (fuzz_upstream_answer) ----

bool is_valid_utf8(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

// chinese-errmsg.bin: the errmsg was cut at 256 bytes inside a 3-byte character. The 503
// answer carries errmsg as JSON, which refuses broken UTF-8: the broker answered 500 instead.
TEST(fuzz_regression, long_errmsg_is_cut_between_characters) {
  std::string errmsg = "不合法的access_token，";
  for (int i = 0; i < 60; ++i) errmsg += "请检查";
  const auto parsed = parse_credential_answer(
      "access_token", 200, nlohmann::json{{"errcode", 40014}, {"errmsg", errmsg}}.dump());
  const auto& failure = std::get<fetch_failure>(parsed);
  EXPECT_EQ(failure.errcode, 40014);
  EXPECT_LE(failure.errmsg.size(), 256u);
  EXPECT_GE(failure.errmsg.size(), 254u);
  EXPECT_TRUE(errmsg.starts_with(failure.errmsg));
  EXPECT_TRUE(is_valid_utf8(failure.errmsg));
}

// errcode-2-32.bin: get<int>() wrapped errcode 4294967296 to 0, and the failed answer's
// access_token was taken for a token.
TEST(fuzz_regression, errcode_beyond_int_is_not_success) {
  const auto parsed = parse_credential_answer(
      "access_token", 200,
      R"({"errcode":4294967296,"errmsg":"not ok","access_token":"t","expires_in":7200})");
  ASSERT_TRUE(std::holds_alternative<fetch_failure>(parsed));
  EXPECT_EQ(std::get<fetch_failure>(parsed).errcode, local_failure_errcode);

  const auto negative =
      parse_credential_answer("access_token", 200, R"({"errcode":-4294967296,"errmsg":"x"})");
  EXPECT_EQ(std::get<fetch_failure>(negative).errcode, local_failure_errcode);
}

// ---- Redis replies (fuzz_redis_reply) ----

// `resp` as hiredis reads it off a connection: one reply, converted.
redis_reply read_reply(std::string_view resp) {
  reply_reader reader;
  reader.feed(resp);
  auto reply = reader.next();
  if (!reply) ADD_FAILURE() << "not one whole reply";
  return reply.value_or(redis_reply{});
}

// Times left are anchored when the command was sent.
const time_point sent_at = time_point{} + std::chrono::hours{1000};

TEST(fuzz_regression, stored_token_reads_as_written) {
  const auto stored = loaded_token(read_reply("*2\r\n:7199000\r\n$9\r\nTOKEN-abc\r\n"), sent_at);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->value, "TOKEN-abc");
  EXPECT_EQ(stored->expires_at, sent_at + 7199000ms);
}

// far-expiry.resp: the expiry in milliseconds overflowed when converted to the clock's
// nanoseconds (UBSan: signed integer overflow). Now a time left: no key the broker writes has
// more than a token's longest life (30 days).
TEST(fuzz_regression, stored_expiry_beyond_the_clock_is_no_token) {
  EXPECT_FALSE(loaded_token(read_reply("*2\r\n:9223372036854775807\r\n$5\r\nTOKEN\r\n"), sent_at));
  EXPECT_FALSE(loaded_token(read_reply("*2\r\n:2592000001\r\n$5\r\nTOKEN\r\n"), sent_at));
  EXPECT_FALSE(loaded_token(read_reply("*2\r\n:-1\r\n$5\r\nTOKEN\r\n"), sent_at));
  const auto permit = refresh_permit_from(
      read_reply("*4\r\n$4\r\nbusy\r\n:0\r\n:9223372036854775807\r\n$1\r\nT\r\n"), sent_at);
  EXPECT_EQ(permit.permit, refresh_permit::busy);
  EXPECT_FALSE(permit.stored);
}

// non-utf8-token.resp: a stored value the broker never writes (not a plain token) was
// adopted, and publishing it threw from the JSON answers, ending the app's refresher.
TEST(fuzz_regression, stored_value_that_is_no_plain_token_is_no_token) {
  EXPECT_FALSE(loaded_token(read_reply("*2\r\n:7199000\r\n$7\r\nTOKEN\xff\xfe\r\n"), sent_at));
  EXPECT_FALSE(loaded_token(read_reply("*2\r\n:7199000\r\n$0\r\n\r\n"), sent_at));
  EXPECT_FALSE(loaded_token(read_reply("*2\r\n:7199000\r\n:5\r\n"), sent_at));
}

// request-wait-huge.resp: a cool-down's wait beyond the clock's range overflowed the
// refresher's plan, now + wait (UBSan: signed integer overflow).
TEST(fuzz_regression, wait_is_capped_at_a_token_lifetime) {
  const auto permit = refresh_permit_from(
      read_reply("*2\r\n$12\r\ncooling_down\r\n:9223372036854775807\r\n"), sent_at);
  EXPECT_EQ(permit.permit, refresh_permit::cooling_down);
  EXPECT_EQ(permit.wait, std::chrono::milliseconds{std::chrono::days{30}});
}

// ---- the config file (fuzz_config) ----

// The field a config is refused for, or "" when it parses.
std::string refused_field(const std::string& text) {
  try {
    (void)parse_config(text);
  } catch (const config_error& error) {
    return error.field();
  }
  return "";
}

// host-with-nul.json, listen-with-nul.json: inet_pton reads a C string, so "[::1\u0000evil]"
// passed as ::1 while the host kept the NUL and what follows, for the TLS name check and the
// Host header to use.
TEST(fuzz_regression, bracketed_host_with_nul_is_refused) {
  const std::string app = R"("apps":{"hr":{"corpid":"ww1","secret":"s-1"}})";
  EXPECT_EQ(refused_field(R"({"listen":"127.0.0.1:8080","upstream":{"base_url":)"
                          R"("https://[::1\u0000evil]:8443"},)" +
                          app + "}"),
            "upstream.base_url");
  EXPECT_EQ(refused_field(R"({"listen":"127.0.0.1:8080","redis":{"url":)"
                          R"("redis://[::1\u0000x]:6379"},)" +
                          app + "}"),
            "redis.url");
  EXPECT_EQ(refused_field(R"({"listen":"[::1\u0000junk]:8080",)" + app + "}"), "listen");
  EXPECT_EQ(refused_field(R"({"listen":"127.0.0.1\u0000:8080",)" + app + "}"), "listen");
  EXPECT_EQ(refused_field(R"({"listen":"[::1]:8080","upstream":{"base_url":"https://[::1]:8443"},)"
                          R"("redis":{"url":"redis://[::1]:6379"},)" +
                          app + "}"),
            "");
}

}  // namespace
}  // namespace token_broker
