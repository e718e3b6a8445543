// Turns one HTTP request into its answer: routing, the one authentication point, and the
// calls of SPEC §4.
#pragma once

#include "token_broker/asio.hpp"
#include "token_broker/broker.hpp"
#include "token_broker/client_auth.hpp"
#include "token_broker/responses.hpp"
#include "token_broker/routes.hpp"

namespace token_broker {

using request = http::request<http::string_body>;

class request_handler {
 public:
  request_handler(const broker& apps, client_auth auth) : apps_(apps), auth_(std::move(auth)) {}

  // Never throws: a failure inside becomes a 500 answer.
  asio::awaitable<response> handle(const request& incoming);

 private:
  asio::awaitable<response> dispatch(const route& call, const request& incoming);
  asio::awaitable<response> app_token(app_refresher& app);
  asio::awaitable<response> invalidate(app_refresher& app, std::string_view body);
  asio::awaitable<response> wecom_gettoken(const route& call);
  response list_apps(const client_config* client) const;
  response readiness() const;

  const broker& apps_;
  client_auth auth_;
};

}  // namespace token_broker
