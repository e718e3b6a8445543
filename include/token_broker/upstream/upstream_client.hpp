// Calls WeCom over verified TLS on kept-alive connections, each call under one deadline.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/core/clock.hpp"
#include "token_broker/credentials/fetch_result.hpp"
#include "token_broker/upstream/call_limit.hpp"
#include "token_broker/upstream/connection_pool.hpp"

namespace token_broker {

// One call to WeCom. The target holds credentials in its query: it is never logged, nor is
// anything built from it.
struct upstream_request {
  http::verb method = http::verb::get;
  std::string target;                    // path and query, after base_url's path prefix
  std::optional<std::string> json_body;  // sent as application/json (a POST's body)
};

// What upstream answered, whatever the status: reading it is the caller's business.
struct upstream_response {
  unsigned status = 0;
  std::string body;
  time_point sent_at;              // the call began: no attempt's request left before it
  time_point received_at;          // the answer arrived
  wall_time_point sent_at_wall{};  // the wall clock when the request left
};

// An answer, or a failure below WeCom's JSON (network, TLS, timeout), classified transient.
using upstream_result = std::variant<upstream_response, fetch_failure>;

// Appends `text` to `out` percent-encoded for a query (all but RFC 3986's unreserved).
void percent_encode(std::string& out, std::string_view text);
// GET /cgi-bin/gettoken for `corpid` and `secret`, percent-encoded.
std::string gettoken_target(std::string_view corpid, std::string_view secret);

// What the credential engine needs of upstream: a place in line, then a call. upstream_client
// is the real one; the simulated-time tests put a simulated WeCom behind the same interface.
class upstream_caller {
 public:
  // One of the slots that cap concurrent calls, held until destroyed. A call needs one.
  using slot = call_limit::permit;
  virtual ~upstream_caller() = default;

  // Waits (first come, first served) for a slot. Take one before anything whose time counts
  // against the call, like the refresh lock: the wait in line can be long.
  virtual asio::awaitable<slot> reserve() = 0;
  // One call, holding `held`. Never throws for network or upstream trouble.
  virtual asio::awaitable<upstream_result> call(const slot& held, upstream_request request) = 0;
};

class upstream_client final : public upstream_caller {
 public:
  // At most this many calls (TLS connections) at once: enough to refresh thousands of apps
  // within minutes even at WeCom's latency, while a start with 10,000 apps opens 16
  // connections, not 10,000: kinder to WeCom, and to the heap, which otherwise keeps much of
  // the burst's ~100 KB per call in flight long after it is over (1,000 apps: 87 MB resident
  // without the cap, 20 MB with it).
  static constexpr std::size_t default_max_concurrent_calls = 16;

  // Throws config_error when upstream.ca_file is not a usable PEM bundle.
  explicit upstream_client(const upstream_config& config,
                           std::size_t max_concurrent_calls = default_max_concurrent_calls);

  // One of max_concurrent_calls slots of this client.
  asio::awaitable<slot> reserve() override;

  // One call on the calling coroutine's executor, holding `held` (from this client's
  // reserve()). upstream.timeout_ms bounds it whole: connect, TLS handshake, request and
  // answer. Never throws for network or upstream trouble: every failure comes back
  // classified, and nothing it returns contains the target or the body.
  //
  // Connections are kept alive and reused. A request that meets a reused connection closed
  // by upstream (its write fails, or the connection ends before a byte of the answer) is sent
  // once more on a new connection, within the same deadline. That may repeat a request
  // upstream had read: harmless for the credential calls this client makes, which hand out
  // the current credential again (or a new one, the old one living on).
  asio::awaitable<upstream_result> call(const slot& held, upstream_request request) override;
  // The same, waiting for a slot first; the deadline starts once it has one.
  asio::awaitable<upstream_result> call(upstream_request request);

  // gettoken, its answer read strictly (parse_gettoken_answer); the token's expiry counts
  // from when the call began, before any connection was made.
  asio::awaitable<fetch_result> fetch_token(const slot& held, std::string_view corpid,
                                            std::string_view secret);
  asio::awaitable<fetch_result> fetch_token(std::string_view corpid, std::string_view secret);

  const call_limit& calls() const { return calls_; }
  std::chrono::milliseconds timeout() const { return config_.timeout; }
  // TLS handshakes made so far: with connections reused, far fewer than calls.
  std::uint64_t tls_handshakes() const { return connections_.tls_handshakes(); }

 private:
  struct exchange;

  asio::awaitable<upstream_result> call_until(std::chrono::steady_clock::time_point deadline,
                                              const upstream_request& request);
  asio::awaitable<exchange> send_and_receive(tls_connection& connection,
                                             std::chrono::steady_clock::time_point deadline,
                                             const upstream_request& request);

  upstream_config config_;
  // Never more idle than the slots: a call opens a connection only when none is idle.
  connection_pool connections_;
  call_limit calls_;  // shared by every app's calls through this client
};

}  // namespace token_broker
