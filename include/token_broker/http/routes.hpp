// The route table's grammar: an endpoint is a method and a path pattern with named segments
// ("/v1/apps/{app}/token"), matched as a plain function of method and target so that it is
// tested on its own. The table itself — every endpoint in one line with its handler — is
// request_handler's.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "token_broker/core/asio.hpp"

namespace token_broker {

// Who may call an endpoint.
enum class access {
  anyone,  // probes, metrics, and WeCom's drop-ins (which authenticate by the app secret)
  client,  // with clients configured: an authenticated client allowed the path's {app}
};

struct route {
  http::verb method;  // `unknown`: any method
  // Literal text and named segments: "{name}" matches one non-empty segment; a last segment
  // "{name*}" matches the non-empty rest of the path, slashes included.
  std::string_view pattern;
  access who;
  std::string_view label;  // the `route` label of its metrics: fixed text, never the target
  // What the audit trail records a call as (the kind of credential it hands out, or
  // "api_call"); empty: not recorded.
  std::string_view audited = {};
};

// The named segments of a matched path, in pattern order.
class path_parameters {
 public:
  static constexpr std::size_t capacity = 4;
  // The segment `name` matched; empty when the pattern has no such segment.
  std::string_view operator[](std::string_view name) const;
  bool add(std::string_view name, std::string_view value);
  void clear() { count_ = 0; }

 private:
  std::array<std::pair<std::string_view, std::string_view>, capacity> items_{};
  std::size_t count_ = 0;
};

// Whether `path` (no query) fits `pattern`; fills `parameters` when it does.
bool match_pattern(std::string_view pattern, std::string_view path, path_parameters& parameters);

struct route_match {
  enum class result { matched, not_found, method_not_allowed } outcome = result::not_found;
  std::size_t index = 0;       // matched: the table entry
  path_parameters parameters;  // matched: its named segments, views into the target
  std::string_view query;      // the raw text after '?'
  std::string allow;           // method_not_allowed: the Allow header, e.g. "GET, POST"
};

// The first entry of `table` whose pattern and method fit. `Entry` has a `route shape`.
template <class Entry>
route_match match_route(std::span<const Entry> table, http::verb method, std::string_view target) {
  route_match found;
  const auto question = target.find('?');
  const auto path = target.substr(0, question);
  if (question != std::string_view::npos) found.query = target.substr(question + 1);
  for (std::size_t i = 0; i < table.size(); ++i) {
    const route& shape = table[i].shape;
    if (!match_pattern(shape.pattern, path, found.parameters)) continue;
    if (shape.method == method || shape.method == http::verb::unknown) {
      found.outcome = route_match::result::matched;
      found.index = i;
      found.allow.clear();
      return found;
    }
    if (!found.allow.empty()) found.allow += ", ";
    found.allow += http::to_string(shape.method);
    found.outcome = route_match::result::method_not_allowed;
  }
  found.parameters.clear();
  return found;
}

// `text` with its %XX escapes decoded; nullopt when one is malformed.
std::optional<std::string> percent_decode(std::string_view text);

// A query's parameters, percent-decoded. '+' stays '+': WeCom secrets may contain it, and
// SDKs that encode spaces that way never send spaces here.
class query_parameters {
 public:
  // nullopt when an escape is malformed.
  static std::optional<query_parameters> parse(std::string_view query);
  // The first value of `name`, or nullptr.
  const std::string* find(std::string_view name) const;

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

}  // namespace token_broker
