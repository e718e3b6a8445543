// A TLS connection to upstream driven by OpenSSL directly: it sends on the socket itself, and
// reads what one plain asio read of the socket brought in. asio's ssl::stream and Beast's
// layers on it (ssl_stream, tcp_stream, the HTTP read operations) add a composed operation,
// an allocation and a timer to every read and write: most of a gateway call's own CPU went
// there.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "token_broker/core/asio.hpp"

namespace token_broker {

class tls_connection {
 public:
  using clock = std::chrono::steady_clock;

  // A socket not yet connected, and TLS under `context`'s settings and trust.
  tls_connection(asio::any_io_executor executor, SSL_CTX* context);
  ~tls_connection();
  tls_connection(const tls_connection&) = delete;
  tls_connection& operator=(const tls_connection&) = delete;

  SSL* native_handle() { return ssl_; }
  const asio::ip::tcp::socket& socket() const { return shared_->socket; }
  // The event loop it runs on, the one it was made on.
  const asio::any_io_executor& executor() const { return executor_; }

  // Every operation from now on fails with beast::error::timeout once `deadline` passes,
  // one waiting then included. Moving the deadline later costs no timer operation: the
  // one timer, when it fires early, waits again for what is then the deadline.
  void expires_at(clock::time_point deadline);
  void expires_after(clock::duration timeout) { expires_at(clock::now() + timeout); }
  void expires_never() { expires_at(clock::time_point::max()); }

  // Connects to the first of `endpoints` that accepts.
  asio::awaitable<error_code> connect(const asio::ip::tcp::resolver::results_type& endpoints);
  // The TLS handshake once connected, the certificate checked for `host`.
  asio::awaitable<error_code> handshake(const std::string& host);
  // All of `bytes` (how many), or the reason why not.
  asio::awaitable<std::pair<error_code, std::size_t>> write(asio::const_buffer bytes);
  // Some bytes into `into`: how many, or the reason none (asio::error::eof at the peer's
  // close_notify).
  asio::awaitable<std::pair<error_code, std::size_t>> read_some(asio::mutable_buffer into);

  // Reads and parses an HTTP answer until `parser` has taken some of what was read: it stops
  // at the end of the message, when the parser's body has no room (http::error::need_buffer),
  // or at an error. Bytes read past what the parser took stay for the next call.
  asio::awaitable<error_code> parse_some(http::basic_parser<false>& parser);
  // The same with only what was read already: http::error::need_more when that is not
  // enough for the parser to take anything.
  error_code parse_buffered(http::basic_parser<false>& parser);
  // Bytes were read that no parser took: the connection cannot carry another request.
  bool has_unparsed() const { return unparsed_.size() > 0; }

  // Whether the connection has nothing to read: an idle connection that has is upstream
  // closing it (a FIN, a reset, a close_notify), or bytes nobody asked for.
  bool quiet();

 private:
  // What the deadline's timer touches: it may fire after this connection is gone.
  struct shared_state {
    explicit shared_state(const asio::any_io_executor& executor)
        : socket(executor), timer(executor) {}
    asio::ip::tcp::socket socket;
    asio::steady_timer timer;
    clock::time_point deadline = clock::time_point::max();
    clock::time_point timer_at = clock::time_point::max();  // max: not waiting
    bool timed_out = false;
  };
  static void arm(const std::shared_ptr<shared_state>& state);

  // Runs `step` (an OpenSSL call on ssl_, given where to say how many bytes it moved) until it
  // succeeds, reading the socket or waiting until it takes more whenever OpenSSL wants: the
  // bytes moved, or the error that ended it.
  template <typename Step>
  asio::awaitable<std::pair<error_code, std::size_t>> until_done(Step step);

  // What OpenSSL reads and writes through (its BIO): sends go to the socket, reads take
  // what `received` holds.
  struct wire {
    int socket = -1;
    beast::flat_buffer received;  // read from the socket, not yet taken by OpenSSL
  };
  static BIO_METHOD* wire_method();

  asio::any_io_executor executor_;
  std::shared_ptr<shared_state> shared_;
  SSL* ssl_;
  wire wire_;
  beast::flat_buffer unparsed_;  // plaintext read, not yet parsed: no allocation per answer
};

}  // namespace token_broker
