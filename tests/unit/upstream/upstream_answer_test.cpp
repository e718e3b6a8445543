// Strict parsing of gettoken answers: only WeCom's exact success shape yields a token.
#include "token_broker/upstream/upstream_answer.hpp"

#include <gtest/gtest.h>

namespace token_broker {
namespace {

using namespace std::chrono_literals;

const fetch_failure& failure_of(const std::variant<issued_token, fetch_failure>& parsed) {
  return std::get<fetch_failure>(parsed);
}

TEST(upstream_answer, success) {
  const auto parsed = parse_credential_answer(
      "access_token", 200,
      R"({"errcode":0,"errmsg":"ok","access_token":"abc-DEF_123","expires_in":7200})");
  const auto& answer = std::get<issued_token>(parsed);
  EXPECT_EQ(answer.value, "abc-DEF_123");
  EXPECT_EQ(answer.expires_in, 7200s);
}

TEST(upstream_answer, wecom_errors_keep_errcode_errmsg_and_class) {
  const auto parsed = parse_credential_answer(
      "access_token", 200, R"({"errcode":40001,"errmsg":"invalid secret, hint: [x]"})");
  EXPECT_EQ(failure_of(parsed).errcode, 40001);
  EXPECT_EQ(failure_of(parsed).errmsg, "invalid secret, hint: [x]");
  EXPECT_EQ(failure_of(parsed).kind, failure_class::configuration);

  EXPECT_EQ(
      failure_of(parse_credential_answer("access_token", 200, R"({"errcode":45009,"errmsg":"x"})"))
          .kind,
      failure_class::throttled);
  EXPECT_EQ(
      failure_of(parse_credential_answer("access_token", 200, R"({"errcode":-1,"errmsg":"busy"})"))
          .kind,
      failure_class::transient);
}

TEST(upstream_answer, long_errmsg_is_cut) {
  const std::string body = R"({"errcode":-1,"errmsg":")" + std::string(5000, 'x') + R"("})";
  EXPECT_EQ(failure_of(parse_credential_answer("access_token", 200, body)).errmsg.size(), 256u);
}

struct garbage_case {
  const char* name;
  unsigned status;
  std::string body;
};

class upstream_garbage : public ::testing::TestWithParam<garbage_case> {};

TEST_P(upstream_garbage, is_a_transient_local_failure) {
  const auto parsed = parse_credential_answer("access_token", GetParam().status, GetParam().body);
  ASSERT_TRUE(std::holds_alternative<fetch_failure>(parsed));
  EXPECT_EQ(failure_of(parsed).kind, failure_class::transient);
  EXPECT_EQ(failure_of(parsed).errcode, local_failure_errcode);
  EXPECT_FALSE(failure_of(parsed).errmsg.empty());
}

const std::string valid_tail = R"(,"errmsg":"ok","access_token":"T","expires_in":7200})";

INSTANTIATE_TEST_SUITE_P(
    upstream_answer, upstream_garbage,
    ::testing::Values(
        garbage_case{"http_500", 500, R"({"errcode":0)" + valid_tail},
        garbage_case{"http_404", 404, "not found"},
        garbage_case{"html", 200, "<html><body>502 Bad Gateway</body></html>"},
        garbage_case{"truncated", 200, R"({"errcode":0,"errmsg":"ok","access_tok)"},
        garbage_case{"empty", 200, ""}, garbage_case{"array", 200, "[1,2]"},
        garbage_case{"errcode_missing", 200, R"({"access_token":"T","expires_in":7200})"},
        garbage_case{"errcode_string", 200, R"({"errcode":"0")" + valid_tail},
        garbage_case{"token_missing", 200, R"({"errcode":0,"errmsg":"ok","expires_in":7200})"},
        garbage_case{"token_number", 200,
                     R"({"errcode":0,"errmsg":"ok","access_token":5,"expires_in":7200})"},
        garbage_case{"token_empty", 200,
                     R"({"errcode":0,"errmsg":"ok","access_token":"","expires_in":7200})"},
        garbage_case{"token_too_long", 200,
                     R"({"errcode":0,"errmsg":"ok","access_token":")" + std::string(513, 'a') +
                         R"(","expires_in":7200})"},
        garbage_case{"token_with_space", 200,
                     R"({"errcode":0,"errmsg":"ok","access_token":"a b","expires_in":7200})"},
        garbage_case{"expires_missing", 200, R"({"errcode":0,"errmsg":"ok","access_token":"T"})"},
        garbage_case{"expires_string", 200,
                     R"({"errcode":0,"errmsg":"ok","access_token":"T","expires_in":"7200"})"},
        garbage_case{"expires_float", 200,
                     R"({"errcode":0,"errmsg":"ok","access_token":"T","expires_in":7200.5})"},
        garbage_case{"expires_zero", 200,
                     R"({"errcode":0,"errmsg":"ok","access_token":"T","expires_in":0})"},
        garbage_case{"expires_negative", 200,
                     R"({"errcode":0,"errmsg":"ok","access_token":"T","expires_in":-5})"}),
    [](const auto& test) { return std::string(test.param.name); });

TEST(upstream_answer, token_of_512_bytes_is_accepted) {
  const auto parsed =
      parse_credential_answer("access_token", 200,
                              R"({"errcode":0,"errmsg":"ok","access_token":")" +
                                  std::string(512, 'a') + R"(","expires_in":7200})");
  EXPECT_TRUE(std::holds_alternative<issued_token>(parsed));
}

// The gateway reads every answer's errcode: at once where WeCom puts it, in full elsewhere.
TEST(upstream_answer, wecom_errcode_is_read_wherever_the_member_is) {
  EXPECT_EQ(wecom_errcode(R"({"errcode":0,"errmsg":"ok","userid":"x"})"), 0);
  EXPECT_EQ(wecom_errcode(R"( { "errcode" : 40014 , "errmsg":"invalid access_token"})"), 40014);
  EXPECT_EQ(wecom_errcode(R"({"errcode":-1})"), -1);
  EXPECT_EQ(wecom_errcode(R"({"errmsg":"ok","data":{"errcode":5},"errcode":42001})"), 42001)
      << "the top level's, not a nested one's";
  EXPECT_EQ(wecom_errcode(R"({"errcode":40014.5})"), std::nullopt);
  EXPECT_EQ(wecom_errcode(R"({"errcode":"40014"})"), std::nullopt);
  EXPECT_EQ(wecom_errcode(R"({"userid":"x"})"), std::nullopt);
  EXPECT_EQ(wecom_errcode("\x89PNG\r\n"), std::nullopt);
  EXPECT_EQ(wecom_errcode(""), std::nullopt);
}

}  // namespace
}  // namespace token_broker
