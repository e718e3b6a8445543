#include "token_broker/upstream/upstream_answer.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

namespace token_broker {
namespace {

// WeCom's errmsg is shown to callers in 503 answers; keep it to a sane size.
constexpr std::size_t max_errmsg_size = 256;
// Longer than any token WeCom has issued (7200 s) by far, short enough to catch garbage.
constexpr std::int64_t max_expires_in_s = 30 * 24 * 3600;

fetch_failure garbage(std::string what) {
  return fetch_failure{failure_class::transient, local_failure_errcode,
                       "unusable upstream answer: " + std::move(what)};
}

// WeCom's errcodes are ints. A wider number would wrap in get<int>(): 4294967296 to 0, "ok".
bool is_int(const nlohmann::json& value) {
  if (value.is_number_unsigned()) {
    return value.get<std::uint64_t>() <=
           static_cast<std::uint64_t>(std::numeric_limits<int>::max());
  }
  if (!value.is_number_integer()) return false;
  const auto number = value.get<std::int64_t>();
  return number >= std::numeric_limits<int>::min() && number <= std::numeric_limits<int>::max();
}

// At most `limit` bytes, cut before a character rather than inside one: errmsg goes into JSON
// answers, which refuse a broken UTF-8 sequence (the parser let only valid UTF-8 in).
std::string clipped(std::string text, std::size_t limit) {
  if (text.size() <= limit) return text;
  auto end = limit;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  text.resize(end);
  return text;
}

}  // namespace

bool is_plain_token(std::string_view value) {
  return !value.empty() && value.size() <= max_token_size &&
         std::all_of(value.begin(), value.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

std::variant<issued_token, fetch_failure> parse_credential_answer(std::string_view value_field,
                                                                  unsigned http_status,
                                                                  std::string_view body) {
  if (http_status != 200) {
    return fetch_failure{failure_class::transient, local_failure_errcode,
                         "upstream answered HTTP " + std::to_string(http_status)};
  }
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return garbage("not JSON");
  if (!json.is_object()) return garbage("not a JSON object");

  const auto errcode = json.find("errcode");
  if (errcode == json.end() || !errcode->is_number_integer()) {
    return garbage("errcode missing or not an integer");
  }
  if (!is_int(*errcode)) return garbage("errcode out of range");
  const int code = errcode->get<int>();
  if (code != 0) {
    std::string message;
    if (const auto errmsg = json.find("errmsg"); errmsg != json.end() && errmsg->is_string()) {
      message = clipped(errmsg->get<std::string>(), max_errmsg_size);
    }
    return fetch_failure{classify_errcode(code), code, std::move(message)};
  }

  const auto field = json.find(value_field);
  if (field == json.end() || !field->is_string()) {
    return garbage(std::string(value_field) + " missing or not a string");
  }
  auto value = field->get<std::string>();
  if (!is_plain_token(value)) {
    return garbage(std::string(value_field) + " empty, too long or not printable");
  }

  const auto expires_in = json.find("expires_in");
  if (expires_in == json.end() || !expires_in->is_number_integer()) {
    return garbage("expires_in missing or not an integer");
  }
  const auto seconds = expires_in->get<std::int64_t>();
  if (seconds <= 0 || seconds > max_expires_in_s) return garbage("expires_in out of range");

  return issued_token{std::move(value), std::chrono::seconds{seconds}};
}

// WeCom writes errcode first, so it is read there without a JSON tree (which took a sixth of
// a gateway call's CPU); any other layout is parsed in full.
std::optional<int> wecom_errcode(std::string_view body) {
  constexpr std::string_view first_member = "\"errcode\"";
  const auto skip_space = [&](std::size_t at) {
    return std::min(body.find_first_not_of(" \t\r\n", at), body.size());
  };
  auto at = skip_space(0);
  if (at < body.size() && body[at] == '{') {
    at = skip_space(at + 1);
    if (body.substr(at).starts_with(first_member)) {
      at = skip_space(at + first_member.size());
      if (at < body.size() && body[at] == ':') {
        at = skip_space(at + 1);
        int errcode = 0;
        const auto [end, error] =
            std::from_chars(body.data() + at, body.data() + body.size(), errcode);
        const auto next = skip_space(static_cast<std::size_t>(end - body.data()));
        if (error == std::errc{} && next < body.size() &&
            (body[next] == ',' || body[next] == '}')) {
          return errcode;
        }
      }
    }
  }
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return std::nullopt;
  const auto errcode = json.find("errcode");
  if (errcode == json.end() || !errcode->is_number_integer()) return std::nullopt;
  return errcode->get<int>();
}

}  // namespace token_broker
