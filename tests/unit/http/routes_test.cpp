// The route table: its grammar as a plain function of method and target, and the table the
// API serves.
#include "token_broker/http/routes.hpp"

#include <gtest/gtest.h>

#include <set>

#include "token_broker/http/request_handler.hpp"

namespace token_broker {
namespace {

using outcome = route_match::result;

route_match match(http::verb method, std::string_view target) {
  return match_route(request_handler::endpoints(), method, target);
}

std::string_view label_of(const route_match& found) {
  return request_handler::endpoints()[found.index].shape.label;
}

TEST(routes, token_and_invalidate) {
  const auto token = match(http::verb::get, "/v1/apps/hr/token");
  ASSERT_EQ(token.outcome, outcome::matched);
  EXPECT_EQ(label_of(token), "token");
  EXPECT_EQ(token.parameters["app"], "hr");
  EXPECT_EQ(request_handler::endpoints()[token.index].shape.who, access::client);

  const auto invalidate = match(http::verb::post, "/v1/apps/crm.v2/token/invalidate");
  ASSERT_EQ(invalidate.outcome, outcome::matched);
  EXPECT_EQ(label_of(invalidate), "invalidate");
  EXPECT_EQ(invalidate.parameters["app"], "crm.v2");

  const auto with_query = match(http::verb::get, "/v1/apps/hr/token?x=1");
  EXPECT_EQ(label_of(with_query), "token");
  EXPECT_EQ(with_query.query, "x=1");
}

TEST(routes, wrong_method_names_the_allowed_one) {
  const auto post_token = match(http::verb::post, "/v1/apps/hr/token");
  EXPECT_EQ(post_token.outcome, outcome::method_not_allowed);
  EXPECT_EQ(post_token.allow, "GET");
  EXPECT_EQ(match(http::verb::get, "/v1/apps/hr/token/invalidate").allow, "POST");
  EXPECT_EQ(match(http::verb::delete_, "/healthz").outcome, outcome::method_not_allowed);
}

TEST(routes, listing_and_probes) {
  EXPECT_EQ(label_of(match(http::verb::get, "/v1/apps")), "apps");
  EXPECT_EQ(label_of(match(http::verb::get, "/healthz")), "healthz");
  EXPECT_EQ(label_of(match(http::verb::get, "/readyz")), "readyz");
  EXPECT_EQ(label_of(match(http::verb::get, "/metrics")), "metrics");
  const auto gettoken = match(http::verb::get, "/cgi-bin/gettoken?corpid=ww01");
  EXPECT_EQ(label_of(gettoken), "gettoken");
  EXPECT_EQ(request_handler::endpoints()[gettoken.index].shape.who, access::anyone)
      << "authenticated by the app secret itself";
}

TEST(routes, unknown_paths) {
  for (const auto* target :
       {"/", "/v1", "/v1/apps/", "/v1/apps//token", "/v1/apps/hr", "/v1/apps/hr/token/extra",
        "/v1/apps/hr/tokens", "/metrics2", "*", ""}) {
    EXPECT_EQ(match(http::verb::get, target).outcome, outcome::not_found) << target;
  }
}

// The gateway's routes come last and take any method: every endpoint before them keeps its
// own (a GET of /cgi-bin/gettoken is still the drop-in, not a forwarded call).
TEST(routes, gateway_calls_take_any_method_after_every_other_endpoint) {
  for (const auto method : {http::verb::get, http::verb::post, http::verb::put}) {
    const auto api = match(method, "/v1/apps/hr/api/cgi-bin/user/get?userid=u");
    ASSERT_EQ(api.outcome, outcome::matched);
    EXPECT_EQ(label_of(api), "gateway");
    EXPECT_EQ(api.parameters["app"], "hr");
    EXPECT_EQ(api.parameters["path"], "cgi-bin/user/get");
    const auto drop_in = match(method, "/cgi-bin/message/send?access_token=T");
    ASSERT_EQ(drop_in.outcome, outcome::matched);
    EXPECT_EQ(label_of(drop_in), "gateway_drop_in");
    EXPECT_EQ(drop_in.parameters["path"], "message/send");
  }
  EXPECT_EQ(label_of(match(http::verb::get, "/cgi-bin/gettoken?corpid=ww01")), "gettoken");
  EXPECT_EQ(label_of(match(http::verb::get, "/cgi-bin/ticket/get?type=agent_config")),
            "ticket_get");
  EXPECT_EQ(label_of(match(http::verb::get, "/v1/apps/hr/token")), "token");
}

TEST(routes, every_endpoint_has_its_own_label_and_a_known_shape) {
  std::set<std::string_view> labels;
  for (const auto& each : request_handler::endpoints()) {
    EXPECT_TRUE(labels.insert(each.shape.label).second) << each.shape.label;
    EXPECT_TRUE(each.shape.pattern.starts_with('/')) << each.shape.pattern;
  }
  EXPECT_FALSE(labels.contains("other"));
  EXPECT_FALSE(labels.contains("malformed"));
}

struct test_entry {
  route shape;
};

TEST(routes, named_segments_and_the_rest_of_a_path) {
  const std::array<test_entry, 3> table{{
      {{http::verb::get, "/v1/suites/{suite}/corps/{corpid}/token", access::client, "a"}},
      {{http::verb::post, "/v1/apps/{app}/api/{path*}", access::client, "b"}},
      {{http::verb::get, "/v1/apps/{app}/api/{path*}", access::client, "c"}},
  }};
  const auto corp = match_route(std::span<const test_entry>(table), http::verb::get,
                                "/v1/suites/crm/corps/wwA/token");
  ASSERT_EQ(corp.outcome, outcome::matched);
  EXPECT_EQ(corp.parameters["suite"], "crm");
  EXPECT_EQ(corp.parameters["corpid"], "wwA");
  EXPECT_EQ(corp.parameters["app"], "") << "no such segment";

  const auto api = match_route(std::span<const test_entry>(table), http::verb::get,
                               "/v1/apps/hr/api/cgi-bin/user/get?userid=x");
  ASSERT_EQ(api.outcome, outcome::matched);
  EXPECT_EQ(api.index, 2u) << "the first entry of the right method";
  EXPECT_EQ(api.parameters["path"], "cgi-bin/user/get");
  EXPECT_EQ(api.query, "userid=x");

  const auto put = match_route(std::span<const test_entry>(table), http::verb::put,
                               "/v1/apps/hr/api/cgi-bin/user/get");
  EXPECT_EQ(put.outcome, outcome::method_not_allowed);
  EXPECT_EQ(put.allow, "POST, GET");

  EXPECT_EQ(
      match_route(std::span<const test_entry>(table), http::verb::get, "/v1/apps/hr/api/").outcome,
      outcome::not_found)
      << "a rest segment is never empty";
}

TEST(routes, query_parameters_are_percent_decoded) {
  const auto query = query_parameters::parse("corpid=ww01&corpsecret=a%2Bb%3D%3D+c&corp%69d=2");
  ASSERT_TRUE(query);
  ASSERT_TRUE(query->find("corpid"));
  EXPECT_EQ(*query->find("corpid"), "ww01") << "the first value wins";
  EXPECT_EQ(*query->find("corpsecret"), "a+b==+c") << "'+' is kept: secrets are never form-encoded";
  EXPECT_FALSE(query->find("other"));
  EXPECT_FALSE(query_parameters::parse("")->find("corpid"));
}

TEST(routes, malformed_percent_encoding_is_refused) {
  for (const auto* query : {"corpid=%", "corpid=%4", "corpsecret=%zz", "%g=1"}) {
    EXPECT_FALSE(query_parameters::parse(query)) << query;
  }
}

}  // namespace
}  // namespace token_broker
