// Script answers and events read as the broker uses them (redis_replies.hpp); what the fuzzer
// found in them is in fuzz_regression_test.cpp.
#include "token_broker/redis/redis_replies.hpp"

#include <gtest/gtest.h>

#include <memory>

#include "token_broker/credentials/call_budget.hpp"
#include "token_broker/redis/reply_reader.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;

const time_point sent_at = time_point{} + std::chrono::hours{1000};

redis_reply read_reply(std::string_view resp) {
  reply_reader reader;
  reader.feed(resp);
  auto reply = reader.next();
  if (!reply) ADD_FAILURE() << "not one whole reply";
  return reply.value_or(redis_reply{});
}

// A present key with its time left and digest, and an absent one; a time left out of range
// or a digest of the wrong form is no token.
TEST(redis_replies, stored_digests_read_as_written) {
  const auto digests =
      stored_digests(read_reply("*6\r\n:7199000\r\n$16\r\n0123456789abcdef\r\n:-2\r\n$0\r\n\r\n"
                                ":9223372036854775807\r\n$16\r\n0123456789abcdef\r\n"),
                     3, sent_at);
  ASSERT_TRUE(digests);
  ASSERT_EQ(digests->size(), 3u);
  EXPECT_TRUE((*digests)[0].present);
  EXPECT_EQ((*digests)[0].expires_at, sent_at + 7199000ms);
  EXPECT_EQ((*digests)[0].digest, "0123456789abcdef");
  EXPECT_FALSE((*digests)[1].present);
  EXPECT_FALSE((*digests)[2].present);
  EXPECT_FALSE(stored_digests(read_reply("*1\r\n:1\r\n"), 1, sent_at)) << "not a pair per key";
}

TEST(redis_replies, save_outcomes_read_one_per_token) {
  const auto outcomes = save_results(read_reply("*3\r\n:1\r\n:0\r\n:-1\r\n"), 4);
  EXPECT_EQ(outcomes, (std::vector<save_outcome>{save_outcome::written, save_outcome::written,
                                                 save_outcome::store_knows_better,
                                                 save_outcome::unavailable}));
}

TEST(redis_replies, events_name_a_credential_by_kind_and_app) {
  using enum credential_kind;
  EXPECT_EQ(event_credential(R"({"kind":"access_token","app":"hr","event":"refreshed"})"),
            (credential_id{access_token, "hr"}));
  EXPECT_EQ(event_credential(R"({"app":"hr","event":"refreshed"})"),
            (credential_id{access_token, "hr"}))
      << "a v1 broker's event";
  EXPECT_EQ(event_credential(R"({"kind":"jsapi_ticket","app":"hr","event":"refreshed"})"),
            (credential_id{jsapi_ticket, "hr"}));
  EXPECT_EQ(event_credential(R"({"kind":"agent_ticket","app":"hr","event":"refreshed"})"),
            (credential_id{agent_ticket, "hr"}));
  EXPECT_FALSE(event_credential(R"({"kind":"suite_ticket","app":"s","event":"refreshed"})"))
      << "a kind this broker does not hold";
  EXPECT_FALSE(event_credential(R"({"kind":7,"app":"hr"})"));
  EXPECT_FALSE(event_credential(R"({"kind":"suite_token","app":"s"})")) << "a suite is named so";
  EXPECT_FALSE(event_credential(R"({"kind":"corp_token","suite":"s"})")) << "no corpid";
}

TEST(redis_replies, every_kind_is_named_in_events_as_the_contract_says) {
  using enum credential_kind;
  EXPECT_EQ(event_message({jsapi_ticket, "hr"}, "refreshed", 1790000000),
            R"({"kind":"jsapi_ticket","app":"hr","event":"refreshed","expires_at":1790000000})");
  EXPECT_EQ(event_message({provider_token, "isv"}, "refreshed"),
            R"({"kind":"provider_token","provider":"isv","event":"refreshed"})");
  EXPECT_EQ(event_message({suite_token, "crm"}, "refreshed"),
            R"({"kind":"suite_token","suite":"crm","event":"refreshed"})");
  EXPECT_EQ(event_message({corp_token, "crm:wwcorpA"}, "added"),
            R"({"kind":"corp_token","suite":"crm","corpid":"wwcorpA","event":"added"})");
  for (const auto& id :
       {credential_id{access_token, "hr"}, credential_id{agent_ticket, "hr"},
        credential_id{provider_token, "isv"}, credential_id{suite_token, "crm"},
        credential_id{suite_ticket, "crm"}, credential_id{corp_token, "crm:wwcorpA"}}) {
    EXPECT_EQ(event_credential(event_message(id, "refreshed")), id) << to_string(id);
  }
  EXPECT_EQ(corp_event(event_message({corp_token, "crm:wwcorpA"}, "added")), corp_change::added);
  EXPECT_EQ(corp_event(event_message({corp_token, "crm:wwcorpA"}, "removed")),
            corp_change::removed);
  EXPECT_FALSE(corp_event(event_message({corp_token, "crm:wwcorpA"}, "refreshed")));
  EXPECT_FALSE(event_credential(R"({"kind":"access_token","app":7})"));
}

}  // namespace
TEST(redis_replies, budget_answers_grant_or_name_the_wait) {
  using verdict = call_budget_answer::verdict;
  EXPECT_EQ(call_budget_from(read_reply("*2\r\n:1\r\n:0\r\n")).outcome, verdict::granted);
  const auto spent = call_budget_from(read_reply("*2\r\n:0\r\n:1500\r\n"));
  EXPECT_EQ(spent.outcome, verdict::spent);
  EXPECT_EQ(spent.wait, std::chrono::milliseconds{1500});
  EXPECT_EQ(call_budget_from(read_reply("*2\r\n:0\r\n:99999999999\r\n")).wait, call_budget_window)
      << "never a wait longer than the window";
  EXPECT_EQ(call_budget_from(read_reply("*1\r\n:1\r\n")).outcome, verdict::not_counted);
  EXPECT_EQ(call_budget_from(read_reply("$2\r\nok\r\n")).outcome, verdict::not_counted);
}

}  // namespace token_broker
