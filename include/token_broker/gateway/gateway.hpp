// The gateway (SPEC §8): a service's WeCom call made on its behalf with the app's current
// token, so that no service holds one. Budgets per corp and API path; a token upstream
// rejects is reported (compare-and-refresh) and the call made once more; the answer passed on
// as it arrives. Upstream connections come from a pool of the gateway's own, so API traffic
// can never take a credential refresh's connection.
#pragma once

#include <memory>
#include <string>

#include "token_broker/config/config.hpp"
#include "token_broker/credentials/refresher.hpp"
#include "token_broker/gateway/api_budget.hpp"
#include "token_broker/gateway/api_path.hpp"
#include "token_broker/gateway/gateway_metrics.hpp"
#include "token_broker/http/responses.hpp"
#include "token_broker/upstream/call_limit.hpp"
#include "token_broker/upstream/connection_pool.hpp"

namespace token_broker {

class gateway {
 public:
  struct call {
    std::shared_ptr<credential_refresher> token;  // the app's access_token
    std::string app;                              // its id, for metrics and the log
    std::string corpid;                           // whose budget the call spends
    http::verb method = http::verb::get;
    std::string api;    // the WeCom path, is_api_path() and not a credential call
    std::string query;  // as the caller gave it: any access_token in it is replaced
    std::string content_type;
    std::string body;
    bool drop_in = false;  // /cgi-bin/…: a missing token answered in WeCom's shape
  };

  // Throws config_error when upstream.ca_file is not a usable PEM bundle.
  gateway(const upstream_config& upstream, const gateway_config& settings,
          std::unique_ptr<api_budget> budget);

  // The caller's answer: upstream's status, Content-Type, Content-Disposition and body, or
  // the broker's own when no upstream answer is to be had. Never throws for upstream trouble.
  asio::awaitable<answer> forward(call asked);

  // At stop, once the HTTP workers' threads have ended and before their event loops go.
  void close_idle_connections() { pool_.close_idle(); }

  std::uint64_t max_body_bytes() const { return settings_.max_body_bytes; }
  // The gateway's metrics, and its upstream TLS handshakes (with the pool kept alive, about
  // one per connection rather than one per call).
  void render_metrics(std::string& out) const;
  std::uint64_t tls_handshakes() const { return pool_.tls_handshakes(); }

 private:
  // A call's answer once it is counted in the metrics and logged (the path only: the query
  // holds the token, and callers' parameters are theirs).
  answer counted(const call& asked, const std::string& label, std::string_view outcome,
                 std::chrono::steady_clock::time_point started, answer result);

  gateway_config settings_;
  connection_pool pool_;
  call_limit connections_;
  std::unique_ptr<api_budget> budget_;
  api_labels labels_;
  gateway_metrics metrics_;
};

}  // namespace token_broker
