#include "token_broker/upstream_answer.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace token_broker {
namespace {

// WeCom's errmsg is shown to callers in 503 answers; keep it to a sane size.
constexpr std::size_t max_errmsg_size = 256;
// Longer than any token WeCom has issued (7200 s) by far, short enough to catch garbage.
constexpr std::int64_t max_expires_in_s = 30 * 24 * 3600;

fetch_failure garbage(std::string what) {
  return fetch_failure{failure_class::transient, local_failure_errcode,
                       "unusable gettoken answer: " + std::move(what)};
}

// Tokens go into JSON, HTTP headers and Redis as they are: printable ASCII only.
bool is_plain_token(std::string_view value) {
  return !value.empty() && value.size() <= max_token_size &&
         std::all_of(value.begin(), value.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

}  // namespace

std::variant<issued_token, fetch_failure> parse_gettoken_answer(unsigned http_status,
                                                                std::string_view body) {
  if (http_status != 200) {
    return fetch_failure{failure_class::transient, local_failure_errcode,
                         "gettoken answered HTTP " + std::to_string(http_status)};
  }
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return garbage("not JSON");
  if (!json.is_object()) return garbage("not a JSON object");

  const auto errcode = json.find("errcode");
  if (errcode == json.end() || !errcode->is_number_integer()) {
    return garbage("errcode missing or not an integer");
  }
  const int code = errcode->get<int>();
  if (code != 0) {
    std::string message;
    if (const auto errmsg = json.find("errmsg"); errmsg != json.end() && errmsg->is_string()) {
      message = errmsg->get<std::string>().substr(0, max_errmsg_size);
    }
    return fetch_failure{classify_errcode(code), code, std::move(message)};
  }

  const auto access_token = json.find("access_token");
  if (access_token == json.end() || !access_token->is_string()) {
    return garbage("access_token missing or not a string");
  }
  auto value = access_token->get<std::string>();
  if (!is_plain_token(value)) return garbage("access_token empty, too long or not printable");

  const auto expires_in = json.find("expires_in");
  if (expires_in == json.end() || !expires_in->is_number_integer()) {
    return garbage("expires_in missing or not an integer");
  }
  const auto seconds = expires_in->get<std::int64_t>();
  if (seconds <= 0 || seconds > max_expires_in_s) return garbage("expires_in out of range");

  return issued_token{std::move(value), std::chrono::seconds{seconds}};
}

}  // namespace token_broker
