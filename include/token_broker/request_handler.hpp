// Turns one HTTP request into its answer: routing, the one authentication point, the calls
// of SPEC §4, and the request metrics.
#pragma once

#include <atomic>
#include <memory>

#include "token_broker/asio.hpp"
#include "token_broker/broker.hpp"
#include "token_broker/client_auth.hpp"
#include "token_broker/metrics.hpp"
#include "token_broker/published.hpp"
#include "token_broker/responses.hpp"
#include "token_broker/routes.hpp"

namespace token_broker {

using request = http::request<http::string_body>;

class request_handler {
 public:
  request_handler(const broker& apps, std::vector<client_config> clients)
      : apps_(apps), auth_(std::make_shared<const client_auth>(std::move(clients))) {}
  ~request_handler();

  // Never throws: a failure inside becomes a 500 answer. Runs on the HTTP workers, each of
  // which reads the clients, the app set and the tokens through a copy of its own.
  asio::awaitable<answer> handle(const request& incoming);
  // The answer to a request that could not be parsed (too large, malformed), or nothing when
  // there is nobody left to answer (the client went away, the read timed out).
  std::optional<response> answer_unreadable(const error_code& error);

  // A reload's clients, for every request from now on.
  void set_clients(std::vector<client_config> clients) {
    auth_.store(std::make_shared<const client_auth>(std::move(clients)));
  }

 private:
  asio::awaitable<answer> dispatch(const route& call, const request& incoming);
  asio::awaitable<answer> app_token(app_refresher& app,
                                    const std::shared_ptr<const app_view>& seen);
  asio::awaitable<answer> invalidate(app_refresher& app, std::string_view body);
  asio::awaitable<answer> wecom_gettoken(const route& call);
  response list_apps(const client_auth& auth, const client_config* client) const;
  response readiness() const;

  const broker& apps_;
  published<client_auth> auth_;
  request_metrics metrics_;
};

}  // namespace token_broker
