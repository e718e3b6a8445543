#include "token_broker/upstream/upstream_client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>

#include "token_broker/credentials/source.hpp"
#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker {
namespace {

using asio::ip::tcp;
using std::chrono::steady_clock;

// A credential answer is ~200 bytes; anything near this is not WeCom.
constexpr std::size_t max_answer_body = 64 * 1024;
constexpr std::uint32_t max_answer_header = 16 * 1024;

// An idle connection older than this is closed rather than reused: servers and load
// balancers drop idle connections after a while (nginx 75 s, many balancers 60 s), and one
// dropped at the moment it is reused costs a retry.
constexpr std::chrono::seconds max_idle{25};

fetch_failure local_failure(std::string errmsg) {
  return fetch_failure{failure_class::transient, local_failure_errcode, std::move(errmsg)};
}

// Says what went wrong at which step, in words an operator can act on. The error_code's
// message never holds the URL, so it is safe to pass on.
fetch_failure network_failure(std::string_view step, const error_code& error,
                              std::chrono::milliseconds timeout) {
  if (error == beast::error::timeout || error == asio::error::operation_aborted) {
    return local_failure("upstream did not answer within " + std::to_string(timeout.count()) +
                         " ms (" + std::string(step) + ")");
  }
  return local_failure("upstream " + std::string(step) + " failed: " + error.message());
}

// An idle connection should have nothing to read. Anything readable is upstream closing it
// (a FIN, a reset, a TLS close_notify): not worth a request that would fail.
bool quiet(beast::ssl_stream<beast::tcp_stream>& stream) {
  pollfd descriptor{};
  descriptor.fd = beast::get_lowest_layer(stream).socket().native_handle();
  descriptor.events = POLLIN | POLLRDHUP;
  return ::poll(&descriptor, 1, 0) == 0;
}

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
    : config_(config), tls_(asio::ssl::context::tls_client), calls_(max_concurrent_calls) {
  host_header_ =
      config_.host.find(':') != std::string::npos ? "[" + config_.host + "]" : config_.host;
  if (config_.port != "443") host_header_ += ":" + config_.port;

  tls_.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  tls_.set_verify_mode(asio::ssl::verify_peer);
  error_code error;
  if (config_.ca_file) {
    tls_.load_verify_file(config_.ca_file->string(), error);
    if (error) {
      throw config_error("upstream.ca_file", "not a usable PEM bundle: " + error.message());
    }
  } else {
    tls_.set_default_verify_paths(error);
    if (error) throw config_error("upstream", "cannot load the system's CA store");
  }
}

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
  bool may_reuse = true;
  for (;;) {
    auto stream = may_reuse ? take_idle() : nullptr;
    const bool reused = stream != nullptr;
    if (!stream) {
      auto connected = co_await connect(deadline);
      if (auto* failure = std::get_if<fetch_failure>(&connected)) co_return std::move(*failure);
      stream = std::get<std::unique_ptr<tls_stream>>(std::move(connected));
    }

    auto outcome = co_await send_and_receive(*stream, deadline, request);
    if (!outcome.error) {
      if (outcome.reusable) keep_idle(std::move(stream));
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

asio::awaitable<std::variant<std::unique_ptr<upstream_client::tls_stream>, fetch_failure>>
upstream_client::connect(steady_clock::time_point deadline) {
  const auto executor = co_await asio::this_coro::executor;
  const auto on_error = asio::as_tuple(asio::use_awaitable);

  // Resolution is the one step beast's stream deadline does not cover; a timer cancels it.
  // The timer's handler may run after this coroutine is gone, hence the weak_ptr.
  auto resolver = std::make_shared<tcp::resolver>(executor);
  asio::steady_timer resolve_deadline(executor, deadline);
  resolve_deadline.async_wait([weak_resolver = std::weak_ptr(resolver)](const error_code& error) {
    if (auto alive = weak_resolver.lock(); alive && !error) alive->cancel();
  });
  auto [resolve_error, endpoints] =
      co_await resolver->async_resolve(config_.host, config_.port, on_error);
  resolve_deadline.cancel();
  if (resolve_error) co_return network_failure("name resolution", resolve_error, config_.timeout);

  // The stream runs on this coroutine's executor; a later call reusing it completes on its
  // own (every executor here is the control loop's, one thread).
  auto stream = std::make_unique<tls_stream>(executor, tls_);
  beast::get_lowest_layer(*stream).expires_at(deadline);
  auto [connect_error, endpoint] =
      co_await beast::get_lowest_layer(*stream).async_connect(endpoints, on_error);
  if (connect_error) co_return network_failure("connect", connect_error, config_.timeout);

  // SNI, so a server hosting several names presents the right certificate, and a check that
  // the certificate is for this host: a valid chain alone proves nothing.
  if (!SSL_set_tlsext_host_name(stream->native_handle(), config_.host.c_str())) {
    co_return local_failure("cannot set TLS server name");
  }
  stream->set_verify_callback(asio::ssl::host_name_verification(config_.host));
  tls_handshakes_.fetch_add(1, std::memory_order_relaxed);
  auto [handshake_error] =
      co_await stream->async_handshake(asio::ssl::stream_base::client, on_error);
  if (handshake_error) {
    const long verify_result = SSL_get_verify_result(stream->native_handle());
    if (verify_result != X509_V_OK) {
      co_return local_failure(std::string("upstream TLS certificate rejected: ") +
                              X509_verify_cert_error_string(verify_result) +
                              (config_.ca_file ? " (checked against upstream.ca_file)"
                                               : " (checked against the system CA store)"));
    }
    co_return network_failure("TLS handshake", handshake_error, config_.timeout);
  }
  co_return std::move(stream);
}

asio::awaitable<upstream_client::exchange> upstream_client::send_and_receive(
    tls_stream& stream, steady_clock::time_point deadline, const upstream_request& request) {
  const auto on_error = asio::as_tuple(asio::use_awaitable);
  exchange result;

  http::request<http::string_body> message{request.method, config_.path_prefix + request.target,
                                           11};
  message.set(http::field::host, host_header_);
  message.set(http::field::user_agent, "token-broker/" TOKEN_BROKER_VERSION);
  message.set(http::field::accept, "application/json");
  if (request.json_body) {
    message.set(http::field::content_type, "application/json");
    message.body() = *request.json_body;
  }
  message.keep_alive(true);
  message.prepare_payload();

  // One deadline for the request and the answer, as for the connection before them.
  beast::get_lowest_layer(stream).expires_at(deadline);
  auto [write_error, written] = co_await http::async_write(stream, message, on_error);
  if (write_error) {
    result.error = write_error;
    result.step = "request";
    co_return result;
  }

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.header_limit(max_answer_header);
  parser.body_limit(max_answer_body);
  auto [read_error, read] = co_await http::async_read(stream, buffer, parser, on_error);
  result.response.received_at = clock::now();
  if (read_error) {
    result.error = read_error;
    result.step = "answer";
    result.answer_started = parser.got_some() || buffer.size() > 0;
    co_return result;
  }
  // Bytes past the answer would be read as the next one's start: such a connection is done.
  result.reusable = parser.keep_alive() && buffer.size() == 0;
  result.response.status = parser.get().result_int();
  result.response.body = std::move(parser.get().body());
  co_return result;
}

std::unique_ptr<upstream_client::tls_stream> upstream_client::take_idle() {
  const auto now = steady_clock::now();
  const std::scoped_lock lock(idle_mutex_);
  while (!idle_.empty()) {
    auto candidate = std::move(idle_.back());
    idle_.pop_back();
    // Anything rejected is simply dropped: no close_notify (see keep_idle), the socket closes.
    if (now - candidate.since < max_idle && quiet(*candidate.stream)) {
      return std::move(candidate.stream);
    }
  }
  return nullptr;
}

void upstream_client::keep_idle(std::unique_ptr<tls_stream> stream) {
  beast::get_lowest_layer(*stream).expires_never();
  const auto now = steady_clock::now();
  const std::scoped_lock lock(idle_mutex_);
  // The oldest first: the ones past max_idle go now rather than hold a socket until a burst.
  // They close without a TLS close_notify: answers are framed by HTTP, and waiting for the
  // peer's close_notify costs a round trip and can stall (servers often skip it).
  std::erase_if(idle_, [&](const idle_connection& each) { return now - each.since >= max_idle; });
  idle_.push_back(idle_connection{std::move(stream), now});
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
