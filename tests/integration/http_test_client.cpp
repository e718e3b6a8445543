#include "http_test_client.hpp"

#include <cctype>

#include "token_broker/core/asio.hpp"

namespace token_broker::testing {
namespace {

using std::chrono::steady_clock;

asio::awaitable<void> exchange_once(std::uint16_t port, const http_exchange& exchange,
                                    std::chrono::milliseconds timeout, http_answer& answer) {
  const auto started = steady_clock::now();
  const auto as_tuple = asio::as_tuple(asio::use_awaitable);
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(timeout);

  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
  auto [connect_error] = co_await stream.async_connect(endpoint, as_tuple);
  if (connect_error) {
    answer.error = "connect: " + connect_error.message();
    co_return;
  }

  http::request<http::string_body> request{http::string_to_verb(exchange.method), exchange.target,
                                           11};
  request.set(http::field::host, "127.0.0.1");
  // JSON unless the exchange names a type of its own.
  if (!exchange.body.empty()) request.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : exchange.headers) request.set(name, value);
  request.body() = exchange.body;
  request.prepare_payload();
  request.keep_alive(false);

  auto [write_error, written] = co_await http::async_write(stream, request, as_tuple);
  if (write_error) {
    answer.error = "write: " + write_error.message();
    co_return;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);  // the gateway relays files
  auto [read_error, read] = co_await http::async_read(stream, buffer, parser, as_tuple);
  answer.took =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - started);
  if (read_error) {
    answer.error = "read: " + read_error.message();
    co_return;
  }
  const auto& response = parser.get();
  answer.status = response.result_int();
  answer.body = response.body();
  for (const auto& field : response) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    answer.headers[name] = std::string(field.value());
  }
}

}  // namespace

std::vector<http_answer> http_concurrently(std::uint16_t port,
                                           const std::vector<http_exchange>& exchanges,
                                           std::chrono::milliseconds timeout) {
  asio::io_context io;
  std::vector<http_answer> answers(exchanges.size());
  for (std::size_t i = 0; i < exchanges.size(); ++i) {
    asio::co_spawn(io, exchange_once(port, exchanges[i], timeout, answers[i]), asio::detached);
  }
  // The per-call deadline bounds the run; the extra second is for the last answers to land.
  io.run_for(timeout + std::chrono::seconds{1});
  return answers;
}

http_answer http_call(std::uint16_t port, const http_exchange& exchange,
                      std::chrono::milliseconds timeout) {
  return http_concurrently(port, {exchange}, timeout).front();
}

http_answer http_get(std::uint16_t port, const std::string& target) {
  return http_call(port, http_exchange{.target = target});
}

}  // namespace token_broker::testing
