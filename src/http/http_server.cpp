#include "token_broker/http/http_server.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>

#include "token_broker/core/counted.hpp"
#include "token_broker/http/listener_tls.hpp"

namespace token_broker {

struct http_server::shared_state {
  // Spelt out for make_shared: clang 14 (the fuzzing build) lacks C++20's parenthesized
  // aggregate initialization.
  shared_state(request_handler& serving, server_limits bounds) : handler(serving), limits(bounds) {}

  request_handler& handler;
  server_limits limits;
  std::atomic<std::size_t> connections{0};
  std::atomic<std::size_t> requests_in_flight{0};
  std::atomic<bool> stopping{false};
};

class http_server::listener {
 public:
  virtual ~listener() = default;
  virtual void start(supervisor& tasks) = 0;
  virtual void stop() = 0;
  virtual void reload_tls() = 0;
};

namespace {

using std::chrono::steady_clock;

// A connection's executor is its worker's io_context itself: no strand, no type erasure.
template <class Protocol>
using socket_for =
    typename Protocol::socket::template rebind_executor<asio::io_context::executor_type>::other;
using tls_stream = asio::ssl::stream<socket_for<asio::ip::tcp>>;

template <class Stream>
constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

// The socket under a stream: the stream itself, or what TLS runs over.
template <class Stream>
auto& socket_of(Stream& stream) {
  if constexpr (is_tls<Stream>) {
    return stream.next_layer();
  } else {
    return stream;
  }
}

// A connection's stream, who is at its other end, and the deadline its current phase must
// meet. Arming a timer for every read and write cost a timer-queue insert and cancel per
// request, the largest cost the profile showed once answers were prepared. Here a phase only
// moves the deadline; one timer per connection wakes at most every `tick` (the shortest
// timeout) or at the deadline, and closes the socket once the deadline has passed, which
// fails the read, write or handshake pending.
template <class Stream>
class connection {
 public:
  // Counted in `open_connections` from its accept to its end: the accept loop checks the
  // cap against that count before the connection's first coroutine has even started.
  // `tls`: the context a TLS stream's handshake uses, held as long as the stream.
  template <class Socket>
  connection(Socket socket, std::shared_ptr<asio::ssl::context> tls, peer_identity from,
             std::chrono::milliseconds tick, std::atomic<std::size_t>& open_connections)
      : tls_(std::move(tls)),
        stream_(make_stream(std::move(socket), tls_.get())),
        timer_(socket_of(stream_).get_executor()),
        tick_(tick),
        open_(open_connections),
        peer(std::move(from)) {}

  Stream& socket() { return stream_; }

  // Moves the deadline. The timer wakes within `tick`, so a deadline at least `tick` away
  // needs nothing more.
  void expires_after(std::chrono::milliseconds timeout) {
    deadline_ = steady_clock::now() + timeout;
    if (timeout < tick_) timer_.cancel();  // wake now and plan for the nearer deadline
  }
  // While the request is being answered: a cold app may wait for upstream.
  void no_deadline() { deadline_ = steady_clock::time_point::max(); }

  asio::awaitable<void> enforce_deadlines() {
    while (!finished_) {
      const auto now = steady_clock::now();
      if (now >= deadline_) {
        error_code ignored;
        socket_of(stream_).close(ignored);
        break;
      }
      timer_.expires_at(std::min(deadline_, now + tick_));
      co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  void finish() {
    finished_ = true;
    timer_.cancel();
  }

 private:
  template <class Socket>
  static Stream make_stream(Socket socket, asio::ssl::context* tls) {
    if constexpr (is_tls<Stream>) {
      return Stream(std::move(socket), *tls);
    } else {
      return socket;
    }
  }

  std::shared_ptr<asio::ssl::context> tls_;
  Stream stream_;
  asio::basic_waitable_timer<steady_clock, asio::wait_traits<steady_clock>,
                             asio::io_context::executor_type>
      timer_;
  std::chrono::milliseconds tick_;
  steady_clock::time_point deadline_ = steady_clock::time_point::max();
  bool finished_ = false;
  counted open_;

 public:
  peer_identity peer;  // the certificate's digest is added once the handshake verified it
};

// Closing a socket with unread input resets the connection, and the reset can destroy the
// answer before the client reads it. So after answering a request it would not read (too
// large, malformed), half-close and discard what the client still sends, briefly and boundedly.
template <class Stream>
asio::awaitable<void> drain_before_close(connection<Stream>& client) {
  constexpr std::size_t drain_limit = 1024 * 1024;
  auto& socket = socket_of(client.socket());  // under TLS, what is left is discarded unread
  error_code ignored;
  socket.shutdown(asio::socket_base::shutdown_send, ignored);
  client.expires_after(std::chrono::seconds{1});
  std::array<char, 16 * 1024> discard{};
  for (std::size_t drained = 0; drained < drain_limit;) {
    auto [error, read] =
        co_await socket.async_read_some(asio::buffer(discard), asio::as_tuple(asio::use_awaitable));
    if (error) break;
    drained += read;
  }
}

// Sends at once what the socket takes, as nginx does, and waits for the reactor only for what
// a full socket buffer leaves. An async_write would complete through the worker's queue even
// when the socket took everything, behind every other connection's handlers.
//
// Under TLS the pieces are gathered first: the stream encrypts a buffer sequence one buffer at
// a time, a record and a send each, where one answer should be one record and one send.
template <class Stream, class Buffers>
asio::awaitable<error_code> send(Stream& stream, const Buffers& buffers) {
  if constexpr (is_tls<Stream>) {
    std::string gathered(asio::buffer_size(buffers), '\0');
    asio::buffer_copy(asio::buffer(gathered), buffers);
    auto [error, written] = co_await asio::async_write(stream, asio::buffer(gathered),
                                                       asio::as_tuple(asio::use_awaitable));
    co_return error;
  } else {
    error_code error;
    const auto sent = stream.write_some(buffers, error);  // the socket is non-blocking
    if (!error && sent == asio::buffer_size(buffers)) co_return error;
    if (error && error != asio::error::would_block) co_return error;
    beast::buffers_suffix<Buffers> rest(buffers);
    rest.consume(sent);
    auto [async_error, written] =
        co_await asio::async_write(stream, rest, asio::as_tuple(asio::use_awaitable));
    co_return async_error;
  }
}

// A relayed body goes out piece by piece as upstream sends it, framed by Content-Length when
// upstream gave one, else chunked. Each piece must reach the client within request_timeout.
template <class Stream>
asio::awaitable<error_code> relay(connection<Stream>& client, relayed_answer& outgoing,
                                  std::chrono::milliseconds timeout) {
  const bool chunked = !outgoing.head.has_content_length();
  if (chunked) outgoing.head.set(http::field::transfer_encoding, "chunked");
  const auto head = response_head(outgoing.head);
  auto error = co_await send(client.socket(), asio::buffer(head));
  while (!error) {
    client.no_deadline();  // upstream's wait for each piece has its own (gateway.timeout_ms)
    auto reading = outgoing.body->next();  // named: g++ 12 mishandles temporaries here
    const auto piece = co_await std::move(reading);
    if (!piece) co_return asio::error::connection_aborted;  // cut short: the client must see it
    client.expires_after(timeout);
    if (!chunked) {
      if (piece->empty()) break;
      error = co_await send(client.socket(), asio::buffer(*piece));
      continue;
    }
    std::array<char, 20> size{};
    const auto size_end = std::to_chars(size.begin(), size.end(), piece->size(), 16).ptr;
    const std::array<asio::const_buffer, 4> framed{
        asio::buffer(size.data(), static_cast<std::size_t>(size_end - size.begin())),
        asio::buffer("\r\n", 2), asio::buffer(*piece),
        asio::buffer(piece->empty() ? "\r\n\r\n" : "\r\n", piece->empty() ? 4 : 2)};
    error = co_await send(client.socket(), framed);
    if (piece->empty()) break;
  }
  co_return error;
}

// An answer goes out in one gathered write: a token answer as its prepared bytes, a relayed
// one as upstream sends it, anything else as its head formatted here and its body.
template <class Stream>
asio::awaitable<error_code> write(connection<Stream>& client, answer& outgoing, bool keep_alive,
                                  std::chrono::milliseconds timeout) {
  auto& socket = client.socket();
  if (auto* prepared = std::get_if<token_answer>(&outgoing)) {
    const token_answer_bytes bytes(*prepared, keep_alive);
    const auto buffers = bytes.buffers();  // named: g++ 12 mishandles temporaries here
    co_return co_await send(socket, buffers);
  }
  if (auto* relayed = std::get_if<relayed_answer>(&outgoing)) {
    relayed->head.keep_alive(keep_alive);
    co_return co_await relay(client, *relayed, timeout);
  }
  if (const auto* formatted = std::get_if<formatted_response>(&outgoing)) {
    constexpr std::string_view kept = "\r\n", closed = "Connection: close\r\n\r\n";
    const std::array<asio::const_buffer, 3> buffers{asio::buffer(formatted->head),
                                                    asio::buffer(keep_alive ? kept : closed),
                                                    asio::buffer(formatted->body)};
    co_return co_await send(socket, buffers);
  }
  auto& other = std::get<response>(outgoing);
  other.keep_alive(keep_alive);
  const auto head = response_head(other);
  const std::array<asio::const_buffer, 2> buffers{asio::buffer(head), asio::buffer(other.body())};
  co_return co_await send(socket, buffers);
}

template <class Stream>
asio::awaitable<void> serve_requests(connection<Stream>& client, http_server::shared_state& state) {
  const auto& limits = state.limits;
  const auto as_tuple = asio::as_tuple(asio::use_awaitable);
  auto& socket = client.socket();
  error_code ignored;
  socket_of(socket).non_blocking(true, ignored);  // for send(): writes that cannot complete say so
  beast::flat_buffer buffer(limits.header_limit + limits.body_limit + 4096);

  bool waited = false;
  for (;;) {
    if (buffer.size() == 0) {
      // Idle between requests: the next one must begin within idle_timeout.
      client.expires_after(limits.idle_timeout);
      // After an answer that waited (a gateway call), the next request is rarely in yet, and
      // reading at once costs a syscall that finds nothing; the loop's other work goes first.
      if (waited) co_await asio::post(asio::use_awaitable);
      auto [error, read] = co_await socket.async_read_some(buffer.prepare(1024), as_tuple);
      if (error) break;
      buffer.commit(read);
    }

    request_parser parser;
    configure_request_parser(parser, limits);
    // Usually the whole request came with the first read: parse it here. http::async_read
    // would too, but complete through the worker's queue, behind every other connection.
    // The head first: its route decides how large a body may be.
    error_code read_error;
    buffer.consume(parser.put(buffer.data(), read_error));
    if (read_error == http::error::need_more || (!read_error && !parser.is_header_done())) {
      // Once a request has begun it must arrive whole within request_timeout, however
      // slowly its bytes trickle in (slowloris).
      client.expires_after(limits.request_timeout);
      auto [error, read] = co_await http::async_read_header(socket, buffer, parser, as_tuple);
      read_error = error;
    }
    if (!read_error && !parser.is_done()) {
      const auto allowed = state.handler.body_limit(parser.get(), limits.body_limit);
      if (parser.content_length().value_or(0) > allowed) {
        read_error = http::error::body_limit;
      } else {
        parser.body_limit(allowed);
        parser.eager(true);
        if (parser.get()[http::field::expect] == "100-continue") {
          const auto go_on = asio::buffer("HTTP/1.1 100 Continue\r\n\r\n", 25);
          read_error = co_await send(socket, go_on);
        }
        if (!read_error && buffer.size() > 0) {
          buffer.consume(parser.put(buffer.data(), read_error));
        }
        if (read_error == http::error::need_more || (!read_error && !parser.is_done())) {
          client.expires_after(limits.request_timeout);
          auto [error, read] = co_await http::async_read(socket, buffer, parser, as_tuple);
          read_error = error;
        }
      }
    }
    if (read_error) {
      if (auto refusal = state.handler.answer_unreadable(read_error)) {
        answer outgoing{std::move(*refusal)};
        co_await write(client, outgoing, /*keep_alive=*/false, limits.request_timeout);
        co_await drain_before_close(client);
      }
      break;
    }

    const counted in_flight(state.requests_in_flight);
    auto decided = state.handler.answer_or_wait(parser.get(), client.peer);
    waited = std::holds_alternative<waiting_request>(decided);
    if (auto* waiting = std::get_if<waiting_request>(&decided)) {
      client.no_deadline();  // the wait is bounded by upstream.timeout_ms
      auto operation = state.handler.answer_after_wait(std::move(*waiting));
      decided = co_await std::move(operation);
    }
    auto& outgoing = std::get<answer>(decided);
    const bool keep_alive = parser.get().keep_alive() && !state.stopping;
    client.expires_after(limits.request_timeout);
    const auto write_error = co_await write(client, outgoing, keep_alive, limits.request_timeout);
    if (write_error || !keep_alive) break;
  }

  // Half-close rather than close, so the client reads the last answer before the FIN. (Under
  // TLS without a close_notify: every answer is framed, so nothing can be cut off unseen.)
  socket_of(socket).shutdown(asio::socket_base::shutdown_send, ignored);
}

// Handshakes that fail (plain HTTP to a TLS port, an untrusted certificate, garbage) are the
// client's problem, logged at debug level: at info, a scanner could fill the log.
template <class Stream>
asio::awaitable<void> serve_connection(std::shared_ptr<connection<Stream>> client,
                                       std::shared_ptr<http_server::shared_state> state) {
  if constexpr (is_tls<Stream>) {
    // A handshake, however slowly its bytes arrive, must end within request_timeout.
    client->expires_after(state->limits.request_timeout);
    auto [error] = co_await client->socket().async_handshake(asio::ssl::stream_base::server,
                                                             asio::as_tuple(asio::use_awaitable));
    if (error) {
      spdlog::debug("TLS handshake with {} on {} failed: {}", client->peer.address,
                    client->peer.listener, error.message());
      client->finish();
      co_return;
    }
    client->peer.certificate = peer_certificate_sha256(client->socket().native_handle());
  }
  co_await serve_requests(*client, *state);
  client->finish();
}

// Who a new connection comes from: its address, or on a unix socket the peer's uid.
template <class Socket>
peer_identity identify_peer(Socket& socket, std::string_view listener) {
  peer_identity peer{.listener = listener};
  if constexpr (std::is_same_v<typename Socket::protocol_type, asio::ip::tcp>) {
    error_code error;
    const auto remote = socket.remote_endpoint(error);
    if (!error) {
      const auto address = remote.address();
      peer.address = address.is_v6() ? fmt::format("[{}]:{}", address.to_string(), remote.port())
                                     : fmt::format("{}:{}", address.to_string(), remote.port());
    }
  } else {
    ucred credentials{};
    socklen_t size = sizeof credentials;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &size) == 0) {
      peer.uid = credentials.uid;
      peer.address = fmt::format("uid {}", credentials.uid);
    }
  }
  return peer;
}

// Accepts on one address; `Stream` is the connections' stream: the socket, or TLS over it.
template <class Protocol, class Stream>
class protocol_listener final : public http_server::listener {
 public:
  protocol_listener(asio::io_context& io, worker_pool& workers, const listener_config& settings,
                    std::string field, const typename Protocol::endpoint& endpoint,
                    std::shared_ptr<http_server::shared_state> state)
      : workers_(workers),
        settings_(settings),
        field_(std::move(field)),
        name_(settings.address.to_string()),
        protocol_(endpoint.protocol()),
        acceptor_(asio::make_strand(io)),
        retry_timer_(acceptor_.get_executor()),
        state_(std::move(state)) {
    if constexpr (is_tls<Stream>) tls_ = make_listener_tls_context(*settings_.tls, field_);
    acceptor_.open(endpoint.protocol());
    if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) {
      acceptor_.set_option(asio::socket_base::reuse_address(true));
    }
    acceptor_.bind(endpoint);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    acceptor_.non_blocking(true);  // shed_one() must never wait for a connection
    reserve_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  ~protocol_listener() override {
    if (reserve_ >= 0) ::close(reserve_);
  }

  void start(supervisor& tasks) override {
    tasks.spawn(acceptor_.get_executor(), "listener", "http listener on " + name_,
                [this] { return accept_loop(); });
  }

  void stop() override {
    asio::post(acceptor_.get_executor(), [this] {
      error_code ignored;
      acceptor_.close(ignored);
      retry_timer_.cancel();
    });
  }

  void reload_tls() override {
    if constexpr (is_tls<Stream>) {
      try {
        auto next = make_listener_tls_context(*settings_.tls, field_);
        // Swapped on the accept loop's strand, the only place that reads it.
        asio::post(acceptor_.get_executor(),
                   [this, next = std::move(next)]() mutable { tls_ = std::move(next); });
        spdlog::info("reload: {} TLS certificate and key re-read", name_);
      } catch (const config_error& error) {
        spdlog::error("reload: {} keeps its TLS certificate: {}", name_, error.what());
      }
    }
  }

 private:
  asio::awaitable<void> accept_loop() {
    const auto as_tuple = asio::as_tuple(asio::use_awaitable);
    while (!state_->stopping) {
      auto [error, socket] = co_await acceptor_.async_accept(as_tuple);
      if (state_->stopping || error == asio::error::operation_aborted) break;
      if (error && out_of_descriptors(error) && shed_one()) {
        log_rate_limited("out of file descriptors ({}); shedding new connections", error.message());
        continue;
      }
      if (error) {
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
      // The connection lives on one worker from now on. Accepted here and handed over, so that
      // no operation pending on this loop holds a socket of a worker's (which may be gone
      // first at shutdown).
      auto& worker = workers_.next();
      error_code handover_error;
      const auto descriptor = socket.release(handover_error);
      if (handover_error) continue;  // the socket still owns it and closes it
      socket_for<Protocol> handed_over(worker);
      handed_over.assign(protocol_, descriptor, handover_error);
      if (handover_error) {
        ::close(descriptor);
        continue;
      }
      auto peer = identify_peer(handed_over, name_);
      // Both coroutines share the connection; each runs on the worker's one thread.
      const auto tick = std::min(state_->limits.idle_timeout, state_->limits.request_timeout);
      auto client = std::make_shared<connection<Stream>>(
          std::move(handed_over), tls_, std::move(peer), tick, state_->connections);
      asio::co_spawn(
          worker, [client]() { return client->enforce_deadlines(); }, asio::detached);
      asio::co_spawn(worker, serve_connection(std::move(client), state_), asio::detached);
    }
  }

  static bool out_of_descriptors(const error_code& error) {
    return error == asio::error::no_descriptors || error.value() == ENFILE;
  }

  // Out of descriptors, a connection cannot be accepted, only left in the listen queue, where
  // its client waits with no answer. So one descriptor is kept in reserve and spent on taking
  // the next connection and closing it at once: the client learns at once, and the queue moves.
  bool shed_one() {
    if (reserve_ < 0) return false;
    ::close(reserve_);
    error_code ignored;
    acceptor_.accept(ignored);  // the socket closes as it goes out of scope
    reserve_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return true;
  }

  template <class... Args>
  void log_rate_limited(spdlog::format_string_t<Args...> format, Args&&... args) {
    const auto now = steady_clock::now();
    if (now - last_warning_ < std::chrono::seconds{1}) return;
    last_warning_ = now;
    spdlog::warn(format, std::forward<Args>(args)...);
  }

  worker_pool& workers_;
  listener_config settings_;
  std::string field_;  // "listen[1].tls": where its TLS files are configured
  std::string name_;   // its address, as peers are told which listener they came in on
  std::shared_ptr<asio::ssl::context> tls_;  // the handshakes' from now on (TLS listeners)
  Protocol protocol_;
  typename Protocol::acceptor acceptor_;
  asio::steady_timer retry_timer_;
  std::shared_ptr<http_server::shared_state> state_;
  int reserve_ = -1;  // a descriptor to give up for shed_one()
  steady_clock::time_point last_warning_{};
};

}  // namespace

void configure_request_parser(request_parser& parser, const server_limits& limits) {
  parser.header_limit(limits.header_limit);
  // The largest any route takes; a route's own limit is set once its head is read.
  parser.body_limit(std::max(limits.body_limit, limits.gateway_body_limit));
}

std::size_t connection_cap_from_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 10000;
  // Keep descriptors back for upstream calls (up to 16 at once), Redis, the event loops, logs
  // and the listener: 128, or three quarters of a limit too small for that.
  const auto usable = limit.rlim_cur - std::min<rlim_t>(128, limit.rlim_cur * 3 / 4);
  return std::max<std::size_t>(1, std::min<std::size_t>(usable, 100000));
}

namespace {

std::unique_ptr<http_server::listener> make_listener(
    asio::io_context& io, worker_pool& workers, const listener_config& settings, std::string field,
    const std::shared_ptr<http_server::shared_state>& state) {
  const auto& where = settings.address;
  if (where.type == listen_address::kind::unix_socket) {
    // A socket file left by a previous run would make bind fail; anything else is kept.
    if (std::filesystem::is_socket(std::filesystem::symlink_status(where.path))) {
      std::filesystem::remove(where.path);
    }
    using local = asio::local::stream_protocol;
    return std::make_unique<protocol_listener<local, socket_for<local>>>(
        io, workers, settings, std::move(field), local::endpoint(where.path), state);
  }
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address(where.host), where.port);
  if (settings.tls) {
    return std::make_unique<protocol_listener<asio::ip::tcp, tls_stream>>(
        io, workers, settings, std::move(field), endpoint, state);
  }
  return std::make_unique<protocol_listener<asio::ip::tcp, socket_for<asio::ip::tcp>>>(
      io, workers, settings, std::move(field), endpoint, state);
}

}  // namespace

http_server::http_server(asio::io_context& io, const std::vector<listener_config>& listeners,
                         request_handler& handler, server_limits limits, unsigned workers)
    : state_(std::make_shared<shared_state>(handler, limits)), workers_(workers) {
  for (std::size_t i = 0; i < listeners.size(); ++i) {
    listeners_.push_back(
        make_listener(io, workers_, listeners[i], "listen[" + std::to_string(i) + "].tls", state_));
  }
}

http_server::~http_server() {
  workers_.stop();  // before the listener and the state their connections use
}

void http_server::start(supervisor& tasks) {
  for (auto& each : listeners_) each->start(tasks);
}

void http_server::stop() {
  state_->stopping = true;
  for (auto& each : listeners_) each->stop();
}

void http_server::reload_tls() {
  for (auto& each : listeners_) each->reload_tls();
}

void http_server::stop_workers() {
  workers_.stop();
}

std::size_t http_server::requests_in_flight() const {
  return state_->requests_in_flight;
}

}  // namespace token_broker
