// JS-SDK signatures (SPEC §4): WeCom's own test vector, and what a request may ask.
#include "token_broker/http/jssdk_signature.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace token_broker {
namespace {

const signature_request& request_of(const std::variant<signature_request, std::string>& read) {
  if (const auto* problem = std::get_if<std::string>(&read)) ADD_FAILURE() << *problem;
  return std::get<signature_request>(read);
}

TEST(jssdk_signature, matches_wecoms_test_vector) {
  EXPECT_EQ(jssdk_signature("sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-"
                            "HhTdfl2fzFy1AOcHKP7qg",
                            "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value"),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed");
}

TEST(jssdk_signature, signs_the_url_without_its_fragment) {
  EXPECT_EQ(signable_url("https://app.example.com/page?a=1#section"),
            "https://app.example.com/page?a=1");
  EXPECT_EQ(signable_url("HTTP://Example.com"), "HTTP://Example.com");
  EXPECT_EQ(signable_url("https://example.com#"), "https://example.com");
  const auto read = read_signature_request(
      R"({"url":"http://mp.weixin.qq.com?params=value#top","noncestr":"Wm3WZYTPz0wzccnW","timestamp":1414587457})",
      1);
  EXPECT_EQ(request_of(read).url, "http://mp.weixin.qq.com?params=value");
  EXPECT_EQ(request_of(read).noncestr, "Wm3WZYTPz0wzccnW");
  EXPECT_EQ(request_of(read).timestamp, 1414587457);
}

TEST(jssdk_signature, refuses_what_is_not_an_absolute_http_url) {
  for (const std::string& bad : std::vector<std::string>{
           "", "/relative/page", "mp.weixin.qq.com", "ftp://example.com/", "https://",
           "https:///path", "https://#x", "javascript:alert(1)", "https://exa mple.com/",
           "https://example.com/\n", "https://example.com/" + std::string(2030, 'a')}) {
    EXPECT_FALSE(signable_url(bad)) << bad;
  }
  EXPECT_TRUE(signable_url("https://example.com/" + std::string(2028, 'a'))) << "2048 bytes";
}

TEST(jssdk_signature, fills_a_missing_noncestr_and_timestamp) {
  const auto first = request_of(read_signature_request(R"({"url":"https://a.example/"})", 1700));
  const auto second = request_of(read_signature_request(R"({"url":"https://a.example/"})", 1700));
  EXPECT_EQ(first.timestamp, 1700);
  ASSERT_EQ(first.noncestr.size(), 16u);
  for (const char c : first.noncestr) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)));
  EXPECT_NE(first.noncestr, second.noncestr) << "random";
  EXPECT_EQ(request_of(read_signature_request(
                           R"({"url":"https://a.example/","timestamp":"1414587457"})", 1))
                .timestamp,
            1414587457)
      << "the digits of a number, as front ends often send it";
}

TEST(jssdk_signature, names_what_is_wrong_with_a_request) {
  const auto problem = [](std::string_view body) {
    const auto read = read_signature_request(body, 1);
    return std::holds_alternative<std::string>(read) ? std::get<std::string>(read) : "";
  };
  EXPECT_NE(problem("not json"), "");
  EXPECT_NE(problem("[]"), "");
  EXPECT_NE(problem("{}").find("url"), std::string::npos);
  EXPECT_NE(problem(R"({"url":7})").find("url"), std::string::npos);
  EXPECT_NE(problem(R"({"url":"/relative"})").find("absolute"), std::string::npos);
  EXPECT_NE(problem(R"({"url":"https://a.example/","noncestr":""})").find("noncestr"),
            std::string::npos);
  EXPECT_NE(problem(R"({"url":"https://a.example/","noncestr":"a b"})").find("noncestr"),
            std::string::npos);
  EXPECT_NE(problem(R"({"url":"https://a.example/","timestamp":-1})").find("timestamp"),
            std::string::npos);
  EXPECT_NE(problem(R"({"url":"https://a.example/","timestamp":"12x"})").find("timestamp"),
            std::string::npos);
  EXPECT_NE(problem(R"({"url":"https://a.example/","timestamp":1.5})").find("timestamp"),
            std::string::npos);
}

// Plain bodies are read without a JSON tree, anything else by the full parser: either way a
// document means the same, so each pair below must read alike.
TEST(jssdk_signature, reads_every_spelling_of_a_body_alike) {
  const auto read = [](std::string_view body) {
    const auto result = read_signature_request(body, 1700);
    if (const auto* problem = std::get_if<std::string>(&result)) return "error: " + *problem;
    const auto& request = std::get<signature_request>(result);
    return request.url + " " + request.noncestr + " " + std::to_string(request.timestamp);
  };
  const std::string plain = R"({"url":"https://a.example/p?x=1","noncestr":"abc","timestamp":42})";
  for (
      const std::string spelling :
      {R"( { "url" : "https://a.example/p?x=1" , "noncestr":"abc" ,"timestamp": 42 } )",
       R"({"url":"https:\/\/a.example\/p?x=1","noncestr":"abc","timestamp":42})",
       R"({"url":"https://a.example/p?x=1","noncestr":"\u0061bc","timestamp":42})",
       R"({"url":"https://a.example/p?x=1","noncestr":"abc","timestamp":"42"})",
       R"({"url":"https://b.example/","url":"https://a.example/p?x=1","noncestr":"abc","timestamp":42})",
       R"({"other":{"nested":[1,true,null,"é"]},"url":"https://a.example/p?x=1","noncestr":"abc","timestamp":42})",
       R"({"url":"https://a.example/p?x=1","noncestr":"abc","timestamp":42.0e0,"timestamp":42})"}) {
    EXPECT_EQ(read(spelling), read(plain)) << spelling;
  }
  for (const std::string broken :
       {R"({"url":"https://a.example/",})", R"({"url":"https://a.example/"} x)",
        R"({"url":"https://a.example/","timestamp":042})",
        R"({"url":"https://a.example/","timestamp":12345678901234567890})",
        "{\"url\":\"https://a.example/\t\"}", R"({"url" "https://a.example/"})"}) {
    EXPECT_EQ(read(broken).rfind("error: ", 0), 0u) << broken;
  }
}

// The answer is written by hand for speed: byte for byte what a JSON library writes, escapes
// included, with each part only when its ticket is there.
TEST(jssdk_signature, answer_is_the_json_a_library_would_write) {
  const signature_request asked{
      .url = R"(https://a.example/p?q="x"\y)", .noncestr = R"(n"o\nce)", .timestamp = 1414587457};
  const std::string corpid =
      "ww\x01"
      "corp\x1f";  // control characters go out as \u00XX
  const auto expected = [&](std::optional<std::int64_t> agentid, const char* jsapi,
                            const char* agent) {
    nlohmann::ordered_json body{{"app", "hr"},
                                {"corpid", corpid},
                                {"agentid", agentid ? nlohmann::ordered_json(*agentid) : nullptr},
                                {"url", asked.url},
                                {"noncestr", asked.noncestr},
                                {"timestamp", asked.timestamp}};
    const auto sign = [&](const char* ticket) {
      return nlohmann::ordered_json{
          {"signature", jssdk_signature(ticket, asked.noncestr, asked.timestamp, asked.url)}};
    };
    if (jsapi) body["config"] = sign(jsapi);
    if (agent) body["agent_config"] = sign(agent);
    return body.dump();
  };
  EXPECT_EQ(signature_answer("hr", corpid, 1000002, asked, "ticket-j", "ticket-a"),
            expected(1000002, "ticket-j", "ticket-a"));
  EXPECT_EQ(signature_answer("hr", corpid, std::nullopt, asked, "ticket-j", std::nullopt),
            expected(std::nullopt, "ticket-j", nullptr));
  EXPECT_EQ(signature_answer("hr", corpid, 7, asked, std::nullopt, "ticket-a"),
            expected(7, nullptr, "ticket-a"));
  const auto vector = nlohmann::json::parse(signature_answer(
      "hr", "ww", std::nullopt,
      {.url = "http://mp.weixin.qq.com?params=value",
       .noncestr = "Wm3WZYTPz0wzccnW",
       .timestamp = 1414587457},
      "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
      std::nullopt));
  EXPECT_EQ(vector["config"]["signature"], "0f9de62fce790f9a083d5c99e95740ceb90c27ed");
}

}  // namespace
}  // namespace token_broker
