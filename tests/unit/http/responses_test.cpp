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

TEST(responses, a_formatted_response_is_the_bytes_beast_writes) {
  for (const bool keep_alive : {true, false}) {
    response reply{http::status::ok, 11};
    reply.set(http::field::content_type, "application/json");
    reply.set(http::field::cache_control, "no-store");
    reply.set(http::field::content_disposition, "attachment; filename=\"a.jpg\"");
    reply.body() = R"({"errcode":0})";
    reply.prepare_payload();
    reply.keep_alive(keep_alive);
    const auto formatted =
        format_response(200,
                        {{"Content-Type", "application/json"},
                         {"X-Left-Out", ""},
                         {"Cache-Control", "no-store"},
                         {"Content-Disposition", "attachment; filename=\"a.jpg\""}},
                        R"({"errcode":0})");
    EXPECT_EQ(formatted.status, 200u);
    EXPECT_EQ(formatted.head + (keep_alive ? "\r\n" : "Connection: close\r\n\r\n") + formatted.body,
              as_beast_writes(reply))
        << keep_alive;
  }
}

}  // namespace
}  // namespace token_broker
