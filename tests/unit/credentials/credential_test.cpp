// Credential kinds as the contract names them, the per-process call budget, and the record of
// tokens handed out that the token-keyed drop-ins look up.
#include "token_broker/credentials/credential.hpp"

#include <gtest/gtest.h>

#include "token_broker/credentials/call_budget.hpp"
#include "token_broker/credentials/handed_out_tokens.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;

const time_point t0 = time_point{} + std::chrono::hours{24 * 365};

TEST(credential, kinds_carry_the_names_of_the_contract) {
  for (const auto kind : {credential_kind::access_token, credential_kind::jsapi_ticket,
                          credential_kind::agent_ticket, credential_kind::provider_token,
                          credential_kind::suite_token, credential_kind::corp_token}) {
    EXPECT_EQ(credential_kind_named(to_string(kind)), kind);
  }
  // SPEC §5's keys: provider_token:{id}, suite_token:{suite}, corp_token:{suite}:{corpid}.
  EXPECT_EQ(to_string(credential_id{credential_kind::corp_token, "crm-suite:wwcorpA"}),
            "corp_token:crm-suite:wwcorpA");
  EXPECT_EQ(value_field(credential_kind::provider_token), "provider_access_token");
  EXPECT_EQ(value_field(credential_kind::suite_token), "suite_access_token");
  EXPECT_EQ(value_field(credential_kind::corp_token), "access_token");
  EXPECT_EQ(log_name({credential_kind::provider_token, "isv"}), "provider=isv");
  EXPECT_EQ(log_name({credential_kind::suite_token, "crm-suite"}), "suite=crm-suite");
  EXPECT_EQ(log_name({credential_kind::corp_token, "crm-suite:wwcorpA"}),
            "suite=crm-suite corp=wwcorpA");
  EXPECT_EQ(to_string(credential_id{credential_kind::jsapi_ticket, "hr"}), "jsapi_ticket:hr");
  EXPECT_EQ(to_string(credential_id{credential_kind::access_token, "hr"}), "access_token:hr");
  EXPECT_EQ(value_field(credential_kind::access_token), "access_token");
  EXPECT_EQ(value_field(credential_kind::agent_ticket), "ticket");
  EXPECT_EQ(log_name({credential_kind::access_token, "hr"}), "app=hr");
  EXPECT_EQ(log_name({credential_kind::agent_ticket, "hr"}), "app=hr kind=agent_ticket");
  EXPECT_EQ(credential_kind_named("suite_ticket"), credential_kind::suite_ticket);
  EXPECT_EQ(value_field(credential_kind::suite_ticket), "suite_ticket");
  EXPECT_EQ(log_name({credential_kind::suite_ticket, "crm-suite"}),
            "suite=crm-suite kind=suite_ticket");
  EXPECT_TRUE(is_pushed(credential_kind::suite_ticket));
  EXPECT_FALSE(is_pushed(credential_kind::suite_token));
  EXPECT_EQ(naming_values({credential_kind::corp_token, "crm-suite:wwcorpA"}),
            (std::vector<std::string_view>{"crm-suite", "wwcorpA"}));
  EXPECT_EQ(naming_values({credential_kind::access_token, "hr"}),
            std::vector<std::string_view>{"hr"});
  EXPECT_FALSE(credential_kind_named("permanent_code"));
  EXPECT_TRUE(is_ticket(credential_kind::jsapi_ticket));
  EXPECT_FALSE(is_ticket(credential_kind::access_token));
}

TEST(call_window, allows_limit_calls_in_any_rolling_hour) {
  call_window calls;
  for (int i = 0; i < 3; ++i) {
    const auto at = t0 + i * 10min;
    ASSERT_EQ(calls.wait(at, 3), 0ms) << "call " << i;
    calls.record(at);
  }
  EXPECT_EQ(calls.wait(t0 + 30min, 3), 30min) << "until the first call is an hour old";
  EXPECT_EQ(calls.wait(t0 + 59min, 3), 1min);
  EXPECT_EQ(calls.wait(t0 + 60min, 3), 0ms);
  calls.record(t0 + 60min);
  EXPECT_EQ(calls.wait(t0 + 60min, 3), 10min) << "now the second call must age out";
  EXPECT_EQ(calls.wait(t0 + 60min, 4), 0ms) << "a larger limit (a reload) counts at once";
}

TEST(handed_out_tokens, knows_current_tokens_and_those_replaced_within_the_grace) {
  handed_out_tokens tokens;
  tokens.changed("hr", "", "T1", t0);
  tokens.changed("crm", "", "C1", t0);
  EXPECT_EQ(tokens.app_of("T1", t0 + 1h), "hr") << "current: no age limit";
  EXPECT_EQ(tokens.app_of("C1", t0), "crm");
  EXPECT_FALSE(tokens.app_of("unknown", t0));

  tokens.changed("hr", "T1", "T2", t0 + 2h);
  EXPECT_EQ(tokens.app_of("T2", t0 + 2h), "hr");
  EXPECT_EQ(tokens.app_of("T1", t0 + 2h + 4min), "hr") << "replaced less than 5 min ago";
  EXPECT_FALSE(tokens.app_of("T1", t0 + 2h + 5min)) << "replaced 5 min ago";

  tokens.changed("hr", "T2", "", t0 + 3h);  // revoked, or the app removed
  EXPECT_EQ(tokens.app_of("T2", t0 + 3h + 1min), "hr");
  tokens.changed("crm", "C1", "C2", t0 + 4h);  // forgets what aged out meanwhile
  EXPECT_FALSE(tokens.app_of("T2", t0 + 4h));
  EXPECT_FALSE(tokens.app_of("T1", t0 + 4h));
}

TEST(handed_out_tokens, a_token_that_became_current_again_is_not_forgotten) {
  handed_out_tokens tokens;
  tokens.changed("hr", "", "T1", t0);
  tokens.changed("hr", "T1", "", t0 + 1min);  // revoked…
  tokens.changed("hr", "", "T1", t0 + 2min);  // …and upstream vouched for it
  tokens.changed("crm", "", "C1", t0 + 10min);
  EXPECT_EQ(tokens.app_of("T1", t0 + 10min), "hr");
}

}  // namespace
}  // namespace token_broker
