// Calls WeCom's gettoken over verified TLS, under one deadline for the whole call.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include "token_broker/asio.hpp"
#include "token_broker/config.hpp"
#include "token_broker/fetch_result.hpp"

namespace token_broker {

class upstream_client {
 public:
  // Throws config_error when upstream.ca_file is not a usable PEM bundle.
  explicit upstream_client(const upstream_config& config);

  // One gettoken call on the calling coroutine's executor. Never throws for network or
  // upstream trouble: every failure comes back classified. Nothing it returns or logs
  // contains the secret or the request URL.
  asio::awaitable<fetch_result> fetch_token(std::string_view corpid, std::string_view secret);

 private:
  std::string gettoken_target(std::string_view corpid, std::string_view secret) const;

  upstream_config config_;
  std::string host_header_;
  asio::ssl::context tls_;
};

// The client in force: a reload with new upstream settings replaces it, and a call in flight
// keeps the one it began with.
using shared_upstream = std::atomic<std::shared_ptr<upstream_client>>;

}  // namespace token_broker
