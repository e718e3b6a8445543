#include "token_broker/upstream/connection_pool.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <utility>

namespace token_broker {
namespace {

using asio::ip::tcp;
using std::chrono::steady_clock;

// An idle connection older than this is closed rather than reused: servers and load
// balancers drop idle connections after a while (nginx 75 s, many balancers 60 s), and one
// dropped at the moment it is reused costs a retry.
constexpr std::chrono::seconds max_idle{25};
constexpr std::chrono::seconds recently_used{1};

// Where a pool's TLS context points back to the pool (asio keeps its own in the app data).
int pool_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

fetch_failure local_failure(std::string errmsg) {
  return fetch_failure{failure_class::transient, local_failure_errcode, std::move(errmsg)};
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
  // Sessions are kept by this pool, not OpenSSL's internal cache (one upstream, one session).
  SSL_CTX* const context = tls_.native_handle();
  SSL_CTX_set_ex_data(context, pool_index(), this);
  SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(context, &connection_pool::remember_session);
}

connection_pool::~connection_pool() {
  SSL_SESSION_free(session_);
}

int connection_pool::remember_session(SSL* connection, SSL_SESSION* session) {
  auto& pool = *static_cast<connection_pool*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(connection), pool_index()));
  SSL_SESSION* replaced = nullptr;
  {
    const std::scoped_lock lock(pool.session_mutex_);
    replaced = std::exchange(pool.session_, session);
  }
  SSL_SESSION_free(replaced);
  return 1;  // the reference is the pool's now
}

SSL_SESSION* connection_pool::latest_session() {
  const std::scoped_lock lock(session_mutex_);
  if (session_) SSL_SESSION_up_ref(session_);
  return session_;
}

asio::awaitable<connection_pool::connect_result> connection_pool::connect(
    steady_clock::time_point deadline, std::chrono::milliseconds timeout) {
  const auto executor = co_await asio::this_coro::executor;
  const auto on_error = asio::as_tuple(asio::use_awaitable);

  // Resolution comes before the connection and its deadline: a timer of its own cancels it.
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

  // The connection stays with this coroutine's event loop: take_idle gives it only to calls
  // on the same one.
  auto connection = std::make_unique<tls_connection>(executor, tls_.native_handle());
  connection->expires_at(deadline);
  auto connecting = connection->connect(endpoints);  // named: g++ 12 and temporaries
  if (const auto connect_error = co_await std::move(connecting)) {
    co_return network_failure("connect", connect_error, timeout);
  }

  tls_handshakes_.fetch_add(1, std::memory_order_relaxed);
  if (SSL_SESSION* const resumable = latest_session()) {
    SSL_set_session(connection->native_handle(), resumable);  // a full handshake if refused
    SSL_SESSION_free(resumable);  // SSL_set_session took a reference of its own
  }
  auto shaking = connection->handshake(config_.host);  // named: g++ 12 and temporaries
  if (const auto handshake_error = co_await std::move(shaking)) {
    const long verify_result = SSL_get_verify_result(connection->native_handle());
    if (verify_result != X509_V_OK) {
      co_return local_failure(std::string("upstream TLS certificate rejected: ") +
                              X509_verify_cert_error_string(verify_result) +
                              (config_.ca_file ? " (checked against upstream.ca_file)"
                                               : " (checked against the system CA store)"));
    }
    co_return network_failure("TLS handshake", handshake_error, timeout);
  }
  co_return std::move(connection);
}

std::unique_ptr<tls_connection> connection_pool::take_idle(const asio::any_io_executor& caller) {
  const auto now = steady_clock::now();
  const std::scoped_lock lock(idle_mutex_);
  for (auto index = idle_.size(); index-- > 0;) {
    if (idle_[index].connection->executor() != caller) continue;
    auto candidate = std::move(idle_[index]);
    idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(index));
    // Anything rejected is simply dropped (see ~tls_connection). One idle for under a second
    // is taken without a look (a poll() per call, under load): servers close idle connections
    // after tens of seconds, and a request that meets a closed one is sent again anyway.
    const auto idle_for = now - candidate.since;
    if (idle_for < recently_used || (idle_for < max_idle && candidate.connection->quiet())) {
      return std::move(candidate.connection);
    }
  }
  return nullptr;
}

void connection_pool::keep_idle(std::unique_ptr<tls_connection> connection) {
  connection->expires_never();
  const auto now = steady_clock::now();
  const std::scoped_lock lock(idle_mutex_);
  // The oldest first: the ones past max_idle go now rather than hold a socket until a burst.
  std::erase_if(idle_, [&](const idle_connection& each) { return now - each.since >= max_idle; });
  idle_.push_back(idle_connection{std::move(connection), now});
}

void connection_pool::close_idle() {
  const std::scoped_lock lock(idle_mutex_);
  idle_.clear();
}

}  // namespace token_broker
