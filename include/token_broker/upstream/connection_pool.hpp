// Verified TLS connections to WeCom (upstream.base_url), opened on demand and kept alive for
// reuse. Each user caps its own calls: the credential refreshes and the gateway have a pool
// each, so API traffic can never take a refresh's connection.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/credentials/fetch_result.hpp"
#include "token_broker/upstream/tls_connection.hpp"

namespace token_broker {

class connection_pool {
 public:
  using connect_result = std::variant<std::unique_ptr<tls_connection>, fetch_failure>;

  // Throws config_error when upstream.ca_file is not a usable PEM bundle.
  explicit connection_pool(const upstream_config& config);
  ~connection_pool();
  connection_pool(const connection_pool&) = delete;
  connection_pool& operator=(const connection_pool&) = delete;

  // A new connection on the calling coroutine's executor: resolved, connected, the
  // certificate checked for upstream's host (or the TLS session of an earlier connection
  // resumed, as nginx's proxy_ssl_session_reuse does), by `deadline`. Failures come back
  // classified and worded for an operator (`timeout` is what a deadline missed is reported as).
  asio::awaitable<connect_result> connect(std::chrono::steady_clock::time_point deadline,
                                          std::chrono::milliseconds timeout);
  // The most recently used idle connection of `caller`'s event loop still fit to carry a
  // request, or nullptr. A connection stays with the loop that made it: its deadline's timer
  // runs there, and must not race a call on another thread.
  std::unique_ptr<tls_connection> take_idle(const asio::any_io_executor& caller);
  // A connection whose last answer was read whole, for the next request.
  void keep_idle(std::unique_ptr<tls_connection> connection);
  // Closes every idle connection: before the event loops they were made on are destroyed.
  void close_idle();

  // What requests carry: the Host header, and base_url's path before every target.
  const std::string& host_header() const { return host_header_; }
  const std::string& path_prefix() const { return config_.path_prefix; }
  // TLS handshakes made so far: with connections reused, far fewer than calls.
  std::uint64_t tls_handshakes() const { return tls_handshakes_.load(std::memory_order_relaxed); }

 private:
  struct idle_connection {
    std::unique_ptr<tls_connection> connection;
    std::chrono::steady_clock::time_point since;
  };

  upstream_config config_;
  std::string host_header_;
  asio::ssl::context tls_;
  std::atomic<std::uint64_t> tls_handshakes_{0};
  std::mutex idle_mutex_;
  std::vector<idle_connection> idle_;  // most recently used last

  // The latest TLS session upstream gave, for the next connection to resume: a burst after a
  // quiet spell, when idle connections were closed, then costs no certificate check and no key
  // exchange per connection. Set by OpenSSL's new-session callback, on any event loop.
  static int remember_session(SSL* connection, SSL_SESSION* session);
  SSL_SESSION* latest_session();  // a reference of the caller's, or nullptr
  std::mutex session_mutex_;
  SSL_SESSION* session_ = nullptr;
};

// Says what went wrong at which step, in words an operator can act on. The error_code's
// message never holds the URL, so it is safe to pass on.
fetch_failure network_failure(std::string_view step, const error_code& error,
                              std::chrono::milliseconds timeout);

}  // namespace token_broker
