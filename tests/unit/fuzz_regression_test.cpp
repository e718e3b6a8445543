// What the fuzz targets (fuzz/) found, each input kept as a test of the function it broke.
// The same inputs are seeds in fuzz/corpus/<target>/, named in each test.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "token_broker/upstream_answer.hpp"

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
  const auto parsed =
      parse_gettoken_answer(200, nlohmann::json{{"errcode", 40014}, {"errmsg", errmsg}}.dump());
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
  const auto parsed = parse_gettoken_answer(
      200, R"({"errcode":4294967296,"errmsg":"not ok","access_token":"t","expires_in":7200})");
  ASSERT_TRUE(std::holds_alternative<fetch_failure>(parsed));
  EXPECT_EQ(std::get<fetch_failure>(parsed).errcode, local_failure_errcode);

  const auto negative = parse_gettoken_answer(200, R"({"errcode":-4294967296,"errmsg":"x"})");
  EXPECT_EQ(std::get<fetch_failure>(negative).errcode, local_failure_errcode);
}

}  // namespace
}  // namespace token_broker
