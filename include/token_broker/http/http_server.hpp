// The HTTP/1.1 API server: an accept loop per listener (plain, TLS, or TLS with client
// certificates; TCP or a unix socket) handing connections to the workers in turn, one
// coroutine per connection, keep-alive, and the limits that keep it answering under abuse
// (header and body caps, read and handshake deadlines against slowloris, an idle timeout, a
// connection cap shared by every listener).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/core/supervisor.hpp"
#include "token_broker/http/request_handler.hpp"
#include "token_broker/http/worker_pool.hpp"

namespace token_broker {

struct server_limits {
  std::size_t max_connections = 10000;
  std::chrono::milliseconds idle_timeout{60000};     // between requests on a keep-alive connection
  std::chrono::milliseconds request_timeout{10000};  // to read one request once it has begun
  std::uint32_t header_limit = 8 * 1024;
  std::uint64_t body_limit = 16 * 1024;  // for every route but the gateway's
  std::uint64_t gateway_body_limit = 0;  // gateway.max_body_bytes when it is enabled
};

using request_parser = http::request_parser<http::string_body>;

// Sets up a parser for one request as the server reads every request: the header cap and the
// largest body cap of any route. Not eager: a put() stops after the head, whose route sets its
// own body cap before the body is read. (The HTTP fuzzer sets its parser up here too, so it
// fuzzes what the server runs.)
void configure_request_parser(request_parser& parser, const server_limits& limits);

// The default connection cap: what the process's file descriptor limit leaves room for.
std::size_t connection_cap_from_fd_limit();

class http_server {
 public:
  // Binds and listens on each of `listeners` (accepting on `io`), and starts `workers` threads
  // that serve the connections. Throws boost::system::system_error when it cannot listen, and
  // config_error when a listener's certificate, key or CA is unusable.
  http_server(asio::io_context& io, const std::vector<listener_config>& listeners,
              request_handler& handler, server_limits limits, unsigned workers);
  ~http_server();  // stops the workers first
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Starts accepting, the accept loop a task of `tasks`.
  void start(supervisor& tasks);
  // Stops accepting. Connections finish the request they are on and then close.
  void stop();
  // SIGHUP: each TLS listener re-reads its certificate, key and client CA for the handshakes
  // from now on; open connections keep theirs. A listener whose files no longer make a
  // context logs why and keeps the one it has.
  void reload_tls();
  // Ends the workers; connections still open are dropped.
  void stop_workers();
  std::size_t requests_in_flight() const;

  // Defined in http_server.cpp only.
  struct shared_state;
  class listener;

 private:
  std::shared_ptr<shared_state> state_;
  worker_pool workers_;
  std::vector<std::unique_ptr<listener>> listeners_;
};

}  // namespace token_broker
