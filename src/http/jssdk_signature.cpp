#include "token_broker/http/jssdk_signature.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "token_broker/core/secret_digest.hpp"

namespace token_broker {
namespace {

constexpr std::size_t max_url_size = 2048;
constexpr std::size_t max_noncestr_size = 64;
constexpr std::size_t generated_noncestr_size = 16;

// `prefix` in lower case.
bool starts_with_ignoring_case(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), text.begin(), [](char lower, char seen) {
           return std::tolower(static_cast<unsigned char>(seen)) == lower;
         });
}

// Unpredictable, so that a signature cannot be made ahead for a page a caller has not asked.
std::string random_noncestr() {
  static constexpr std::string_view alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::array<unsigned char, generated_noncestr_size> random{};
  if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) {
    throw std::runtime_error("the system's random source failed");
  }
  std::string noncestr;
  // 256 is not a multiple of 62: a slight bias, harmless for a nonce.
  for (const auto byte : random) noncestr += alphabet[byte % alphabet.size()];
  return noncestr;
}

bool is_plain_word(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// `text` as a JSON string. Written by hand rather than through a JSON tree, which took about
// a fifth of the signature route's time.
void append_json_string(std::string& out, std::string_view text) {
  static constexpr std::string_view hex = "0123456789abcdef";
  out += '"';
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += "\\u00";
      out += hex[(c >> 4) & 0xf];
      out += hex[c & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
}

// A member of the request body as the checks below need it: its text if a string, its value
// if an integer, neither for any other type.
struct member_value {
  std::optional<std::string_view> text;
  std::optional<std::int64_t> integer;
};
struct signature_members {
  std::optional<member_value> url, noncestr, timestamp;
};

std::optional<member_value>* member_slot(signature_members& members, std::string_view name) {
  if (name == "url") return &members.url;
  if (name == "noncestr") return &members.noncestr;
  if (name == "timestamp") return &members.timestamp;
  return nullptr;
}

// The body as nearly every front end sends it, read without building a JSON tree (which took
// a tenth of the route's time): a flat object whose values are ASCII strings without escapes
// or integers. Anything else (escapes, other types, a repeated member, bytes that are not
// JSON) is nullopt, and nlohmann then reads the body in full, so both readers accept the same
// documents with the same meaning.
std::optional<signature_members> read_flat_members(std::string_view body) {
  std::size_t at = 0;
  const auto skip_space = [&] {
    while (at < body.size() &&
           (body[at] == ' ' || body[at] == '\t' || body[at] == '\n' || body[at] == '\r')) {
      ++at;
    }
  };
  const auto take = [&](char expected) {
    skip_space();
    if (at == body.size() || body[at] != expected) return false;
    ++at;
    return true;
  };
  const auto take_string = [&]() -> std::optional<std::string_view> {
    if (!take('"')) return std::nullopt;
    const auto end = body.find_first_of("\"\\", at);
    if (end == std::string_view::npos || body[end] != '"') return std::nullopt;
    const auto text = body.substr(at, end - at);
    if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
      return std::nullopt;  // control characters are not JSON; other bytes need UTF-8 checks
    }
    at = end + 1;
    return text;
  };
  const auto take_integer = [&]() -> std::optional<std::int64_t> {
    skip_space();
    const auto begin = at;
    while (at < body.size() && body[at] >= '0' && body[at] <= '9') ++at;
    const auto digits = body.substr(begin, at - begin);
    if (digits.empty() || (digits.size() > 1 && digits[0] == '0') || digits.size() > 18) {
      return std::nullopt;  // not an integer JSON allows, or perhaps beyond int64
    }
    if (at < body.size() && (body[at] == '.' || body[at] == 'e' || body[at] == 'E')) {
      return std::nullopt;  // a fraction
    }
    std::int64_t value = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return value;
  };

  signature_members members;
  if (!take('{')) return std::nullopt;
  if (!take('}')) {
    do {
      const auto name = take_string();
      if (!name || !take(':')) return std::nullopt;
      skip_space();
      member_value value;
      if (at < body.size() && body[at] == '"') {
        value.text = take_string();
        if (!value.text) return std::nullopt;
      } else {
        value.integer = take_integer();
        if (!value.integer) return std::nullopt;
      }
      if (auto* slot = member_slot(members, *name)) {
        if (*slot) return std::nullopt;  // repeated: the full parser decides which counts
        *slot = value;
      }
    } while (take(','));
    if (!take('}')) return std::nullopt;
  }
  skip_space();
  if (at != body.size()) return std::nullopt;
  return members;
}

// The members of a parsed object, as views into it.
signature_members members_of(const nlohmann::json& object) {
  signature_members members;
  for (const auto& [name, value] : object.items()) {
    auto* slot = member_slot(members, name);
    if (!slot) continue;
    member_value seen;
    if (value.is_string()) seen.text = value.get_ref<const std::string&>();
    if (value.is_number_integer()) seen.integer = value.get<std::int64_t>();
    *slot = seen;
  }
  return members;
}

}  // namespace

std::string jssdk_signature(std::string_view ticket, std::string_view noncestr,
                            std::int64_t timestamp, std::string_view url) {
  std::string signed_text;
  signed_text.reserve(ticket.size() + noncestr.size() + url.size() + 64);
  signed_text.append("jsapi_ticket=").append(ticket);
  signed_text.append("&noncestr=").append(noncestr);
  signed_text.append("&timestamp=").append(std::to_string(timestamp));
  signed_text.append("&url=").append(url);
  return sha1_hex(signed_text);
}

std::string signature_answer(std::string_view app, std::string_view corpid,
                             std::optional<std::int64_t> agentid, const signature_request& asked,
                             std::optional<std::string_view> jsapi_ticket,
                             std::optional<std::string_view> agent_ticket) {
  std::string body;
  body.reserve(256 + app.size() + corpid.size() + asked.url.size() + asked.noncestr.size());
  body += R"({"app":)";
  append_json_string(body, app);
  body += R"(,"corpid":)";
  append_json_string(body, corpid);
  body += R"(,"agentid":)";
  body += agentid ? std::to_string(*agentid) : "null";
  body += R"(,"url":)";
  append_json_string(body, asked.url);
  body += R"(,"noncestr":)";
  append_json_string(body, asked.noncestr);
  body += R"(,"timestamp":)";
  body += std::to_string(asked.timestamp);
  const auto append_part = [&](std::string_view member, std::string_view ticket) {
    body.append(",\"").append(member).append(R"(":{"signature":")");
    body += jssdk_signature(ticket, asked.noncestr, asked.timestamp, asked.url);
    body += "\"}";
  };
  if (jsapi_ticket) append_part("config", *jsapi_ticket);
  if (agent_ticket) append_part("agent_config", *agent_ticket);
  body += '}';
  return body;
}

std::optional<std::string_view> signable_url(std::string_view url) {
  if (url.size() > max_url_size || !is_plain_word(url)) return std::nullopt;
  std::size_t scheme = 0;
  if (starts_with_ignoring_case(url, "https://")) {
    scheme = 8;
  } else if (starts_with_ignoring_case(url, "http://")) {
    scheme = 7;
  } else {
    return std::nullopt;
  }
  const auto host_end = url.find_first_of("/?#", scheme);
  if ((host_end == std::string_view::npos ? url.size() : host_end) == scheme) return std::nullopt;
  return url.substr(0, url.find('#'));
}

std::variant<signature_request, std::string> read_signature_request(std::string_view body,
                                                                    std::int64_t now_unix) {
  nlohmann::json parsed;  // holds the strings `members` views when the full parser read them
  auto members = read_flat_members(body);
  if (!members) {
    parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_object()) {
      return std::string(R"(the body must be a JSON object {"url":"https://…"})");
    }
    members = members_of(parsed);
  }

  signature_request request{.timestamp = now_unix};
  if (!members->url || !members->url->text) {
    return std::string(R"("url" is required: the page's absolute http(s) URL)");
  }
  const auto signable = signable_url(*members->url->text);
  if (!signable) {
    return std::string(R"("url" must be an absolute http(s) URL of at most 2048 bytes)");
  }
  request.url = *signable;
  if (const auto& noncestr = members->noncestr) {
    if (!noncestr->text || noncestr->text->empty() || noncestr->text->size() > max_noncestr_size ||
        !is_plain_word(*noncestr->text)) {
      return std::string(R"("noncestr" must be 1 to 64 printable characters without spaces)");
    }
    request.noncestr = *noncestr->text;
  } else {
    request.noncestr = random_noncestr();
  }
  if (const auto& timestamp = members->timestamp) {
    // A number, or the digits of one, as front ends pass it either way.
    std::int64_t seconds = -1;
    if (timestamp->integer) {
      seconds = *timestamp->integer;
    } else if (const auto& digits = timestamp->text) {
      if (!digits->empty() && digits->size() <= 12 &&
          std::all_of(digits->begin(), digits->end(),
                      [](char c) { return c >= '0' && c <= '9'; })) {
        std::from_chars(digits->data(), digits->data() + digits->size(), seconds);
      }
    }
    if (seconds < 0 || seconds > 99'999'999'999) {
      return std::string(R"("timestamp" must be Unix seconds, a non-negative integer)");
    }
    request.timestamp = seconds;
  }
  return request;
}

}  // namespace token_broker
