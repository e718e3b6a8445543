#include "token_broker/routes.hpp"

namespace token_broker {
namespace {

constexpr std::string_view apps_prefix = "/v1/apps/";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding of a query value. '+' stays '+': WeCom secrets may contain it, and SDKs
// that encode spaces that way never send spaces here.
std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;  // needs two hex digits
    const int high = hex_value(text[i + 1]);
    const int low = hex_value(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

route only(http::verb method, http::verb allowed, route match, std::string_view allow) {
  if (method == allowed) return match;
  return route{.call = route::kind::method_not_allowed, .allow = allow};
}

route match_gettoken(std::string_view query) {
  route match{.call = route::kind::wecom_gettoken};
  while (!query.empty()) {
    const auto end = query.find('&');
    const auto pair = query.substr(0, end);
    query = end == std::string_view::npos ? std::string_view{} : query.substr(end + 1);
    const auto equals = pair.find('=');
    const auto key = pair.substr(0, equals);
    auto value = percent_decode(equals == std::string_view::npos ? "" : pair.substr(equals + 1));
    if (!value) return route{.call = route::kind::bad_request};
    if (key == "corpid") match.corpid = std::move(*value);
    if (key == "corpsecret") match.corpsecret = std::move(*value);
  }
  return match;
}

}  // namespace

route match_route(http::verb method, std::string_view target) {
  const auto question = target.find('?');
  const auto path = target.substr(0, question);
  const auto query =
      question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);

  if (path == "/cgi-bin/gettoken") {
    return only(method, http::verb::get, match_gettoken(query), "GET");
  }
  if (path == "/healthz")
    return only(method, http::verb::get, {.call = route::kind::healthz}, "GET");
  if (path == "/readyz") return only(method, http::verb::get, {.call = route::kind::readyz}, "GET");
  if (path == "/metrics") {
    return only(method, http::verb::get, {.call = route::kind::metrics}, "GET");
  }
  if (path == "/v1/apps") {
    return only(method, http::verb::get, {.call = route::kind::list_apps}, "GET");
  }
  if (!path.starts_with(apps_prefix)) return {};

  // /v1/apps/{app}/token[/invalidate]; the id is checked against the config later, so an
  // unknown or malformed id is 404 unknown_app either way.
  const auto rest = path.substr(apps_prefix.size());
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0) return {};
  const std::string app(rest.substr(0, slash));
  const auto action = rest.substr(slash);
  if (action == "/token") {
    return only(method, http::verb::get, {.call = route::kind::app_token, .app = app}, "GET");
  }
  if (action == "/token/invalidate") {
    return only(method, http::verb::post, {.call = route::kind::invalidate_token, .app = app},
                "POST");
  }
  return {};
}

}  // namespace token_broker
