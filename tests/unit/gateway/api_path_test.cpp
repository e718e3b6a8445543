// What the gateway forwards: WeCom paths only, never a credential call, and the app's token
// in place of whatever token the caller's query held.
#include "token_broker/gateway/api_path.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace token_broker {
namespace {

TEST(api_path, takes_wecom_paths_and_nothing_that_could_leave_them) {
  for (const auto* path : {"cgi-bin/user/get", "cgi-bin/media/upload", "cgi-bin/a_b-c.d/e"}) {
    EXPECT_TRUE(is_api_path(path)) << path;
  }
  for (const std::string& path :
       std::vector<std::string>{"", "/cgi-bin/user/get", "cgi-bin//user", "cgi-bin/../gettoken",
                                "cgi-bin/./x", "cgi-bin/user/get/", "cgi-bin/us%65r",
                                "cgi-bin/user get", "cgi-bin/x?y", "a/" + std::string(255, 'b')}) {
    EXPECT_FALSE(is_api_path(path)) << path;
  }
}

TEST(api_path, refuses_the_calls_that_hand_out_credentials) {
  for (const auto* path : {"cgi-bin/gettoken", "cgi-bin/get_jsapi_ticket", "cgi-bin/ticket/get",
                           "cgi-bin/service/get_suite_token", "cgi-bin/service/get_corp_token"}) {
    EXPECT_TRUE(is_credential_path(path)) << path;
  }
  EXPECT_FALSE(is_credential_path("cgi-bin/user/get"));
  EXPECT_FALSE(is_credential_path("cgi-bin/gettoken2"));
}

// The target as the head carries it, after what came before it.
std::string forwarded_target(std::string_view path, std::string_view query,
                             std::string_view token) {
  std::string head = "GET ";
  append_forwarded_target(head, path, query, token);
  return head.substr(4);
}

TEST(api_path, the_query_carries_the_apps_token_and_no_other) {
  EXPECT_EQ(forwarded_target("cgi-bin/p", "", "T"), "/cgi-bin/p?access_token=T");
  EXPECT_EQ(forwarded_target("cgi-bin/p", "userid=zhang&access_token=stale", "T"),
            "/cgi-bin/p?userid=zhang&access_token=T");
  EXPECT_EQ(forwarded_target("cgi-bin/p", "access%5Ftoken=x&a=1&access_token=y&&b=%2F", "T+/"),
            "/cgi-bin/p?a=1&b=%2F&access_token=T%2B%2F")
      << "every spelling of the name dropped, others kept as given, the token encoded";
  EXPECT_EQ(forwarded_target("cgi-bin/p", "access_t%zzoken=x&a=1", "T"),
            "/cgi-bin/p?a=1&access_token=T")
      << "a name that cannot be decoded might be read as access_token upstream";
}

TEST(api_path, labels_are_capped_so_callers_cannot_grow_the_metrics) {
  api_labels labels;
  for (std::size_t i = 0; i < api_labels::capacity; ++i) {
    EXPECT_EQ(labels.of("cgi-bin/p" + std::to_string(i)), "cgi-bin/p" + std::to_string(i));
  }
  EXPECT_EQ(labels.of("cgi-bin/one-too-many"), "other");
  EXPECT_EQ(labels.of("cgi-bin/p7"), "cgi-bin/p7") << "known paths keep their label";
}

}  // namespace
}  // namespace token_broker
