#include "token_broker/http_server.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <filesystem>

namespace token_broker {

struct http_server::shared_state {
  request_handler& handler;
  server_limits limits;
  std::atomic<std::size_t> connections{0};
  std::atomic<std::size_t> requests_in_flight{0};
  std::atomic<bool> stopping{false};
};

class http_server::listener {
 public:
  virtual ~listener() = default;
  virtual void start() = 0;
  virtual void stop() = 0;
};

namespace {

using std::chrono::steady_clock;

template <class Protocol>
using stream_for =
    beast::basic_stream<Protocol, asio::any_io_executor, beast::unlimited_rate_policy>;

// Counts something for exactly as long as it lives.
class counted {
 public:
  explicit counted(std::atomic<std::size_t>& count) : count_(count) { ++count_; }
  ~counted() { --count_; }
  counted(const counted&) = delete;
  counted& operator=(const counted&) = delete;

 private:
  std::atomic<std::size_t>& count_;
};

// Closing a socket with unread input resets the connection, and the reset can destroy the
// answer before the client reads it. So after answering a request it would not read (too
// large, malformed), half-close and discard what the client still sends, briefly and boundedly.
template <class Protocol>
asio::awaitable<void> drain_before_close(stream_for<Protocol>& stream) {
  constexpr std::size_t drain_limit = 1024 * 1024;
  error_code ignored;
  stream.socket().shutdown(asio::socket_base::shutdown_send, ignored);
  stream.expires_after(std::chrono::seconds{1});
  std::array<char, 16 * 1024> discard{};
  for (std::size_t drained = 0; drained < drain_limit;) {
    auto [error, read] =
        co_await stream.async_read_some(asio::buffer(discard), asio::as_tuple(asio::use_awaitable));
    if (error) break;
    drained += read;
  }
}

template <class Protocol>
asio::awaitable<void> serve_connection(stream_for<Protocol> stream,
                                       std::shared_ptr<http_server::shared_state> state) {
  const counted connection(state->connections);
  const auto& limits = state->limits;
  const auto as_tuple = asio::as_tuple(asio::use_awaitable);
  beast::flat_buffer buffer(limits.header_limit + limits.body_limit + 4096);

  for (;;) {
    if (buffer.size() == 0) {
      // Idle between requests: the next one must begin within idle_timeout.
      stream.expires_after(limits.idle_timeout);
      auto [error, read] = co_await stream.async_read_some(buffer.prepare(1024), as_tuple);
      if (error) break;
      buffer.commit(read);
    }

    // Once a request has begun it must arrive whole within request_timeout, however slowly
    // its bytes trickle in (slowloris).
    http::request_parser<http::string_body> parser;
    parser.header_limit(limits.header_limit);
    parser.body_limit(limits.body_limit);
    stream.expires_after(limits.request_timeout);
    auto [read_error, read] = co_await http::async_read(stream, buffer, parser, as_tuple);
    if (read_error) {
      if (auto answer = state->handler.answer_unreadable(read_error)) {
        answer->keep_alive(false);
        co_await http::async_write(stream, *answer, as_tuple);
        co_await drain_before_close(stream);
      }
      break;
    }

    const counted in_flight(state->requests_in_flight);
    auto answer = co_await state->handler.handle(parser.get());
    answer.keep_alive(parser.get().keep_alive() && !state->stopping);
    stream.expires_after(limits.request_timeout);
    auto [write_error, written] = co_await http::async_write(stream, answer, as_tuple);
    if (write_error || !answer.keep_alive()) break;
  }

  // Half-close rather than close, so the client reads the last answer before the FIN.
  error_code ignored;
  stream.socket().shutdown(asio::socket_base::shutdown_send, ignored);
}

template <class Protocol>
class protocol_listener final : public http_server::listener {
 public:
  protocol_listener(asio::io_context& io, const typename Protocol::endpoint& endpoint,
                    std::shared_ptr<http_server::shared_state> state)
      : io_(io),
        acceptor_(asio::make_strand(io)),
        retry_timer_(acceptor_.get_executor()),
        state_(std::move(state)) {
    acceptor_.open(endpoint.protocol());
    if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) {
      acceptor_.set_option(asio::socket_base::reuse_address(true));
    }
    acceptor_.bind(endpoint);
    acceptor_.listen(asio::socket_base::max_listen_connections);
  }

  void start() override { asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached); }

  void stop() override {
    asio::post(acceptor_.get_executor(), [this] {
      error_code ignored;
      acceptor_.close(ignored);
      retry_timer_.cancel();
    });
  }

 private:
  asio::awaitable<void> accept_loop() {
    const auto as_tuple = asio::as_tuple(asio::use_awaitable);
    while (!state_->stopping) {
      // Each connection gets a strand of its own: the io threads share the connections.
      asio::any_io_executor connection_executor = asio::make_strand(io_);
      auto [error, socket] = co_await acceptor_.async_accept(connection_executor, as_tuple);
      if (state_->stopping || error == asio::error::operation_aborted) break;
      if (error) {
        // Out of file descriptors, most likely: shed load for a moment instead of spinning.
        log_rate_limited("accept failed: {}; pausing accepts for 100 ms", error.message());
        retry_timer_.expires_after(std::chrono::milliseconds{100});
        co_await retry_timer_.async_wait(as_tuple);
        continue;
      }
      if (state_->connections >= state_->limits.max_connections) {
        log_rate_limited("connection cap of {} reached; refusing new connections",
                         state_->limits.max_connections);
        continue;  // the socket closes as it goes out of scope
      }
      if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) {
        error_code ignored;  // small answers: don't let Nagle hold them back
        socket.set_option(asio::ip::tcp::no_delay(true), ignored);
      }
      asio::co_spawn(connection_executor,
                     serve_connection<Protocol>(stream_for<Protocol>(std::move(socket)), state_),
                     asio::detached);
    }
  }

  template <class... Args>
  void log_rate_limited(spdlog::format_string_t<Args...> format, Args&&... args) {
    const auto now = steady_clock::now();
    if (now - last_warning_ < std::chrono::seconds{1}) return;
    last_warning_ = now;
    spdlog::warn(format, std::forward<Args>(args)...);
  }

  asio::io_context& io_;
  typename Protocol::acceptor acceptor_;
  asio::steady_timer retry_timer_;
  std::shared_ptr<http_server::shared_state> state_;
  steady_clock::time_point last_warning_{};
};

}  // namespace

std::size_t connection_cap_from_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 10000;
  // Keep descriptors back for upstream calls, logs and the listener itself.
  const auto usable = limit.rlim_cur > 256 ? limit.rlim_cur - 128 : limit.rlim_cur / 2;
  return std::max<std::size_t>(1, std::min<std::size_t>(usable, 100000));
}

http_server::http_server(asio::io_context& io, const listen_address& where,
                         request_handler& handler, server_limits limits)
    : state_(std::make_shared<shared_state>(handler, limits)) {
  if (where.type == listen_address::kind::unix_socket) {
    // A socket file left by a previous run would make bind fail; anything else is kept.
    if (std::filesystem::is_socket(std::filesystem::symlink_status(where.path))) {
      std::filesystem::remove(where.path);
    }
    listener_ = std::make_unique<protocol_listener<asio::local::stream_protocol>>(
        io, asio::local::stream_protocol::endpoint(where.path), state_);
  } else {
    listener_ = std::make_unique<protocol_listener<asio::ip::tcp>>(
        io, asio::ip::tcp::endpoint(asio::ip::make_address(where.host), where.port), state_);
  }
}

http_server::~http_server() = default;

void http_server::start() {
  listener_->start();
}

void http_server::stop() {
  state_->stopping = true;
  listener_->stop();
}

std::size_t http_server::requests_in_flight() const {
  return state_->requests_in_flight;
}

}  // namespace token_broker
