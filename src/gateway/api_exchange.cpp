#include "token_broker/gateway/api_exchange.hpp"

#include <algorithm>
#include <memory>

#include "token_broker/gateway/api_answer_parser.hpp"
#include "token_broker/gateway/api_path.hpp"

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
  head.reserve(256 + request.path.size() + request.query.size() + request.token.size());
  head.append(method.data(), method.size()).append(" ").append(pool.path_prefix());
  append_forwarded_target(head, request.path, request.query, request.token);
  head.append(" HTTP/1.1\r\nHost: ").append(pool.host_header());
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
  std::unique_ptr<tls_connection> connection;
  std::chrono::milliseconds timeout;
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
  if (held.connection && held.parser.is_done() && held.parser.keep_alive() &&
      !held.connection->has_unparsed()) {
    held.pool.keep_idle(std::move(held.connection));
  }
  held.connection.reset();
  held.permit = {};
}

asio::awaitable<std::variant<std::unique_ptr<api_exchange>, exchange_failure>> api_exchange::start(
    connection_pool& pool, call_limit::permit permit, const api_request& request,
    steady_clock::time_point deadline, std::chrono::milliseconds timeout) {
  // The head formatted here and sent with a small body in one write (one TLS record); a large
  // body goes in a write of its own, not copied.
  constexpr std::size_t copied_body_limit = 16 * 1024;
  auto head = request_head(pool, request);
  const bool body_apart = request.body.size() > copied_body_limit;
  if (!body_apart) head.append(request.body);

  const auto executor = co_await asio::this_coro::executor;
  bool may_reuse = true;
  for (;;) {
    auto held = std::make_unique<state>(pool, timeout);
    held->connection = may_reuse ? pool.take_idle(executor) : nullptr;
    const bool reused = held->connection != nullptr;
    if (!held->connection) {
      auto connected = co_await pool.connect(deadline, timeout);
      if (auto* failure = std::get_if<fetch_failure>(&connected)) {
        co_return exchange_failure{steady_clock::now() >= deadline, failure->errmsg};
      }
      held->connection = std::get<std::unique_ptr<tls_connection>>(std::move(connected));
    }
    auto& connection = *held->connection;
    connection.expires_at(deadline);
    auto writing = connection.write(asio::buffer(head));  // named: g++ 12 and temporaries
    auto [write_error, written] = co_await std::move(writing);
    if (!write_error && body_apart) {
      auto writing_body = connection.write(asio::buffer(request.body));
      write_error = (co_await std::move(writing_body)).first;
    }
    auto& parser = held->parser;
    parser.header_limit(max_head_size);
    parser.body_limit(boost::none);  // relayed, not held: media/get may be tens of MB
    if (request.method == http::verb::head) parser.skip(true);
    error_code read_error = write_error;
    // The answer is read at once. Giving up the turn first (asio::post), so that the loop ran
    // what else was ready, added 3 % to the p50 at equal offered load, and no longer any
    // throughput since the connection drives OpenSSL itself (bench/run.sh, scenario 7).
    // The head, then as much of the body as the prefix holds: most answers are whole after
    // it. Sized by Content-Length when there is one (WeCom's JSON: a few hundred bytes).
    while (!read_error && !parser.is_header_done()) {
      auto parsing = connection.parse_some(parser);  // named: g++ 12 and temporaries
      read_error = co_await std::move(parsing);
    }
    std::string prefix;
    if (!read_error) {
      const auto length = parser.content_length();
      prefix.resize(length ? std::min<std::uint64_t>(*length, prefix_size) : prefix_size);
      parser.body_into(prefix.data(), prefix.size());
      parser.eager(true);
      // Most often the body came with the head: parsed here, no read to start.
      read_error = connection.parse_buffered(parser);
      if (read_error == http::error::need_more) read_error = {};
    }
    while (!read_error && !parser.is_done()) {
      auto parsing = connection.parse_some(parser);
      read_error = co_await std::move(parsing);
    }
    if (read_error == http::error::need_buffer) read_error = {};
    if (read_error) {
      // A kept-alive connection upstream had closed meanwhile fails before a byte of the
      // answer: the request goes once more, on a new connection.
      if (reused && !parser.got_some() && !connection.has_unparsed() &&
          read_error != beast::error::timeout && steady_clock::now() < deadline) {
        may_reuse = false;
        continue;
      }
      co_return failed(write_error ? "request" : "answer", read_error, timeout);
    }

    prefix.resize(prefix.size() - parser.room());
    held->permit = std::move(permit);
    std::unique_ptr<api_exchange> exchange(new api_exchange(std::move(held)));
    exchange->prefix_ = std::move(prefix);
    exchange->state_->connection->expires_never();
    co_return std::move(exchange);
  }
}

asio::awaitable<std::optional<std::size_t>> api_exchange::read_some(char* into, std::size_t size) {
  auto& held = *state_;
  // A read may parse framing only (a chunk's size line) and produce no byte of the body.
  while (!held.parser.is_done()) {
    if (!held.connection) co_return std::nullopt;
    held.parser.body_into(into, size);
    held.connection->expires_after(held.timeout);
    auto parsing = held.connection->parse_some(held.parser);  // named: g++ 12 and temporaries
    auto error = co_await std::move(parsing);
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
