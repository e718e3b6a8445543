#include "token_broker/upstream/upstream_client.hpp"

#include <sstream>

#include "token_broker/credentials/source.hpp"
#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker {
namespace {

using std::chrono::steady_clock;

// A credential answer is ~200 bytes; anything near this is not WeCom.
constexpr std::size_t max_answer_body = 64 * 1024;
constexpr std::uint32_t max_answer_header = 16 * 1024;

}  // namespace

// One request and its answer on one connection.
struct upstream_client::exchange {
  error_code error;             // none: `response` holds the answer
  std::string_view step;        // where it failed
  bool answer_started = false;  // some of the answer arrived before the failure
  bool reusable = false;        // the connection can carry another request
  upstream_response response;
};

void percent_encode(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
}

std::string gettoken_target(std::string_view corpid, std::string_view secret) {
  std::string target = "/cgi-bin/gettoken?corpid=";
  percent_encode(target, corpid);
  target += "&corpsecret=";
  percent_encode(target, secret);
  return target;
}

upstream_client::upstream_client(const upstream_config& config, std::size_t max_concurrent_calls)
    : config_(config), connections_(config), calls_(max_concurrent_calls) {}

asio::awaitable<upstream_client::slot> upstream_client::reserve() {
  co_return co_await calls_.acquire();
}

asio::awaitable<upstream_result> upstream_client::call(upstream_request request) {
  // The wait in line is not upstream's time: the deadline starts with the slot.
  const auto held = co_await reserve();
  co_return co_await call(held, std::move(request));
}

asio::awaitable<upstream_result> upstream_client::call(const slot& held, upstream_request request) {
  (void)held;  // proof of a slot: held by the caller until this call ends
  const auto deadline = steady_clock::now() + config_.timeout;
  co_return co_await call_until(deadline, request);
}

asio::awaitable<upstream_result> upstream_client::call_until(steady_clock::time_point deadline,
                                                             const upstream_request& request) {
  // Taken before any attempt: with a request repeated on a new connection, the first one
  // may be what upstream answered, and an expiry counted from here is never too late.
  const auto sent_at = clock::now();
  const auto sent_at_wall = wall_clock::now();
  const auto executor = co_await asio::this_coro::executor;
  bool may_reuse = true;
  for (;;) {
    auto connection = may_reuse ? connections_.take_idle(executor) : nullptr;
    const bool reused = connection != nullptr;
    if (!connection) {
      auto connected = co_await connections_.connect(deadline, config_.timeout);
      if (auto* failure = std::get_if<fetch_failure>(&connected)) co_return std::move(*failure);
      connection = std::get<std::unique_ptr<tls_connection>>(std::move(connected));
    }

    auto outcome = co_await send_and_receive(*connection, deadline, request);
    if (!outcome.error) {
      if (outcome.reusable) connections_.keep_idle(std::move(connection));
      outcome.response.sent_at = sent_at;
      outcome.response.sent_at_wall = sent_at_wall;
      co_return std::move(outcome.response);
    }
    // A kept-alive connection that upstream had closed meanwhile fails without a byte of
    // answer: the request goes once more, on a new connection (see the header on resending).
    // A new connection's failure is upstream's answer, as is anything once time is up.
    if (reused && !outcome.answer_started && outcome.error != beast::error::timeout &&
        steady_clock::now() < deadline) {
      may_reuse = false;
      continue;
    }
    co_return network_failure(outcome.step, outcome.error, config_.timeout);
  }
}

asio::awaitable<upstream_client::exchange> upstream_client::send_and_receive(
    tls_connection& connection, steady_clock::time_point deadline,
    const upstream_request& request) {
  exchange result;

  http::request<http::string_body> message{request.method,
                                           connections_.path_prefix() + request.target, 11};
  message.set(http::field::host, connections_.host_header());
  message.set(http::field::user_agent, "token-broker/" TOKEN_BROKER_VERSION);
  message.set(http::field::accept, "application/json");
  if (request.json_body) {
    message.set(http::field::content_type, "application/json");
    message.body() = *request.json_body;
  }
  message.keep_alive(true);
  message.prepare_payload();
  // Credential calls are few and small: the message is formatted whole, then sent at once.
  std::ostringstream formatted;
  formatted << message;
  const auto bytes = std::move(formatted).str();

  // One deadline for the request and the answer, as for the connection before them.
  connection.expires_at(deadline);
  auto writing = connection.write(asio::buffer(bytes));  // named: g++ 12 and temporaries
  if (const auto [write_error, written] = co_await std::move(writing); write_error) {
    result.error = write_error;
    result.step = "request";
    co_return result;
  }

  http::response_parser<http::string_body> parser;
  parser.header_limit(max_answer_header);
  parser.body_limit(max_answer_body);
  error_code read_error;
  while (!read_error && !parser.is_done()) {
    auto parsing = connection.parse_some(parser);
    read_error = co_await std::move(parsing);
  }
  result.response.received_at = clock::now();
  if (read_error) {
    result.error = read_error;
    result.step = "answer";
    result.answer_started = parser.got_some() || connection.has_unparsed();
    co_return result;
  }
  // Bytes past the answer would be read as the next one's start: such a connection is done.
  result.reusable = parser.keep_alive() && !connection.has_unparsed();
  result.response.status = parser.get().result_int();
  result.response.body = std::move(parser.get().body());
  co_return result;
}

asio::awaitable<fetch_result> upstream_client::fetch_token(std::string_view corpid,
                                                           std::string_view secret) {
  const auto held = co_await reserve();
  co_return co_await fetch_token(held, corpid, secret);
}

asio::awaitable<fetch_result> upstream_client::fetch_token(const slot& held,
                                                           std::string_view corpid,
                                                           std::string_view secret) {
  const gettoken_source source(corpid, secret);
  auto result = co_await call(held, source.request(""));
  if (auto* failure = std::get_if<fetch_failure>(&result)) co_return std::move(*failure);
  co_return source.read(std::get<upstream_response>(result));
}

}  // namespace token_broker
