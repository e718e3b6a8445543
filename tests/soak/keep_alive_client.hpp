// One keep-alive HTTP/1.1 connection to a broker, as a busy service holds one: requests go
// one after another on the same connection, which is opened on first use and again after a
// failure or a "Connection: close". Every exchange is bounded by a deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "token_broker/core/asio.hpp"

namespace token_broker::soak {

struct http_result {
  unsigned status = 0;  // 0: no answer
  std::string body;
  std::string error;  // why there was no answer: "connect: …", "write: …", "read: …"
  bool connect_failed = false;
};

class keep_alive_client {
 public:
  explicit keep_alive_client(std::uint16_t port) : port_(port) {}

  // Connects first if no connection is open. After any failure the connection is dropped.
  http_result exchange(http::verb method, const std::string& target, const std::string& body,
                       std::chrono::milliseconds timeout);
  bool connected() const { return stream_.socket().is_open(); }
  void close();

 private:
  asio::awaitable<void> run(http::verb method, const std::string& target, const std::string& body,
                            std::chrono::milliseconds timeout, http_result& result);

  std::uint16_t port_;
  asio::io_context io_{1};
  beast::tcp_stream stream_{io_};
  beast::flat_buffer buffer_;
};

}  // namespace token_broker::soak
