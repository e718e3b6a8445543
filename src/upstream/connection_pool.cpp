#include "token_broker/upstream/connection_pool.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>

namespace token_broker {
namespace {

using asio::ip::tcp;
using std::chrono::steady_clock;

// An idle connection older than this is closed rather than reused: servers and load
// balancers drop idle connections after a while (nginx 75 s, many balancers 60 s), and one
// dropped at the moment it is reused costs a retry.
constexpr std::chrono::seconds max_idle{25};
constexpr std::chrono::seconds recently_used{1};

fetch_failure local_failure(std::string errmsg) {
  return fetch_failure{failure_class::transient, local_failure_errcode, std::move(errmsg)};
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

fetch_failure network_failure(std::string_view step, const error_code& error,
                              std::chrono::milliseconds timeout) {
  if (error == beast::error::timeout || error == asio::error::operation_aborted) {
    return local_failure("upstream did not answer within " + std::to_string(timeout.count()) +
                         " ms (" + std::string(step) + ")");
  }
  return local_failure("upstream " + std::string(step) + " failed: " + error.message());
}

connection_pool::connection_pool(const upstream_config& config)
    : config_(config), tls_(asio::ssl::context::tls_client) {
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

asio::awaitable<connection_pool::connect_result> connection_pool::connect(
    steady_clock::time_point deadline, std::chrono::milliseconds timeout) {
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
  if (resolve_error) co_return network_failure("name resolution", resolve_error, timeout);

  // The stream runs on this coroutine's executor; a later call reusing it completes on its
  // own (every executor here is the control loop's, one thread).
  auto stream = std::make_unique<tls_stream>(executor, tls_);
  beast::get_lowest_layer(*stream).expires_at(deadline);
  auto [connect_error, endpoint] =
      co_await beast::get_lowest_layer(*stream).async_connect(endpoints, on_error);
  if (connect_error) co_return network_failure("connect", connect_error, timeout);

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
    co_return network_failure("TLS handshake", handshake_error, timeout);
  }
  co_return std::move(stream);
}

std::unique_ptr<connection_pool::tls_stream> connection_pool::take_idle() {
  const auto now = steady_clock::now();
  const std::scoped_lock lock(idle_mutex_);
  while (!idle_.empty()) {
    auto candidate = std::move(idle_.back());
    idle_.pop_back();
    // Anything rejected is simply dropped: no close_notify (see keep_idle), the socket closes.
    // One idle for under a second is taken without a look (a poll() per call, under load):
    // servers close idle connections after tens of seconds, and a request that meets a closed
    // one is sent again anyway.
    const auto idle_for = now - candidate.since;
    if (idle_for < recently_used || (idle_for < max_idle && quiet(*candidate.stream))) {
      return std::move(candidate.stream);
    }
  }
  return nullptr;
}

void connection_pool::keep_idle(std::unique_ptr<tls_stream> stream) {
  beast::get_lowest_layer(*stream).expires_never();
  const auto now = steady_clock::now();
  const std::scoped_lock lock(idle_mutex_);
  // The oldest first: the ones past max_idle go now rather than hold a socket until a burst.
  // They close without a TLS close_notify: answers are framed by HTTP, and waiting for the
  // peer's close_notify costs a round trip and can stall (servers often skip it).
  std::erase_if(idle_, [&](const idle_connection& each) { return now - each.since >= max_idle; });
  idle_.push_back(idle_connection{std::move(stream), now});
}

void connection_pool::close_idle() {
  const std::scoped_lock lock(idle_mutex_);
  idle_.clear();
}

}  // namespace token_broker
