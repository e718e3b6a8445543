#include "keep_alive_client.hpp"

namespace token_broker::soak {

http_result keep_alive_client::exchange(http::verb method, const std::string& target,
                                        const std::string& body,
                                        std::chrono::milliseconds timeout) {
  http_result result;
  asio::co_spawn(io_, run(method, target, body, timeout, result), asio::detached);
  io_.restart();
  io_.run();  // ends with the exchange: the stream's deadline bounds every step
  if (result.status == 0) close();
  return result;
}

void keep_alive_client::close() {
  error_code ignored;
  stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream_.close();
  buffer_.clear();
}

asio::awaitable<void> keep_alive_client::run(http::verb method, const std::string& target,
                                             const std::string& body,
                                             std::chrono::milliseconds timeout,
                                             http_result& result) {
  const auto as_tuple = asio::as_tuple(asio::use_awaitable);
  stream_.expires_after(timeout);
  if (!connected()) {
    const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port_);
    auto [connect_error] = co_await stream_.async_connect(endpoint, as_tuple);
    if (connect_error) {
      result.error = "connect: " + connect_error.message();
      result.connect_failed = true;
      co_return;
    }
    buffer_.clear();
  }

  http::request<http::string_body> request{method, target, 11};
  request.set(http::field::host, "127.0.0.1");
  if (!body.empty()) {
    request.set(http::field::content_type, "application/json");
    request.body() = body;
  }
  request.prepare_payload();
  auto [write_error, written] = co_await http::async_write(stream_, request, as_tuple);
  if (write_error) {
    result.error = "write: " + write_error.message();
    co_return;
  }

  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  auto [read_error, read] = co_await http::async_read(stream_, buffer_, parser, as_tuple);
  if (read_error) {
    result.error = "read: " + read_error.message();
    co_return;
  }
  result.status = parser.get().result_int();
  result.body = parser.get().body();
  // The server may end the connection after this answer; the next request opens another.
  if (!parser.get().keep_alive()) close();
}

}  // namespace token_broker::soak
