#include "token_broker/upstream_client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "token_broker/upstream_answer.hpp"

namespace token_broker {
namespace {

using asio::ip::tcp;
using std::chrono::steady_clock;

// A gettoken answer is ~200 bytes; anything near this is not WeCom.
constexpr std::size_t max_answer_body = 64 * 1024;
constexpr std::uint32_t max_answer_header = 16 * 1024;

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

}  // namespace

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

std::string upstream_client::gettoken_target(std::string_view corpid,
                                             std::string_view secret) const {
  std::string target = config_.path_prefix + "/cgi-bin/gettoken?corpid=";
  percent_encode(target, corpid);
  target += "&corpsecret=";
  percent_encode(target, secret);
  return target;
}

asio::awaitable<fetch_result> upstream_client::fetch_token(std::string_view corpid,
                                                           std::string_view secret) {
  const auto executor = co_await asio::this_coro::executor;
  const auto on_error = asio::as_tuple(asio::use_awaitable);

  // A slot first, held until this coroutine ends (the connection is closed). The line always
  // moves, since every call in flight ends by its own deadline; and the wait in it is not
  // upstream's time, so the deadline starts with the slot. (Callers waiting for a token
  // have their own bound, upstream.timeout_ms, in app_refresher.)
  const auto slot = co_await calls_.acquire();
  const auto deadline = steady_clock::now() + config_.timeout;
  const auto sent_at = clock::now();
  const auto sent_at_wall = wall_clock::now();

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

  beast::ssl_stream<beast::tcp_stream> stream(executor, tls_);
  // One deadline for connect, TLS handshake, request and answer together.
  beast::get_lowest_layer(stream).expires_at(deadline);

  auto [connect_error, endpoint] =
      co_await beast::get_lowest_layer(stream).async_connect(endpoints, on_error);
  if (connect_error) co_return network_failure("connect", connect_error, config_.timeout);

  // SNI, so a server hosting several names presents the right certificate, and a check that
  // the certificate is for this host: a valid chain alone proves nothing.
  if (!SSL_set_tlsext_host_name(stream.native_handle(), config_.host.c_str())) {
    co_return local_failure("cannot set TLS server name");
  }
  stream.set_verify_callback(asio::ssl::host_name_verification(config_.host));
  auto [handshake_error] =
      co_await stream.async_handshake(asio::ssl::stream_base::client, on_error);
  if (handshake_error) {
    const long verify_result = SSL_get_verify_result(stream.native_handle());
    if (verify_result != X509_V_OK) {
      co_return local_failure(std::string("upstream TLS certificate rejected: ") +
                              X509_verify_cert_error_string(verify_result) +
                              (config_.ca_file ? " (checked against upstream.ca_file)"
                                               : " (checked against the system CA store)"));
    }
    co_return network_failure("TLS handshake", handshake_error, config_.timeout);
  }

  http::request<http::empty_body> request{http::verb::get, gettoken_target(corpid, secret), 11};
  request.set(http::field::host, host_header_);
  request.set(http::field::user_agent, "token-broker/" TOKEN_BROKER_VERSION);
  request.set(http::field::accept, "application/json");
  // One call per refresh, minutes apart: a pooled connection would only go stale.
  request.set(http::field::connection, "close");
  auto [write_error, written] = co_await http::async_write(stream, request, on_error);
  if (write_error) co_return network_failure("request", write_error, config_.timeout);

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.header_limit(max_answer_header);
  parser.body_limit(max_answer_body);
  auto [read_error, read] = co_await http::async_read(stream, buffer, parser, on_error);
  const auto received_at = clock::now();
  if (read_error) co_return network_failure("answer", read_error, config_.timeout);

  // No TLS close_notify exchange: the answer is complete and framed by HTTP, and waiting
  // for the peer's close_notify costs a round trip and can stall (servers often skip it,
  // which shows up as stream_truncated). Dropping the connection is safe here.
  beast::get_lowest_layer(stream).close();

  auto answer = parse_gettoken_answer(parser.get().result_int(), parser.get().body());
  if (auto* failure = std::get_if<fetch_failure>(&answer)) co_return std::move(*failure);
  auto& token = std::get<issued_token>(answer);
  co_return fetched_token{std::move(token.access_token), token.expires_in, sent_at, received_at,
                          sent_at_wall};
}

}  // namespace token_broker
