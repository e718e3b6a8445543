#include "token_broker/gateway/api_exchange.hpp"

#include <memory>

#include "token_broker/gateway/api_answer_parser.hpp"

namespace token_broker {
namespace {

using std::chrono::steady_clock;
constexpr std::uint32_t max_head_size = 16 * 1024;

exchange_failure failed(std::string_view step, const error_code& error,
                        std::chrono::milliseconds timeout) {
  const bool timed_out = error == beast::error::timeout || error == asio::error::operation_aborted;
  return exchange_failure{timed_out, network_failure(step, error, timeout).errmsg};
}

// The request line and header fields; Content-Length whenever there is a body, or the method
// normally has one.
std::string request_head(const connection_pool& pool, const api_request& request) {
  const auto method = http::to_string(request.method);
  std::string head;
  head.reserve(256 + request.target.size());
  head.append(method.data(), method.size()).append(" ").append(pool.path_prefix());
  head.append(request.target).append(" HTTP/1.1\r\nHost: ").append(pool.host_header());
  head.append("\r\nUser-Agent: token-broker/" TOKEN_BROKER_VERSION "\r\n");
  if (!request.content_type.empty()) {
    head.append("Content-Type: ").append(request.content_type).append("\r\n");
  }
  const bool has_body = !request.body.empty() || request.method == http::verb::post ||
                        request.method == http::verb::put || request.method == http::verb::patch;
  if (has_body)
    head.append("Content-Length: ").append(std::to_string(request.body.size()) + "\r\n");
  head.append("\r\n");
  return head;
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
  api_answer_parser parser;
  // Allocated once a body outgrows the prefix: most answers never need it.
  std::unique_ptr<char[]> piece;
};

constexpr std::size_t piece_size = 64 * 1024;

api_exchange::api_exchange(std::unique_ptr<state> held) : state_(std::move(held)) {}
api_exchange::~api_exchange() = default;

unsigned api_exchange::status() const {
  return state_->parser.status();
}

const std::string& api_exchange::content_type() const {
  return state_->parser.content_type();
}

const std::string& api_exchange::content_disposition() const {
  return state_->parser.content_disposition();
}

std::optional<std::uint64_t> api_exchange::content_length() const {
  const auto length = state_->parser.content_length();
  return length ? std::optional<std::uint64_t>(*length) : std::nullopt;
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
  // The head formatted here and sent with a small body in one write: Beast's serializer and
  // its composed operations cost more than the call's TLS record. A large body goes in a
  // write of its own, not copied (and a two-buffer write of over 16 KiB through Beast's
  // ssl_stream stalled in the tests; not pursued further).
  constexpr std::size_t copied_body_limit = 16 * 1024;
  auto head = request_head(pool, request);
  const bool body_apart = request.body.size() > copied_body_limit;
  if (!body_apart) head.append(request.body);

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
    auto [write_error, written] = co_await asio::async_write(stream, asio::buffer(head), on_error);
    if (!write_error && body_apart) {
      auto [body_error, sent] =
          co_await asio::async_write(stream, asio::buffer(request.body), on_error);
      write_error = body_error;
    }
    auto& parser = held->parser;
    parser.header_limit(max_head_size);
    parser.body_limit(boost::none);  // relayed, not held: media/get may be tens of MB
    if (request.method == http::verb::head) parser.skip(true);
    // The head and the body's first bytes in one read: most answers are whole after it.
    std::string prefix(prefix_size, '\0');
    parser.body_into(prefix.data(), prefix.size());
    error_code read_error = write_error;
    if (!write_error) {
      auto [error, read] = co_await http::async_read(stream, held->buffer, parser, on_error);
      read_error = error == http::error::need_buffer ? error_code{} : error;
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

    prefix.resize(prefix_size - parser.room());
    held->permit = std::move(permit);
    std::unique_ptr<api_exchange> exchange(new api_exchange(std::move(held)));
    exchange->prefix_ = std::move(prefix);
    beast::get_lowest_layer(*exchange->state_->stream).expires_never();
    co_return std::move(exchange);
  }
}

asio::awaitable<std::optional<std::size_t>> api_exchange::read_some(char* into, std::size_t size) {
  auto& held = *state_;
  // A read may parse framing only (a chunk's size line) and produce no byte of the body.
  while (!held.parser.is_done()) {
    if (!held.stream) co_return std::nullopt;
    held.parser.body_into(into, size);
    beast::get_lowest_layer(*held.stream).expires_after(held.timeout);
    auto [error, read] = co_await http::async_read_some(*held.stream, held.buffer, held.parser,
                                                        asio::as_tuple(asio::use_awaitable));
    if (error == http::error::need_buffer) error = {};
    if (error) co_return std::nullopt;
    if (const auto produced = size - held.parser.room(); produced > 0) co_return produced;
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
