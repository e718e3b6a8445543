#include "token_broker/gateway/api_path.hpp"

#include <algorithm>
#include <array>

#include "token_broker/http/routes.hpp"
#include "token_broker/upstream/upstream_client.hpp"

namespace token_broker {
namespace {

constexpr std::size_t max_path_size = 256;

bool is_path_character(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// Whether a query parameter is an access_token, however its name is spelt. One whose name
// cannot be decoded is treated as one: upstream might read it so.
bool names_access_token(std::string_view parameter) {
  const auto name = percent_decode(parameter.substr(0, parameter.find('=')));
  return !name || *name == "access_token";
}

}  // namespace

bool is_api_path(std::string_view path) {
  if (path.empty() || path.size() > max_path_size) return false;
  std::size_t start = 0;
  for (;;) {
    const auto end = std::min(path.find('/', start), path.size());
    const auto segment = path.substr(start, end - start);
    if (segment.empty() || segment == "." || segment == ".." ||
        !std::all_of(segment.begin(), segment.end(), is_path_character)) {
      return false;
    }
    if (end == path.size()) return true;
    start = end + 1;
  }
}

bool is_credential_path(std::string_view path) {
  static constexpr std::array<std::string_view, 3> credential_calls = {
      "cgi-bin/gettoken", "cgi-bin/get_jsapi_ticket", "cgi-bin/ticket/get"};
  return std::find(credential_calls.begin(), credential_calls.end(), path) !=
             credential_calls.end() ||
         path.starts_with("cgi-bin/service/");  // provider, suite and corp tokens
}

void append_forwarded_target(std::string& forwarded, std::string_view path, std::string_view query,
                             std::string_view token) {
  forwarded.append("/").append(path).append("?");
  std::size_t start = 0;
  while (start <= query.size()) {
    const auto end = std::min(query.find('&', start), query.size());
    const auto parameter = query.substr(start, end - start);
    if (!parameter.empty() && !names_access_token(parameter)) {
      forwarded.append(parameter).append("&");
    }
    start = end + 1;
  }
  forwarded.append("access_token=");
  percent_encode(forwarded, token);
}

const std::string& api_labels::of(std::string_view path) {
  const std::scoped_lock lock(mutex_);
  if (const auto known = seen_.find(path); known != seen_.end()) return *known;
  if (seen_.size() >= capacity) return other_;
  return *seen_.emplace(path).first;
}

}  // namespace token_broker
