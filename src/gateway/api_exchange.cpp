#include "token_broker/gateway/api_exchange.hpp"

#include <boost/beast/http/span_body.hpp>
#include <memory>

namespace token_broker {
namespace {

using std::chrono::steady_clock;
constexpr std::uint32_t max_head_size = 16 * 1024;

exchange_failure failed(std::string_view step, const error_code& error,
                        std::chrono::milliseconds timeout) {
  const bool timed_out = error == beast::error::timeout || error == asio::error::operation_aborted;
  return exchange_failure{timed_out, network_failure(step, error, timeout).errmsg};
}

}  // namespace

struct api_exchange::state {
  state(connection_pool& owner, std::chrono::milliseconds each_read)
      : pool(owner), timeout(each_read) {}

  connection_pool& pool;
  call_limit::permit permit;
  std::unique_ptr<connection_pool::tls_stream> stream;
  std::chrono::milliseconds timeout;
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  // Allocated once a body outgrows the prefix: most answers never need it.
  std::unique_ptr<char[]> piece;
};

constexpr std::size_t piece_size = 64 * 1024;

api_exchange::api_exchange(std::unique_ptr<state> held) : state_(std::move(held)) {}
api_exchange::~api_exchange() = default;

const http::response_header<>& api_exchange::head() const {
  return state_->parser.get().base();
}

bool api_exchange::complete() const {
  return state_->parser.is_done();
}

void api_exchange::finish() {
  auto& held = *state_;
  if (held.stream && held.parser.is_done() && held.parser.keep_alive() && held.buffer.size() == 0) {
    held.pool.keep_idle(std::move(held.stream));
  }
  held.stream.reset();
  held.permit = {};
}

asio::awaitable<std::variant<std::unique_ptr<api_exchange>, exchange_failure>> api_exchange::start(
    connection_pool& pool, call_limit::permit permit, const api_request& request,
    steady_clock::time_point deadline, std::chrono::milliseconds timeout) {
  const auto on_error = asio::as_tuple(asio::use_awaitable);
  http::request<http::span_body<const char>> message{request.method,
                                                     pool.path_prefix() + request.target, 11};
  message.set(http::field::host, pool.host_header());
  message.set(http::field::user_agent, "token-broker/" TOKEN_BROKER_VERSION);
  if (!request.content_type.empty()) message.set(http::field::content_type, request.content_type);
  message.body() = {request.body.data(), request.body.size()};
  message.keep_alive(true);
  message.prepare_payload();

  bool may_reuse = true;
  for (;;) {
    auto held = std::make_unique<state>(pool, timeout);
    held->stream = may_reuse ? pool.take_idle() : nullptr;
    const bool reused = held->stream != nullptr;
    if (!held->stream) {
      auto connected = co_await pool.connect(deadline, timeout);
      if (auto* failure = std::get_if<fetch_failure>(&connected)) {
        co_return exchange_failure{steady_clock::now() >= deadline, failure->errmsg};
      }
      held->stream = std::get<std::unique_ptr<connection_pool::tls_stream>>(std::move(connected));
    }
    auto& stream = *held->stream;
    beast::get_lowest_layer(stream).expires_at(deadline);
    auto [write_error, written] = co_await http::async_write(stream, message, on_error);
    auto& parser = held->parser;
    parser.header_limit(max_head_size);
    parser.body_limit(boost::none);  // relayed, not held: media/get may be tens of MB
    if (request.method == http::verb::head) parser.skip(true);
    error_code read_error = write_error;
    if (!write_error) {
      auto [error, read] = co_await http::async_read_header(stream, held->buffer, parser, on_error);
      read_error = error;
    }
    if (read_error) {
      // A kept-alive connection upstream had closed meanwhile fails before a byte of the
      // answer: the request goes once more, on a new connection.
      if (reused && !parser.got_some() && held->buffer.size() == 0 &&
          read_error != beast::error::timeout && steady_clock::now() < deadline) {
        may_reuse = false;
        continue;
      }
      co_return failed(write_error ? "request" : "answer", read_error, timeout);
    }

    held->permit = std::move(permit);
    std::unique_ptr<api_exchange> exchange(new api_exchange(std::move(held)));
    auto& prefix = exchange->prefix_;
    prefix.resize(prefix_size);
    std::size_t filled = 0;
    while (!exchange->complete() && filled < prefix_size) {
      auto reading = exchange->read_some(prefix.data() + filled, prefix_size - filled);
      const auto read = co_await std::move(reading);  // named: g++ 12 and temporaries
      if (!read) co_return exchange_failure{false, "upstream answer cut short"};
      filled += *read;
    }
    prefix.resize(filled);
    beast::get_lowest_layer(*exchange->state_->stream).expires_never();
    co_return std::move(exchange);
  }
}

asio::awaitable<std::optional<std::size_t>> api_exchange::read_some(char* into, std::size_t size) {
  auto& held = *state_;
  auto& body = held.parser.get().body();
  // A read may parse framing only (a chunk's size line) and produce no byte of the body.
  while (!held.parser.is_done()) {
    if (!held.stream) co_return std::nullopt;
    body.data = into;
    body.size = size;
    beast::get_lowest_layer(*held.stream).expires_after(held.timeout);
    auto [error, read] = co_await http::async_read_some(*held.stream, held.buffer, held.parser,
                                                        asio::as_tuple(asio::use_awaitable));
    if (error == http::error::need_buffer) error = {};
    if (error) co_return std::nullopt;
    if (const auto produced = size - body.size; produced > 0) co_return produced;
  }
  co_return 0;
}

asio::awaitable<std::optional<std::string_view>> api_exchange::next_piece() {
  auto& held = *state_;
  if (!held.piece) held.piece = std::make_unique_for_overwrite<char[]>(piece_size);
  auto reading = read_some(held.piece.get(), piece_size);
  const auto read = co_await std::move(reading);  // named: g++ 12 and temporaries
  if (!read) co_return std::nullopt;
  co_return std::string_view(held.piece.get(), *read);
}

}  // namespace token_broker
