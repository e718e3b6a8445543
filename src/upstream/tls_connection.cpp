#include "token_broker/upstream/tls_connection.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <tuple>

#include "token_broker/core/tls_peer.hpp"

namespace token_broker {
namespace {

// The reason an OpenSSL I/O call failed with `result` (errno as it left it), in asio's terms,
// as asio's ssl::stream reports them: the messages and the callers' checks stay the same.
error_code failure_of(SSL* ssl, int result, int saved_errno) {
  const int reason = SSL_get_error(ssl, result);
  const unsigned long queued = ERR_peek_last_error();
  ERR_clear_error();
  if (reason == SSL_ERROR_ZERO_RETURN) return asio::error::eof;
  if (reason == SSL_ERROR_SYSCALL && queued == 0) {
    return saved_errno != 0 ? error_code(saved_errno, asio::error::get_system_category())
                            : error_code(asio::ssl::error::stream_truncated);
  }
  if (ERR_GET_REASON(queued) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    return asio::ssl::error::stream_truncated;
  }
  return error_code(static_cast<int>(queued), asio::error::get_ssl_category());
}

// Why an OpenSSL call that sets the connection up failed.
error_code setup_failure() {
  const unsigned long queued = ERR_get_error();
  ERR_clear_error();
  return queued != 0 ? error_code(static_cast<int>(queued), asio::error::get_ssl_category())
                     : error_code(asio::error::invalid_argument);
}

}  // namespace

BIO_METHOD* tls_connection::wire_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wire");
    if (!made) throw std::bad_alloc();
    BIO_meth_set_create(made, [](BIO* bio) {
      BIO_set_init(bio, 1);
      return 1;
    });
    // MSG_NOSIGNAL: OpenSSL's own socket BIO writes with write(), and a peer that has closed
    // would raise SIGPIPE, which ends the process.
    BIO_meth_set_write(made, [](BIO* bio, const char* data, int size) {
      BIO_clear_retry_flags(bio);
      const auto& to = *static_cast<wire*>(BIO_get_data(bio));
      const auto sent = ::send(to.socket, data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
      if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        BIO_set_retry_write(bio);
      }
      return static_cast<int>(sent);
    });
    // Only what the last read brought: for more, OpenSSL says it wants to read, and until_done
    // reads the socket as asio does, without a syscall when the socket is known to be empty.
    BIO_meth_set_read(made, [](BIO* bio, char* into, int size) {
      BIO_clear_retry_flags(bio);
      auto& from = *static_cast<wire*>(BIO_get_data(bio));
      const auto taken = std::min(from.received.size(), static_cast<std::size_t>(size));
      if (taken == 0) {
        BIO_set_retry_read(bio);
        return -1;
      }
      asio::buffer_copy(asio::buffer(into, taken), from.received.data());
      from.received.consume(taken);
      return static_cast<int>(taken);
    });
    // OpenSSL flushes after each flight of the handshake; nothing else is asked of it.
    BIO_meth_set_ctrl(made, [](BIO*, int command, long, void*) -> long {
      return command == BIO_CTRL_FLUSH ? 1 : 0;
    });
    return made;
  }();
  return method;
}

tls_connection::tls_connection(asio::any_io_executor executor, SSL_CTX* context)
    : executor_(std::move(executor)),
      shared_(std::make_shared<shared_state>(executor_)),
      ssl_(SSL_new(context)) {
  if (!ssl_) throw std::bad_alloc();
  // Whole records taken at once rather than a header and then the rest.
  SSL_set_read_ahead(ssl_, 1);
}

tls_connection::~tls_connection() {
  // No close_notify: answers are framed by HTTP, and waiting for the peer's costs a round
  // trip and can stall (servers often skip it). The socket closes with shared_. Marked as
  // shut down all the same (as nginx does), or OpenSSL would make its session unresumable.
  SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl_);
}

void tls_connection::expires_at(clock::time_point deadline) {
  shared_->deadline = deadline;
  shared_->timed_out = false;
  if (deadline < shared_->timer_at) arm(shared_);
}

void tls_connection::arm(const std::shared_ptr<shared_state>& state) {
  const auto at = state->deadline;
  state->timer_at = at;
  state->timer.expires_at(at);  // a wait already pending ends with operation_aborted
  state->timer.async_wait([weak = std::weak_ptr(state), at](const error_code& error) {
    const auto alive = weak.lock();
    // Cancelled, or superseded by an earlier deadline armed since.
    if (!alive || error || alive->timer_at != at) return;
    alive->timer_at = clock::time_point::max();
    if (alive->deadline == clock::time_point::max()) return;
    if (clock::now() < alive->deadline) {
      arm(alive);  // the deadline moved on meanwhile
      return;
    }
    alive->timed_out = true;
    error_code ignored;
    alive->socket.cancel(ignored);
  });
}

template <typename Step>
asio::awaitable<std::pair<error_code, std::size_t>> tls_connection::until_done(Step step) {
  const auto on_error = asio::as_tuple(asio::use_awaitable);
  auto& state = *shared_;
  // SSL_get_error() reads this thread's error queue: it must hold nothing of others' calls.
  // Looked at first: clearing an empty queue costs more than the look.
  if (ERR_peek_error() != 0) ERR_clear_error();
  for (;;) {
    if (state.timed_out) co_return std::pair{error_code(beast::error::timeout), 0};
    std::size_t done = 0;
    errno = 0;
    const int result = step(done);
    if (result > 0) co_return std::pair{error_code{}, done};
    const int saved_errno = errno;
    const int reason = SSL_get_error(ssl_, result);
    if (reason != SSL_ERROR_WANT_READ && reason != SSL_ERROR_WANT_WRITE) {
      co_return std::pair{failure_of(ssl_, result, saved_errno), 0};
    }
    error_code error;
    if (reason == SSL_ERROR_WANT_READ) {
      // A whole TLS record at most, as OpenSSL reads them.
      auto [read_error, read] =
          co_await state.socket.async_read_some(wire_.received.prepare(16 * 1024 + 256), on_error);
      wire_.received.commit(read);
      // The socket's end without TLS's close_notify before it: the answer may be cut short.
      error = read_error == asio::error::eof ? asio::ssl::error::stream_truncated : read_error;
    } else {
      // A full send buffer: rare, so the few syscalls asio spends on a wait do not matter.
      std::tie(error) = co_await state.socket.async_wait(asio::socket_base::wait_write, on_error);
    }
    if (state.timed_out) co_return std::pair{error_code(beast::error::timeout), 0};
    if (error) co_return std::pair{error, 0};
  }
}

asio::awaitable<error_code> tls_connection::connect(
    const asio::ip::tcp::resolver::results_type& endpoints) {
  auto& state = *shared_;
  error_code failure = asio::error::host_not_found;
  // Each address in turn, as long as the deadline allows.
  for (const auto& each : endpoints) {
    error_code ignored;
    state.socket.close(ignored);
    auto [error] =
        co_await state.socket.async_connect(each.endpoint(), asio::as_tuple(asio::use_awaitable));
    if (state.timed_out) co_return beast::error::timeout;
    if (!error) {
      // A request's last segment is sent at once, not held back by Nagle's algorithm until
      // upstream acknowledges the one before: upstream's delayed ACK would add up to 40 ms to
      // a body sent after its head.
      state.socket.set_option(asio::ip::tcp::no_delay(true), ignored);
      co_return error_code{};
    }
    failure = error;
  }
  co_return failure;
}

asio::awaitable<error_code> tls_connection::handshake(const std::string& host) {
  auto& socket = shared_->socket;
  error_code error;
  socket.non_blocking(true, error);
  if (error) co_return error;
  BIO* bytes = BIO_new(wire_method());
  if (!bytes) co_return setup_failure();
  wire_.socket = static_cast<int>(socket.native_handle());
  BIO_set_data(bytes, &wire_);
  SSL_set_bio(ssl_, bytes, bytes);  // ssl_ owns it from here
  if (!expect_peer(ssl_, host)) co_return setup_failure();
  SSL_set_connect_state(ssl_);
  auto shaking = until_done([this](std::size_t&) { return SSL_do_handshake(ssl_); });
  co_return (co_await std::move(shaking)).first;  // named above: g++ 12 and temporaries
}

asio::awaitable<std::pair<error_code, std::size_t>> tls_connection::write(
    asio::const_buffer bytes) {
  // All of it or nothing (no SSL_MODE_ENABLE_PARTIAL_WRITE), retried as it was first made.
  return until_done([this, bytes](std::size_t& written) {
    return SSL_write_ex(ssl_, bytes.data(), bytes.size(), &written);
  });
}

asio::awaitable<std::pair<error_code, std::size_t>> tls_connection::read_some(
    asio::mutable_buffer into) {
  return until_done([this, into](std::size_t& read) {
    return SSL_read_ex(ssl_, into.data(), into.size(), &read);
  });
}

error_code tls_connection::parse_buffered(http::basic_parser<false>& parser) {
  if (unparsed_.size() == 0) return http::error::need_more;
  error_code error;
  unparsed_.consume(parser.put(unparsed_.data(), error));
  return error;
}

asio::awaitable<error_code> tls_connection::parse_some(http::basic_parser<false>& parser) {
  // A TLS record's payload at most: one read takes a whole record.
  constexpr std::size_t read_size = 16 * 1024;
  for (;;) {
    if (const auto error = parse_buffered(parser); error != http::error::need_more) {
      co_return error;
    }
    auto reading = read_some(unparsed_.prepare(read_size));  // named: g++ 12 and temporaries
    auto [error, read] = co_await std::move(reading);
    unparsed_.commit(read);
    if (error == asio::error::eof) {
      // The end of an answer framed by the connection's close, or of one cut short.
      if (!parser.got_some()) co_return http::error::end_of_stream;
      error = {};
      parser.put_eof(error);
      co_return error;
    }
    if (error) co_return error;
  }
}

bool tls_connection::quiet() {
  if (has_unparsed() || wire_.received.size() > 0 || SSL_has_pending(ssl_)) return false;
  pollfd descriptor{};
  descriptor.fd = shared_->socket.native_handle();
  descriptor.events = POLLIN | POLLRDHUP;
  return ::poll(&descriptor, 1, 0) == 0;
}

}  // namespace token_broker
