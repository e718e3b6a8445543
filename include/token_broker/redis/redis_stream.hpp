// One Redis connection's bytes: TCP, a unix socket, or TLS over TCP. TLS is asio's ssl::stream,
// OpenSSL as for upstream: one TLS stack in the process.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/redis/redis_replies.hpp"

namespace token_broker {

// Where a connection goes: a unix socket, or a host and port (with TLS when `tls` is set).
struct redis_endpoint {
  std::string unix_path;
  std::string host;
  std::uint16_t port = 0;
  std::shared_ptr<asio::ssl::context> tls;
  std::string server_name;  // checked in the certificate and sent as SNI; "" = host

  std::string to_string() const;  // for log lines: "host:port", "[v6]:port" or the path
};

// The client side of TLS to Redis: peer verification against ca_file (or the system's CA
// store) and the client certificate. Throws config_error naming the file that is unusable.
std::shared_ptr<asio::ssl::context> make_redis_tls_context(const redis_tls_config& settings);

class redis_stream {
 public:
  using tcp_socket = asio::ip::tcp::socket;
  using unix_socket = asio::local::stream_protocol::socket;
  using tls_socket = asio::ssl::stream<tcp_socket>;

  // Connected (and through the TLS handshake) within `limit`, or why not, in words for a log
  // line: a refused connection, a rejected certificate, a timeout.
  static asio::awaitable<std::tuple<std::shared_ptr<redis_stream>, std::string>> open(
      asio::any_io_executor executor, const redis_endpoint& to, std::chrono::milliseconds limit);

  asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer into);
  asio::awaitable<error_code> write(asio::const_buffer bytes);
  // Ends the connection: what is under way completes with an error.
  void close();

  explicit redis_stream(std::variant<tcp_socket, unix_socket, tls_socket> socket)
      : socket_(std::move(socket)) {}

 private:
  std::variant<tcp_socket, unix_socket, tls_socket> socket_;
};

// Sends `commands` on `stream` and reads one reply to each, all within `limit`: a short
// conversation on a connection of its own, as with a sentinel. The replies, or why not.
asio::awaitable<std::tuple<std::vector<redis_reply>, std::string>> converse(
    asio::any_io_executor executor, std::shared_ptr<redis_stream> stream,
    const std::vector<std::vector<std::string>>& commands, std::chrono::milliseconds limit);

// A command in RESP, as Redis reads it.
std::string encoded(const std::vector<std::string>& arguments);

}  // namespace token_broker
