// Routing as a plain function of method and target.
#include "token_broker/routes.hpp"

#include <gtest/gtest.h>

namespace token_broker {
namespace {

using kind = route::kind;

TEST(routes, token_and_invalidate) {
  const auto token = match_route(http::verb::get, "/v1/apps/hr/token");
  EXPECT_EQ(token.call, kind::app_token);
  EXPECT_EQ(token.app, "hr");
  EXPECT_TRUE(token.needs_client_key());

  const auto invalidate = match_route(http::verb::post, "/v1/apps/crm.v2/token/invalidate");
  EXPECT_EQ(invalidate.call, kind::invalidate_token);
  EXPECT_EQ(invalidate.app, "crm.v2");

  EXPECT_EQ(match_route(http::verb::get, "/v1/apps/hr/token?x=1").call, kind::app_token);
}

TEST(routes, wrong_method_names_the_allowed_one) {
  const auto post_token = match_route(http::verb::post, "/v1/apps/hr/token");
  EXPECT_EQ(post_token.call, kind::method_not_allowed);
  EXPECT_EQ(post_token.allow, "GET");
  EXPECT_EQ(match_route(http::verb::get, "/v1/apps/hr/token/invalidate").allow, "POST");
  EXPECT_EQ(match_route(http::verb::delete_, "/healthz").call, kind::method_not_allowed);
}

TEST(routes, listing_and_probes) {
  EXPECT_EQ(match_route(http::verb::get, "/v1/apps").call, kind::list_apps);
  EXPECT_EQ(match_route(http::verb::get, "/healthz").call, kind::healthz);
  EXPECT_EQ(match_route(http::verb::get, "/readyz").call, kind::readyz);
  EXPECT_FALSE(match_route(http::verb::get, "/healthz").needs_client_key());
}

TEST(routes, unknown_paths) {
  for (const auto* target :
       {"/", "/v1", "/v1/apps/", "/v1/apps//token", "/v1/apps/hr", "/v1/apps/hr/token/extra",
        "/v1/apps/hr/tokens", "/cgi-bin/other", "/metrics2", "*"}) {
    EXPECT_EQ(match_route(http::verb::get, target).call, kind::not_found) << target;
  }
}

TEST(routes, wecom_gettoken_decodes_its_query) {
  const auto call =
      match_route(http::verb::get, "/cgi-bin/gettoken?corpid=ww01&corpsecret=a%2Bb%3D%3D+c");
  EXPECT_EQ(call.call, kind::wecom_gettoken);
  EXPECT_EQ(call.corpid, "ww01");
  EXPECT_EQ(call.corpsecret, "a+b==+c") << "'+' is kept: secrets are never form-encoded";
  EXPECT_FALSE(call.needs_client_key()) << "authenticated by the app secret itself";
}

TEST(routes, wecom_gettoken_missing_parameters_stay_empty) {
  const auto call = match_route(http::verb::get, "/cgi-bin/gettoken?corpid=ww01");
  EXPECT_EQ(call.corpid, "ww01");
  EXPECT_FALSE(call.corpsecret);
  EXPECT_FALSE(match_route(http::verb::get, "/cgi-bin/gettoken").corpid);
}

TEST(routes, malformed_percent_encoding_is_a_bad_request) {
  for (const auto* target : {"/cgi-bin/gettoken?corpid=%", "/cgi-bin/gettoken?corpid=%4",
                             "/cgi-bin/gettoken?corpsecret=%zz"}) {
    EXPECT_EQ(match_route(http::verb::get, target).call, kind::bad_request) << target;
  }
}

}  // namespace
}  // namespace token_broker
