// Which API call a request is: a plain function of method and target, tested on its own.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "token_broker/asio.hpp"

namespace token_broker {

struct route {
  enum class kind {
    app_token,         // GET  /v1/apps/{app}/token
    invalidate_token,  // POST /v1/apps/{app}/token/invalidate
    list_apps,         // GET  /v1/apps
    wecom_gettoken,    // GET  /cgi-bin/gettoken?corpid=…&corpsecret=…
    healthz,           // GET  /healthz
    readyz,            // GET  /readyz
    metrics,           // GET  /metrics
    not_found,
    method_not_allowed,
    bad_request,  // a target that cannot be decoded
  };

  kind call = kind::not_found;
  std::string app;                        // app_token, invalidate_token
  std::optional<std::string> corpid;      // wecom_gettoken, URL-decoded
  std::optional<std::string> corpsecret;  // wecom_gettoken, URL-decoded
  std::string_view allow;                 // method_not_allowed: the Allow header

  // /v1/ calls need the client's key when clients are configured.
  bool needs_client_key() const {
    return call == kind::app_token || call == kind::invalidate_token || call == kind::list_apps;
  }
};

route match_route(http::verb method, std::string_view target);

}  // namespace token_broker
