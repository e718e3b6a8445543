// A small HTTP/1.1 client for driving the real broker in tests: one request per connection,
// every call bounded by a deadline so a hang fails the test instead of blocking it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace token_broker::testing {

struct http_exchange {
  std::string method = "GET";
  std::string target;
  std::string body;
  std::map<std::string, std::string> headers;
};

struct http_answer {
  unsigned status = 0;  // 0: no answer (connection failed, reset or timed out)
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string error;                           // why there was no answer
  std::chrono::milliseconds took{0};
};

http_answer http_call(std::uint16_t port, const http_exchange& exchange,
                      std::chrono::milliseconds timeout = std::chrono::seconds{10});
http_answer http_get(std::uint16_t port, const std::string& target);

// Sends every exchange at once, each on its own connection, and returns the answers in order.
std::vector<http_answer> http_concurrently(std::uint16_t port,
                                           const std::vector<http_exchange>& exchanges,
                                           std::chrono::milliseconds timeout = std::chrono::seconds{
                                               20});

}  // namespace token_broker::testing
