// Fuzzes the reading of upstream's gettoken answer: parse_credential_answer for "access_token".
// Input: the first byte picks the HTTP status, the rest is the body.
//
// Beyond crashes and sanitizer reports, a finding is an answer read against its promise
// (upstream_answer.hpp, SPEC §1): a token only from HTTP 200 with errcode exactly 0, non-empty,
// printable, at most max_token_size bytes, with 0 < expires_in <= 30 days; a failure whose
// errmsg can go into a JSON answer (valid UTF-8) and that carries WeCom's errcode as sent.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "token_broker/upstream/upstream_answer.hpp"

namespace {

using token_broker::fetch_failure;
using token_broker::issued_token;

// 200 most often: it is the only status whose body is read.
constexpr unsigned statuses[] = {200, 200, 200, 200, 500, 404, 302, 502, 429, 0, 999, 204};

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_upstream_answer: %s\n", what);
  std::abort();
}

// The body read on its own: errcode as JSON has it, exactly.
struct wecom_fields {
  bool errcode_integer = false;
  bool errcode_zero = false;
  bool errcode_fits_int = false;
  std::int64_t errcode = 0;
  const nlohmann::json* access_token = nullptr;
};

wecom_fields read_fields(const nlohmann::json& json) {
  wecom_fields fields;
  if (!json.is_object()) return fields;
  const auto errcode = json.find("errcode");
  if (errcode != json.end() && errcode->is_number_integer()) {
    fields.errcode_integer = true;
    if (errcode->is_number_unsigned()) {
      const auto value = errcode->get<std::uint64_t>();
      fields.errcode_zero = value == 0;
      fields.errcode_fits_int = value <= INT32_MAX;
      fields.errcode = fields.errcode_fits_int ? static_cast<std::int64_t>(value) : 0;
    } else {
      fields.errcode = errcode->get<std::int64_t>();
      fields.errcode_zero = fields.errcode == 0;
      fields.errcode_fits_int = fields.errcode >= INT32_MIN && fields.errcode <= INT32_MAX;
    }
  }
  if (const auto token = json.find("access_token"); token != json.end()) {
    fields.access_token = &*token;
  }
  return fields;
}

bool valid_utf8(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

void check_token(unsigned status, const nlohmann::json& json, const issued_token& answer) {
  if (status != 200) finding("a token from a non-200 answer");
  const auto fields = read_fields(json);
  if (!fields.errcode_integer || !fields.errcode_zero) finding("a token without errcode 0");
  if (!fields.access_token || !fields.access_token->is_string() ||
      fields.access_token->get<std::string>() != answer.value) {
    finding("the token is not the answer's access_token");
  }
  const auto& value = answer.value;
  if (value.empty() || value.size() > token_broker::max_token_size) finding("token size");
  for (const char c : value) {
    if (c <= 0x20 || c >= 0x7f) finding("a token with a character that is not printable ASCII");
  }
  if (answer.expires_in.count() <= 0 || answer.expires_in > std::chrono::days{30}) {
    finding("expires_in out of range");
  }
}

void check_failure(unsigned status, const nlohmann::json& json, const fetch_failure& failure) {
  if (!valid_utf8(failure.errmsg)) finding("an errmsg that is not valid UTF-8 (JSON answers)");
  if (status != 200) return;
  const auto fields = read_fields(json);
  // WeCom's own failure: its errcode is passed on unchanged.
  if (fields.errcode_integer && !fields.errcode_zero && fields.errcode_fits_int &&
      failure.errcode != fields.errcode) {
    finding("the failure's errcode is not the answer's errcode");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return -1;
  const unsigned status = statuses[data[0] % std::size(statuses)];
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  const auto parsed = token_broker::parse_credential_answer("access_token", status, body);
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (const auto* answer = std::get_if<issued_token>(&parsed)) {
    check_token(status, json, *answer);
  } else {
    check_failure(status, json, std::get<fetch_failure>(parsed));
  }
  return 0;
}
