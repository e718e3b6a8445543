// Answers are written without Beast's serializer: their bytes must be the serializer's.
#include "token_broker/http/responses.hpp"

#include <gtest/gtest.h>

#include <sstream>

namespace token_broker {
namespace {

std::string as_beast_writes(const response& reply) {
  std::ostringstream out;
  out << reply;
  return out.str();
}

TEST(responses, a_response_head_and_body_are_the_bytes_beast_writes) {
  for (const bool keep_alive : {true, false}) {
    auto reply = error_response(http::status::not_found, "unknown_app", "no app \"x\"");
    reply.set(http::field::retry_after, "7");
    reply.keep_alive(keep_alive);
    EXPECT_EQ(response_head(reply) + reply.body(), as_beast_writes(reply)) << keep_alive;
  }
  auto metrics = json_response(http::status::ok, "a 1\n");
  metrics.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(response_head(metrics) + metrics.body(), as_beast_writes(metrics));
}

}  // namespace
}  // namespace token_broker
