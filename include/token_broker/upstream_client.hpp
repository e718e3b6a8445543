// Calls WeCom's gettoken over verified TLS, under one deadline for the whole call.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "token_broker/asio.hpp"
#include "token_broker/call_limit.hpp"
#include "token_broker/config.hpp"
#include "token_broker/fetch_result.hpp"

namespace token_broker {

class upstream_client {
 public:
  // At most this many gettoken calls (TLS connections) at once: enough to refresh thousands
  // of apps within minutes even at WeCom's latency, while a start with 10,000 apps opens 16
  // connections, not 10,000: kinder to WeCom, and to the heap, which otherwise keeps much of
  // the burst's ~100 KB per call in flight long after it is over (1,000 apps: 87 MB resident
  // without the cap, 20 MB with it).
  static constexpr std::size_t default_max_concurrent_calls = 16;

  // Throws config_error when upstream.ca_file is not a usable PEM bundle.
  explicit upstream_client(const upstream_config& config,
                           std::size_t max_concurrent_calls = default_max_concurrent_calls);

  // One gettoken call on the calling coroutine's executor. Never throws for network or
  // upstream trouble: every failure comes back classified. Nothing it returns or logs
  // contains the secret or the request URL.
  //
  // A call first waits for one of the max_concurrent_calls slots; upstream.timeout_ms then
  // bounds the call itself, and the token's expiry counts from when it got its slot.
  asio::awaitable<fetch_result> fetch_token(std::string_view corpid, std::string_view secret);

  const call_limit& calls() const { return calls_; }

 private:
  std::string gettoken_target(std::string_view corpid, std::string_view secret) const;

  upstream_config config_;
  std::string host_header_;
  asio::ssl::context tls_;
  call_limit calls_;  // shared by every app's calls through this client
};

// The client in force: a reload with new upstream settings replaces it, and a call in flight
// keeps the one it began with.
using shared_upstream = std::atomic<std::shared_ptr<upstream_client>>;

}  // namespace token_broker
