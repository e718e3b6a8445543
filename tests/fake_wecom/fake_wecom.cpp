#include "fake_wecom.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <charconv>
#include <deque>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>

#include "token_broker/core/asio.hpp"
#include "token_broker/core/secret_digest.hpp"

namespace token_broker::fake {
namespace {

using asio::ip::tcp;
using std::chrono::system_clock;
using namespace std::chrono_literals;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;
using response = http::response<http::string_body>;
using query_parameters = std::map<std::string, std::string, std::less<>>;

// A request is a few lines of headers; its body is small JSON except for media/upload, where
// WeCom takes files up to 20 MB and a gateway test may send up to its own limit and a bit.
constexpr std::uint32_t request_header_limit = 8 * 1024;
constexpr std::uint64_t request_body_limit = 32 * 1024 * 1024;
// Deadlines so a client that stalls at any step cannot keep a connection (or a test) alive.
constexpr auto handshake_timeout = 10s;
constexpr auto idle_timeout = 30s;
constexpr auto write_timeout = 10s;
constexpr auto tls_shutdown_timeout = 1s;
// The hang fault waits for the peer to give up; bounded in case it never does.
constexpr auto hang_limit = 10min;
// A generated media/get body goes out in pieces this big, never whole.
constexpr std::size_t generated_chunk_size = 64 * 1024;
// The API calls recorded: enough for any test, bounded for a fake that runs for hours.
constexpr std::size_t api_call_record_limit = 10'000;

// Real tokens are long opaque strings; these use the URL-safe base64 alphabet so they need no
// escaping anywhere, and are long enough that a broker truncating them would be caught.
constexpr std::size_t token_length = 128;

std::string random_token() {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  static_assert(sizeof alphabet - 1 == 64, "one byte's low 6 bits pick a character evenly");
  unsigned char random[token_length];
  if (RAND_bytes(random, sizeof random) != 1) throw std::runtime_error("RAND_bytes failed");
  std::string token(token_length, '\0');
  for (std::size_t i = 0; i < token_length; ++i) token[i] = alphabet[random[i] & 0x3f];
  return token;
}

std::string wecom_json(int errcode, std::string_view errmsg) {
  // WeCom puts errcode first; ordered_json keeps that, so raw-body comparisons stay readable.
  nlohmann::ordered_json body;
  body["errcode"] = errcode;
  body["errmsg"] = errmsg;
  return body.dump();
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Form decoding as a web server does it: "%XX" and "+" for space. A malformed escape is kept
// as it stands rather than rejected, like most servers.
std::string url_decode(std::string_view text) {
  std::string decoded;
  decoded.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      decoded += ' ';
    } else if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
               hex_value(text[i + 2]) >= 0) {
      decoded += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      decoded += text[i];
    }
  }
  return decoded;
}

// Name and value, decoded, in the order given; repeated names kept.
std::vector<std::pair<std::string, std::string>> query_pairs(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> pairs;
  while (!query.empty()) {
    const auto end = query.find('&');
    const auto pair = query.substr(0, end);
    query = end == std::string_view::npos ? std::string_view{} : query.substr(end + 1);
    if (pair.empty()) continue;
    const auto equals = pair.find('=');
    auto name = url_decode(pair.substr(0, equals));
    auto value =
        equals == std::string_view::npos ? std::string{} : url_decode(pair.substr(equals + 1));
    pairs.emplace_back(std::move(name), std::move(value));
  }
  return pairs;
}

query_parameters parse_query(std::string_view query) {
  query_parameters parameters;
  for (auto& [name, value] : query_pairs(query)) {
    parameters.try_emplace(std::move(name), std::move(value));  // the first one wins
  }
  return parameters;
}

// The names only, sorted, repeats kept: a gateway that adds a second access_token shows.
std::vector<std::string> query_keys(std::string_view query) {
  std::vector<std::string> names;
  for (auto& pair : query_pairs(query)) names.push_back(std::move(pair.first));
  std::sort(names.begin(), names.end());
  return names;
}

std::optional<std::string> parameter(const query_parameters& parameters, std::string_view name) {
  const auto found = parameters.find(name);
  if (found == parameters.end()) return std::nullopt;
  return found->second;
}

response make_response(http::status status, std::string_view content_type, std::string body) {
  response answer{status, 11};
  answer.set(http::field::server, "fake-wecom");
  answer.set(http::field::content_type, content_type);
  answer.body() = std::move(body);
  answer.prepare_payload();
  return answer;
}

response json_response(std::string body) {
  return make_response(http::status::ok, "application/json; charset=UTF-8", std::move(body));
}

std::string lower_case(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower;
}

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

// A header value such as `multipart/form-data; boundary="x"` or `form-data; name="media";
// filename="a;b.txt"`: what comes before the first ';' (lower-case) and the parameters by
// lower-case name. A quoted value may hold ';' and backslash escapes (RFC 9110 §5.6.4), which
// SDKs use in file names.
struct header_value {
  std::string value;
  std::map<std::string, std::string> parameters;
};

header_value parse_header_value(std::string_view text) {
  header_value parsed;
  auto at = text.find(';');
  parsed.value = lower_case(trim(text.substr(0, at)));
  while (at < text.size()) {
    ++at;  // past the ';'
    const auto equals = text.find('=', at);
    const auto semicolon = text.find(';', at);
    if (equals == std::string_view::npos || semicolon < equals) {
      at = semicolon;  // a parameter without a value: nothing a test needs
      continue;
    }
    auto name = lower_case(trim(text.substr(at, equals - at)));
    at = text.find_first_not_of(" \t", equals + 1);
    std::string value;
    if (at < text.size() && text[at] == '"') {
      for (++at; at < text.size() && text[at] != '"'; ++at) {
        if (text[at] == '\\' && at + 1 < text.size()) ++at;
        value += text[at];
      }
      at = text.find(';', at);
    } else if (at < text.size()) {
      const auto end = text.find(';', at);
      value = trim(text.substr(at, end - at));
      at = end;
    }
    parsed.parameters.try_emplace(std::move(name), std::move(value));
  }
  return parsed;
}

// One part of a multipart/form-data body (RFC 7578).
struct form_part {
  header_value disposition;  // form-data; name="…"; filename="…"
  std::string content_type;  // empty: the part gave none
  std::string_view data;     // into the request's body
};

// The headers of a part, from after its delimiter line to the blank line before its data.
form_part parse_part_headers(std::string_view headers) {
  form_part part;
  while (!headers.empty()) {
    const auto end = headers.find("\r\n");
    const auto line = headers.substr(0, end);
    headers = end == std::string_view::npos ? std::string_view{} : headers.substr(end + 2);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const auto name = lower_case(trim(line.substr(0, colon)));
    const auto value = trim(line.substr(colon + 1));
    if (name == "content-disposition") part.disposition = parse_header_value(value);
    if (name == "content-type") part.content_type = value;
  }
  return part;
}

// The parts between the delimiters of `boundary` (RFC 2046 §5.1.1); none unless the body is
// well formed up to its close delimiter, so a gateway that mangles a body is caught rather
// than half-read.
std::optional<std::vector<form_part>> parse_form_data(std::string_view body,
                                                      std::string_view boundary) {
  const auto delimiter = "--" + std::string(boundary);
  const auto next_delimiter = "\r\n" + delimiter;
  // A preamble before the first delimiter is allowed and ignored.
  auto at = body.starts_with(delimiter) ? 0 : body.find(next_delimiter);
  if (at == std::string_view::npos) return std::nullopt;
  at = body.find(delimiter, at) + delimiter.size();

  std::vector<form_part> parts;
  for (;;) {
    if (body.substr(at).starts_with("--")) return parts;            // the close delimiter
    at = std::min(body.find_first_not_of(" \t", at), body.size());  // transport padding
    if (!body.substr(at).starts_with("\r\n")) return std::nullopt;
    // The headers end at a blank line: found from the delimiter line's own CRLF, so a part
    // without headers (the blank line at once) is found too.
    const auto headers_end = body.find("\r\n\r\n", at);
    if (headers_end == std::string_view::npos) return std::nullopt;
    auto part = parse_part_headers(body.substr(at, headers_end - at));
    const auto data_begin = headers_end + 4;
    const auto data_end = body.find(next_delimiter, data_begin);
    if (data_end == std::string_view::npos) return std::nullopt;
    part.data = body.substr(data_begin, data_end - data_begin);
    parts.push_back(std::move(part));
    at = data_end + next_delimiter.size();
  }
}

// The file a multipart/form-data body carries in the field `name`: a part with a filename.
std::optional<form_part> form_file(std::string_view content_type, std::string_view body,
                                   std::string_view name) {
  const auto type = parse_header_value(content_type);
  const auto boundary = type.parameters.find("boundary");
  if (type.value != "multipart/form-data" || boundary == type.parameters.end() ||
      boundary->second.empty()) {
    return std::nullopt;
  }
  auto parts = parse_form_data(body, boundary->second);
  if (!parts) return std::nullopt;
  for (auto& part : *parts) {
    const auto& parameters = part.disposition.parameters;
    const auto field = parameters.find("name");
    if (part.disposition.value == "form-data" && field != parameters.end() &&
        field->second == name && parameters.contains("filename")) {
      return std::move(part);
    }
  }
  return std::nullopt;
}

// `generated-N` with N a decimal within generated_media_limit: the size of that body.
std::optional<std::uint64_t> generated_size(std::string_view media_id) {
  constexpr std::string_view prefix = "generated-";
  if (!media_id.starts_with(prefix)) return std::nullopt;
  const auto digits = media_id.substr(prefix.size());
  std::uint64_t size = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), size);
  if (digits.empty() || error != std::errc{} || end != digits.data() + digits.size() ||
      size > generated_media_limit) {
    return std::nullopt;
  }
  return size;
}

// The kinds of value the fake issues; each app (secret) has a series of values of each kind.
enum class credential_kind { access_token, jsapi_ticket, agent_config_ticket };

credential_kind credential_of(ticket_kind kind) {
  return kind == ticket_kind::jsapi ? credential_kind::jsapi_ticket
                                    : credential_kind::agent_config_ticket;
}

// Tickets carry their kind in front, so a value handed out where another kind belongs shows at
// a glance in a failing test; tokens stay bare, as WeCom's are.
std::string new_value(credential_kind kind) {
  switch (kind) {
    case credential_kind::access_token:
      return random_token();
    case credential_kind::jsapi_ticket:
      return "jsapi-" + random_token();
    case credential_kind::agent_config_ticket:
      return "agent-" + random_token();
  }
  throw std::logic_error("unknown credential kind");
}

// The field of WeCom's answer that carries the value.
std::string_view value_field(credential_kind kind) {
  return kind == credential_kind::access_token ? "access_token" : "ticket";
}

// What one gettoken or ticket call meets: WeCom's JSON answer, unless the script says otherwise.
struct call_outcome {
  std::string json;               // the answer (also for a delay or truncated_json fault)
  std::optional<fault> scripted;  // the scripted fault this call consumed, if any
};

// An ordinary API call as the model needs it: views into the HTTP request being served.
struct api_request {
  std::string_view method;
  std::string_view path;      // as requested
  std::string_view api_path;  // from "/cgi-bin/" on, whatever prefix the base_url had
  std::string_view query;
  const query_parameters& parameters;
  std::string_view content_type;
  std::string_view body;
  std::vector<std::string> header_names;  // lower-case, sorted
};

// A file media/get sends: stored bytes, or `generated_size` bytes of generated_media.
struct media_file {
  std::string filename;
  std::string content_type;
  std::optional<std::string> bytes;  // none: generated
  std::uint64_t generated_size = 0;
};

// What an ordinary API call gets: WeCom's JSON, or a file.
struct api_outcome {
  int errcode = 0;
  std::string json;
  std::optional<media_file> file;
  bool hold = false;  // the hang control was on: answer only once it is off
  std::chrono::milliseconds delay{0};
};

api_outcome api_error(int errcode, std::string_view errmsg) {
  return {.errcode = errcode, .json = wecom_json(errcode, errmsg)};
}

// The call as recorded: everything but the token.
api_call describe(const api_request& request) {
  return {
      .method = std::string(request.method),
      .path = std::string(request.path),
      .query_keys = query_keys(request.query),
      .content_type = std::string(request.content_type),
      .body_sha256 = sha256_hex(request.body),
      .body_size = request.body.size(),
      .headers = request.header_names,
  };
}

nlohmann::ordered_json to_json(const api_call& call) {
  nlohmann::ordered_json json;
  json["method"] = call.method;
  json["path"] = call.path;
  json["query_keys"] = call.query_keys;
  json["token_ok"] = call.token_ok;
  json["token_app"] = call.token_app ? nlohmann::ordered_json(*call.token_app) : nullptr;
  json["content_type"] = call.content_type;
  json["body_sha256"] = call.body_sha256;
  json["body_size"] = call.body_size;
  json["headers"] = call.headers;
  json["errcode"] = call.errcode ? nlohmann::ordered_json(*call.errcode) : nullptr;
  return json;
}

// WeCom's frequency limits: a rolling window of the calls let through.
bool admit(std::deque<system_clock::time_point>& let_through, int limit,
           system_clock::duration window, system_clock::time_point now) {
  while (!let_through.empty() && let_through.front() <= now - window) let_through.pop_front();
  if (std::cmp_greater_equal(let_through.size(), std::max(limit, 0))) return false;
  let_through.push_back(now);
  return true;
}

// WeCom's bookkeeping: apps, issued tokens and tickets, scripts, quotas and counters. No I/O, so
// the HTTP side and the test thread share it under one mutex.
class wecom_model {
 public:
  service_model service;  // the service-provider endpoints

  explicit wecom_model(const fake_options& options)
      : behaviour_(options.behaviour),
        lifetime_(options.lifetime),
        ticket_lifetime_(options.ticket_lifetime),
        ticket_quota_(options.ticket_calls_per_hour) {
    service.set_behaviour(options.behaviour);
    service.set_lifetime(options.lifetime);
  }

  void add_app(const std::string& corpid, const std::string& secret) {
    const std::scoped_lock lock(mutex_);
    secrets_by_corpid_[corpid].insert(secret);
    corpid_by_secret_[secret] = corpid;
  }

  void set_behaviour(expiry_behaviour behaviour) {
    service.set_behaviour(behaviour);
    const std::scoped_lock lock(mutex_);
    behaviour_ = behaviour;
  }

  void set_lifetime(std::chrono::seconds lifetime) {
    service.set_lifetime(lifetime);
    const std::scoped_lock lock(mutex_);
    lifetime_ = lifetime;
  }

  void set_ticket_lifetime(std::optional<std::chrono::seconds> lifetime) {
    const std::scoped_lock lock(mutex_);
    ticket_lifetime_ = lifetime;
  }

  void set_ticket_quota(int calls_per_hour) {
    const std::scoped_lock lock(mutex_);
    ticket_quota_ = calls_per_hour;
  }

  void script_faults(const std::string& secret, credential_kind kind, std::vector<fault> faults) {
    const std::scoped_lock lock(mutex_);
    auto& script = series_[{secret, kind}].script;
    script.insert(script.end(), std::make_move_iterator(faults.begin()),
                  std::make_move_iterator(faults.end()));
  }

  void revoke(const std::string& secret, credential_kind kind) {
    const auto now = system_clock::now();
    const std::scoped_lock lock(mutex_);
    for (auto& [value, issued] : issued_) {
      if (issued.secret == secret && issued.kind == kind && !issued.revoked_at) {
        issued.revoked_at = now;
      }
    }
    if (const auto found = series_.find({secret, kind}); found != series_.end()) {
      found->second.current.clear();
    }
  }

  int calls(const std::string& secret, credential_kind kind) const {
    const std::scoped_lock lock(mutex_);
    const auto found = series_.find({secret, kind});
    return found == series_.end() ? 0 : found->second.calls;
  }

  int calls() const {
    const std::scoped_lock lock(mutex_);
    return total_calls_;
  }

  int ticket_calls(std::optional<ticket_kind> kind) const {
    const std::scoped_lock lock(mutex_);
    if (!kind) return total_ticket_calls_;
    const auto found = ticket_calls_by_kind_.find(*kind);
    return found == ticket_calls_by_kind_.end() ? 0 : found->second;
  }

  // A gettoken request read and not yet answered (or dropped): concurrency as upstream sees it.
  void call_began() {
    const std::scoped_lock lock(mutex_);
    max_in_flight_ = std::max(max_in_flight_, ++in_flight_);
  }
  void call_ended() {
    const std::scoped_lock lock(mutex_);
    --in_flight_;
  }
  int max_concurrent_calls() const {
    const std::scoped_lock lock(mutex_);
    return max_in_flight_;
  }

  // A TLS handshake completed: one per connection, however many requests it then carries;
  // `resumed` when the client brought back a session of an earlier one.
  void handshake_completed(bool resumed) {
    const std::scoped_lock lock(mutex_);
    ++handshakes_;
    if (resumed) ++resumed_handshakes_;
  }
  int handshakes() const {
    const std::scoped_lock lock(mutex_);
    return handshakes_;
  }
  int resumed_handshakes() const {
    const std::scoped_lock lock(mutex_);
    return resumed_handshakes_;
  }

  std::map<std::string, int> calls_by_corpid() const {
    const std::scoped_lock lock(mutex_);
    return calls_by_corpid_;
  }

  // GET /fake/stats: corpids are not secret; secrets, tokens and tickets stay out.
  std::string stats_json() const {
    const std::scoped_lock lock(mutex_);
    nlohmann::ordered_json body;
    body["gettoken_calls"] = total_calls_;
    body["by_corpid"] = calls_by_corpid_;
    body["max_concurrent_gettoken_calls"] = max_in_flight_;
    body["tls_handshakes"] = handshakes_;
    body["tls_resumed_handshakes"] = resumed_handshakes_;
    body["ticket_calls"] = total_ticket_calls_;
    for (const char* endpoint :
         {"get_provider_token", "get_suite_token", "get_permanent_code", "get_corp_token"}) {
      body[std::string(endpoint) + "_calls"] = service.calls(endpoint);
    }
    nlohmann::ordered_json by_kind;
    for (const auto kind : {ticket_kind::jsapi, ticket_kind::agent_config}) {
      const auto found = ticket_calls_by_kind_.find(kind);
      by_kind[to_string(kind)] = found == ticket_calls_by_kind_.end() ? 0 : found->second;
    }
    body["ticket_calls_by_kind"] = std::move(by_kind);
    int api_calls = 0;
    for (const auto& [path, calls] : api_calls_by_path_) api_calls += calls;
    body["api_calls"] = api_calls;
    body["api_calls_by_path"] = api_calls_by_path_;
    return body.dump();
  }

  token_status check(const std::string& value, credential_kind kind,
                     std::optional<system_clock::time_point> at = std::nullopt) const {
    const std::scoped_lock lock(mutex_);
    return status_of(value, kind, at.value_or(system_clock::now()));
  }

  std::optional<system_clock::time_point> expires_at(const std::string& value) const {
    const std::scoped_lock lock(mutex_);
    const auto found = issued_.find(value);
    if (found == issued_.end()) return std::nullopt;
    return found->second.expires_at;
  }

  std::optional<system_clock::time_point> repeated_in_full(const std::string& value) const {
    const std::scoped_lock lock(mutex_);
    const auto found = issued_.find(value);
    if (found == issued_.end() || !found->second.repeated_in_full) return std::nullopt;
    return found->second.issued_at;
  }

  std::vector<std::string> issued(const std::string& secret, credential_kind kind) const {
    const std::scoped_lock lock(mutex_);
    const auto found = series_.find({secret, kind});
    return found == series_.end() ? std::vector<std::string>{} : found->second.issued;
  }

  call_outcome gettoken(const query_parameters& parameters) {
    const auto corpid = parameter(parameters, "corpid");
    const auto secret = parameter(parameters, "corpsecret");
    const auto now = system_clock::now();
    const std::scoped_lock lock(mutex_);

    ++total_calls_;
    if (corpid) ++calls_by_corpid_[*corpid];
    if (secret) ++series_[{*secret, credential_kind::access_token}].calls;
    if (!corpid || corpid->empty()) return {wecom_json(41002, "corpid missing"), std::nullopt};
    if (!secret || secret->empty()) return {wecom_json(41004, "corpsecret missing"), std::nullopt};
    const auto app = secrets_by_corpid_.find(*corpid);
    if (app == secrets_by_corpid_.end()) return {wecom_json(40013, "invalid corpid"), std::nullopt};
    if (!app->second.contains(*secret)) return {wecom_json(40001, "invalid secret"), std::nullopt};
    return answer({*secret, credential_kind::access_token}, now);
  }

  // GET /cgi-bin/get_jsapi_ticket, /cgi-bin/ticket/get: `kind` is none for a ticket/get whose
  // type is missing or not one WeCom serves there. The token names the app.
  call_outcome ticket(std::optional<ticket_kind> kind, const query_parameters& parameters) {
    const auto access_token = parameter(parameters, "access_token").value_or("");
    const auto now = system_clock::now();
    const std::scoped_lock lock(mutex_);

    ++total_ticket_calls_;
    if (kind) ++ticket_calls_by_kind_[*kind];
    const auto token = issued_.find(access_token);
    const bool token_known =
        token != issued_.end() && token->second.kind == credential_kind::access_token;
    if (kind && token_known) ++series_[{token->second.secret, credential_of(*kind)}].calls;
    if (access_token.empty()) return {wecom_json(41001, "access_token missing"), std::nullopt};
    switch (status_of(access_token, credential_kind::access_token, now)) {
      case token_status::valid:
        break;
      case token_status::expired:
        return {wecom_json(42001, "access_token expired"), std::nullopt};
      case token_status::invalid:
        return {wecom_json(40014, "invalid access_token"), std::nullopt};
    }
    if (!kind) return {wecom_json(40097, "invalid args"), std::nullopt};
    const series_key key{token->second.secret, credential_of(*kind)};
    if (!within_quota(series_[key], now)) {
      return {wecom_json(45009, "api freq out of limit"), std::nullopt};
    }
    return answer(key, now);
  }

  // An ordinary API call: recorded, then answered as WeCom would (or held by the hang control).
  api_outcome call_api(const api_request& request) {
    const auto access_token = parameter(request.parameters, "access_token").value_or("");
    auto record = describe(request);  // hashing the body needs no lock
    const auto now = system_clock::now();
    const std::scoped_lock lock(mutex_);

    const auto status = status_of(access_token, credential_kind::access_token, now);
    record.token_ok = status == token_status::valid;
    record.token_app = app_of(access_token);
    auto outcome = api_answer(request, access_token, status, now);
    if (!outcome.file) record.errcode = outcome.errcode;
    outcome.hold = hang_api_calls_;
    outcome.delay = api_delay_;

    ++api_calls_by_path_[record.path];
    api_calls_.push_back(std::move(record));
    if (api_calls_.size() > api_call_record_limit) api_calls_.pop_front();
    return outcome;
  }

  std::vector<api_call> api_calls() const {
    const std::scoped_lock lock(mutex_);
    return {api_calls_.begin(), api_calls_.end()};
  }

  std::map<std::string, int> api_calls_by_path() const {
    const std::scoped_lock lock(mutex_);
    return api_calls_by_path_;
  }

  // GET /fake/api_calls.
  std::string api_calls_json() const {
    const std::scoped_lock lock(mutex_);
    auto calls = nlohmann::ordered_json::array();
    for (const auto& call : api_calls_) calls.push_back(to_json(call));
    return calls.dump();
  }

  void clear_api_calls() {
    const std::scoped_lock lock(mutex_);
    api_calls_.clear();
    api_calls_by_path_.clear();
  }

  void set_api_limit(const std::string& corpid, const std::string& api_path,
                     std::optional<int> calls_per_minute) {
    const std::scoped_lock lock(mutex_);
    const api_key key{corpid, api_path};
    api_let_through_.erase(key);  // a new limit counts from now
    if (calls_per_minute) {
      api_limits_[key] = *calls_per_minute;
    } else {
      api_limits_.erase(key);
    }
  }

  void hang_api_calls(bool hang) {
    const std::scoped_lock lock(mutex_);
    hang_api_calls_ = hang;
  }

  void set_api_delay(std::chrono::milliseconds delay) {
    const std::scoped_lock lock(mutex_);
    api_delay_ = delay;
  }

 private:
  using series_key = std::pair<std::string, credential_kind>;  // secret, kind

  struct issued_value {
    std::string secret;
    credential_kind kind;
    system_clock::time_point issued_at;
    system_clock::time_point expires_at;
    std::optional<system_clock::time_point> revoked_at;
    expiry_behaviour issued_under;
    bool repeated_in_full = false;  // answered again with its full lifetime (behaviour a)
  };

  // One app's values of one kind and the calls for them.
  struct series {
    int calls = 0;
    std::deque<fault> script;
    std::string current;                               // empty: none issued yet, or revoked
    std::vector<std::string> issued;                   // oldest first
    std::deque<system_clock::time_point> let_through;  // by the quota, in the last hour
  };

  token_status status_of(const std::string& value, credential_kind kind,
                         system_clock::time_point at) const {
    const auto found = issued_.find(value);
    if (found == issued_.end() || found->second.kind != kind) return token_status::invalid;
    const auto& issued = found->second;
    if (issued.revoked_at && *issued.revoked_at <= at) return token_status::invalid;
    return at < issued.expires_at ? token_status::valid : token_status::expired;
  }

  // WeCom's frequency limit on tickets: a rolling hour.
  bool within_quota(series& record, system_clock::time_point now) const {
    return admit(record.let_through, ticket_quota_, 1h, now);
  }

  // A call that passed its checks meets the next scripted fault, or gets its value.
  call_outcome answer(const series_key& key, system_clock::time_point now) {
    auto& record = series_[key];
    if (record.script.empty()) return {issue(key, record, now), std::nullopt};
    fault next = std::move(record.script.front());
    record.script.pop_front();
    switch (next.kind) {
      case fault_kind::errcode:
        return {wecom_json(next.errcode, next.errmsg), std::move(next)};
      case fault_kind::delay:
        // Issued now, sent later: like a slow network on the way back, the value has aged
        // by the time it arrives, which a broker counting from receipt would miss.
        return {issue(key, record, now), std::move(next)};
      case fault_kind::truncated_json: {
        // Cut inside the value's field name: only a JSON parser can tell.
        const auto field = value_field(key.second);
        return {R"({"errcode":0,"errmsg":"ok",")" + std::string(field.substr(0, field.size() / 2)),
                std::move(next)};
      }
      default:
        return {std::string{}, std::move(next)};
    }
  }

  std::string issue(const series_key& key, series& record, system_clock::time_point now) {
    const auto kind = key.second;
    // Each behaviour stands for an upstream of its own, as a real one never changes its way:
    // a value is repeated only under the behaviour that issued it. (A value issued under (c)
    // may have lost to another replica's, which lived longer; repeated by (a) in full, its
    // expiry would be knowable to no replica.)
    if (behaviour_ != expiry_behaviour::new_token_each_call &&
        status_of(record.current, kind, now) == token_status::valid &&
        issued_.at(record.current).issued_under == behaviour_) {
      auto& current = issued_.at(record.current);
      if (behaviour_ == expiry_behaviour::same_token_keeps_expiry) {
        current.repeated_in_full = true;
        return value_json(kind, record.current, current.expires_at - current.issued_at);
      }
      // Truncation floors, so the answer never promises more than the truth. With less than
      // a whole second left, "expires_in":0 would be useless; a fresh value is issued instead.
      const auto seconds_left =
          std::chrono::duration_cast<std::chrono::seconds>(current.expires_at - now);
      if (seconds_left.count() >= 1) return value_json(kind, record.current, seconds_left);
    }
    const auto lifetime =
        kind == credential_kind::access_token ? lifetime_ : ticket_lifetime_.value_or(lifetime_);
    record.current = new_value(kind);
    record.issued.push_back(record.current);
    issued_.emplace(record.current,
                    issued_value{key.first, kind, now, now + lifetime, std::nullopt, behaviour_});
    return value_json(kind, record.current, lifetime);
  }

  static std::string value_json(credential_kind kind, const std::string& value,
                                system_clock::duration expires_in) {
    nlohmann::ordered_json body;
    body["errcode"] = 0;
    body["errmsg"] = "ok";
    body[value_field(kind)] = value;
    body["expires_in"] = std::chrono::duration_cast<std::chrono::seconds>(expires_in).count();
    return body.dump();
  }

  using api_key = std::pair<std::string, std::string>;  // corpid, api path

  struct stored_media {
    std::string filename;
    std::string content_type;
    std::string bytes;
  };

  // The corpid of the app a token was issued for, even once expired or revoked.
  std::optional<std::string> app_of(const std::string& access_token) const {
    const auto issued = issued_.find(access_token);
    if (issued == issued_.end() || issued->second.kind != credential_kind::access_token) {
      return std::nullopt;
    }
    const auto app = corpid_by_secret_.find(issued->second.secret);
    if (app == corpid_by_secret_.end()) return std::nullopt;
    return app->second;
  }

  // The token first, as WeCom checks it, then the corp's limit for the path, then the API.
  api_outcome api_answer(const api_request& request, const std::string& access_token,
                         token_status status, system_clock::time_point now) {
    if (access_token.empty()) return api_error(41001, "access_token missing");
    if (status == token_status::expired) return api_error(42001, "access_token expired");
    if (status == token_status::invalid) return api_error(40014, "invalid access_token");
    if (!within_api_limit(*app_of(access_token), std::string(request.api_path), now)) {
      return api_error(45009, "api freq out of limit");
    }
    if (request.api_path == "/cgi-bin/user/get") return user_get(request.parameters);
    if (request.api_path == "/cgi-bin/message/send") return message_send(request.body);
    if (request.api_path == "/cgi-bin/media/upload") return media_upload(request, now);
    if (request.api_path == "/cgi-bin/media/get") return media_get(request.parameters);
    throw std::logic_error("routed to an API the fake does not serve");
  }

  bool within_api_limit(const std::string& corpid, const std::string& api_path,
                        system_clock::time_point now) {
    const api_key key{corpid, api_path};
    const auto limit = api_limits_.find(key);
    return limit == api_limits_.end() || admit(api_let_through_[key], limit->second, 1min, now);
  }

  static api_outcome user_get(const query_parameters& parameters) {
    const auto userid = parameter(parameters, "userid").value_or("");
    if (userid.empty()) return api_error(41009, "missing userid");
    nlohmann::ordered_json answer;
    answer["errcode"] = 0;
    answer["errmsg"] = "ok";
    answer["userid"] = userid;
    answer["name"] = "Fake User " + userid;
    return {.json = answer.dump()};
  }

  api_outcome message_send(std::string_view body) {
    // WeCom takes a JSON object; anything else, a parse error included, is 47001.
    const auto message = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!message.is_object()) return api_error(47001, "data format error");
    nlohmann::ordered_json answer;
    answer["errcode"] = 0;
    answer["errmsg"] = "ok";
    answer["msgid"] = "fake-msgid-" + std::to_string(++messages_sent_);
    return {.json = answer.dump()};
  }

  // The file's media_id is the sha256 of its bytes: a test knows it without asking.
  api_outcome media_upload(const api_request& request, system_clock::time_point now) {
    static const std::set<std::string, std::less<>> media_types{"image", "voice", "video", "file"};
    const auto type = parameter(request.parameters, "type").value_or("");
    if (!media_types.contains(type)) return api_error(40004, "invalid media type");
    const auto file = form_file(request.content_type, request.body, "media");
    if (!file) return api_error(41005, "media data missing");
    if (file->data.empty()) return api_error(44001, "empty media data");

    auto media_id = sha256_hex(file->data);
    media_[media_id] = stored_media{
        .filename = file->disposition.parameters.at("filename"),
        .content_type =
            file->content_type.empty() ? "application/octet-stream" : file->content_type,
        .bytes = std::string(file->data),
    };
    nlohmann::ordered_json answer;
    answer["errcode"] = 0;
    answer["errmsg"] = "ok";
    answer["type"] = type;
    answer["media_id"] = std::move(media_id);
    // A string, as WeCom writes it.
    answer["created_at"] = std::to_string(
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
    return {.json = answer.dump()};
  }

  api_outcome media_get(const query_parameters& parameters) const {
    const auto media_id = parameter(parameters, "media_id").value_or("");
    if (const auto size = generated_size(media_id)) {
      return {.file = media_file{.filename = media_id + ".bin",
                                 .content_type = "application/octet-stream",
                                 .generated_size = *size}};
    }
    const auto stored = media_.find(media_id);
    if (stored == media_.end()) return api_error(40007, "invalid media_id");
    return {.file = media_file{.filename = stored->second.filename,
                               .content_type = stored->second.content_type,
                               .bytes = stored->second.bytes}};
  }

  mutable std::mutex mutex_;
  expiry_behaviour behaviour_;
  std::chrono::seconds lifetime_;
  std::optional<std::chrono::seconds> ticket_lifetime_;
  int ticket_quota_;
  std::map<std::string, std::set<std::string>> secrets_by_corpid_;
  std::map<std::string, std::string> corpid_by_secret_;
  std::map<series_key, series> series_;
  std::map<std::string, issued_value> issued_;  // every token and ticket ever issued, by value
  std::map<std::string, int> calls_by_corpid_;
  std::map<ticket_kind, int> ticket_calls_by_kind_;
  int total_calls_ = 0;
  int total_ticket_calls_ = 0;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
  int handshakes_ = 0;
  int resumed_handshakes_ = 0;
  // Ordinary APIs.
  std::deque<api_call> api_calls_;  // the most recent api_call_record_limit
  std::map<std::string, int> api_calls_by_path_;
  std::map<api_key, int> api_limits_;  // calls per minute
  std::map<api_key, std::deque<system_clock::time_point>> api_let_through_;
  std::map<std::string, stored_media> media_;  // by media_id
  bool hang_api_calls_ = false;
  std::chrono::milliseconds api_delay_{0};
  int messages_sent_ = 0;
};

// What the connection does with one request.
struct reply {
  enum class action {
    answer,
    drop_connection,
    hang,                // never answer
    hold_until_released  // answer once the hang control is off
  };
  action what = action::answer;
  bool gettoken = false;  // counts as a gettoken call in flight until answered or dropped
  std::chrono::milliseconds delay{0};
  response answer;
  // The answer's body is this many bytes of generated_media, sent after `answer`'s header.
  std::optional<std::uint64_t> generated_body;
};

// A quoted-string (RFC 9110 §5.6.4): a file name may hold quotes and backslashes.
std::string quoted_string(std::string_view text) {
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + '"';
}

// media/get's answer as WeCom sends a file: its type, and a name to save it under.
reply file_reply(media_file file) {
  auto answer =
      make_response(http::status::ok, file.content_type, std::move(file.bytes).value_or(""));
  answer.set(http::field::content_disposition,
             "attachment; filename=" + quoted_string(file.filename));
  if (file.bytes) return {.answer = std::move(answer)};
  answer.content_length(file.generated_size);
  return {.answer = std::move(answer), .generated_body = file.generated_size};
}

reply api_reply(api_outcome outcome) {
  auto next = outcome.file ? file_reply(std::move(*outcome.file))
                           : reply{.answer = json_response(std::move(outcome.json))};
  if (outcome.hold) next.what = reply::action::hold_until_released;
  next.delay = outcome.delay;
  return next;
}

// The ordinary API ("/cgi-bin/…") a request's path names after any prefix of the base_url, if
// the fake serves it. Any other path is a 404, as WeCom answers one it does not know.
std::optional<std::string_view> served_api_path(std::string_view path) {
  static constexpr std::string_view served[] = {"/cgi-bin/user/get", "/cgi-bin/message/send",
                                                "/cgi-bin/media/upload", "/cgi-bin/media/get"};
  const auto start = path.find("/cgi-bin/");
  if (start == std::string_view::npos) return std::nullopt;
  const auto api_path = path.substr(start);
  if (std::find(std::begin(served), std::end(served), api_path) == std::end(served)) {
    return std::nullopt;
  }
  return api_path;
}

std::vector<std::string> header_names(const http::request<http::string_body>& request) {
  std::vector<std::string> names;
  for (const auto& field : request) names.push_back(lower_case(field.name_string()));
  std::sort(names.begin(), names.end());
  return names;
}

reply call_reply(call_outcome outcome) {
  if (!outcome.scripted) return {.answer = json_response(std::move(outcome.json))};
  switch (outcome.scripted->kind) {
    case fault_kind::errcode:
    case fault_kind::truncated_json:  // framed by Content-Length: only a JSON parser can tell
      return {.answer = json_response(std::move(outcome.json))};
    case fault_kind::delay:
      return {.delay = outcome.scripted->delay, .answer = json_response(std::move(outcome.json))};
    case fault_kind::html:
      // What a captive portal or a load balancer's error page looks like to a client.
      return {.answer =
                  make_response(http::status::ok, "text/html; charset=UTF-8",
                                "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
                                "<body><h1>502 Bad Gateway</h1></body></html>\n")};
    case fault_kind::http_500:
      return {.answer = make_response(http::status::internal_server_error, "text/plain",
                                      "internal server error\n")};
    case fault_kind::drop_connection:
      return {.what = reply::action::drop_connection};
    case fault_kind::hang:
      return {.what = reply::action::hang};
  }
  return {.what = reply::action::drop_connection};
}

reply route(wecom_model& model, std::chrono::milliseconds answer_delay,
            const http::request<http::string_body>& request) {
  const std::string_view target = request.target();
  const auto question_mark = target.find('?');
  const auto path = target.substr(0, question_mark);
  const auto query = question_mark == std::string_view::npos ? std::string_view{}
                                                             : target.substr(question_mark + 1);
  const auto parameters = parse_query(query);

  // Matched on the ending so a base_url with a path prefix (a private deployment behind a
  // gateway) reaches the same routes.
  if (request.method() == http::verb::get && path.ends_with("/cgi-bin/gettoken")) {
    auto next = call_reply(model.gettoken(parameters));
    next.gettoken = true;
    next.delay += answer_delay;
    return next;
  }
  if (request.method() == http::verb::get &&
      (path.ends_with("/cgi-bin/get_jsapi_ticket") || path.ends_with("/cgi-bin/ticket/get"))) {
    // ticket/get serves agent_config tickets only; jsapi ones have their own path.
    const auto kind =
        path.ends_with("/cgi-bin/get_jsapi_ticket")       ? std::optional{ticket_kind::jsapi}
        : parameter(parameters, "type") == "agent_config" ? std::optional{ticket_kind::agent_config}
                                                          : std::nullopt;
    auto next = call_reply(model.ticket(kind, parameters));
    next.delay += answer_delay;
    return next;
  }
  if (request.method() == http::verb::post &&
      path.ends_with("/cgi-bin/service/get_provider_token")) {
    return {.answer = json_response(model.service.provider_token(request.body()))};
  }
  if (request.method() == http::verb::post && path.ends_with("/cgi-bin/service/get_suite_token")) {
    return {.answer = json_response(model.service.suite_token(request.body()))};
  }
  if (request.method() == http::verb::post &&
      path.ends_with("/cgi-bin/service/get_permanent_code")) {
    return {.answer = json_response(model.service.permanent_code_call(
                parameter(parameters, "suite_access_token").value_or(""), request.body()))};
  }
  if (request.method() == http::verb::post && path.ends_with("/cgi-bin/service/get_corp_token")) {
    return {.delay = model.service.corp_token_delay() + answer_delay,
            .answer = json_response(model.service.corp_token(
                parameter(parameters, "suite_access_token").value_or(""), request.body()))};
  }
  if (request.method() == http::verb::get && path == "/fake/stats") {
    return {.answer = json_response(model.stats_json())};
  }
  if (request.method() == http::verb::get && path == "/fake/ticket_status") {
    const auto kind = parameter(parameters, "kind");
    for (const auto known : {ticket_kind::jsapi, ticket_kind::agent_config}) {
      if (kind != to_string(known)) continue;
      const auto status =
          model.check(parameter(parameters, "ticket").value_or(""), credential_of(known));
      return {.answer = json_response(nlohmann::json{{"status", to_string(status)}}.dump())};
    }
    return {.answer = make_response(http::status::bad_request, "text/plain",
                                    "kind must be jsapi or agent_config\n")};
  }
  if (request.method() == http::verb::get && path == "/fake/api_calls") {
    return {.answer = json_response(model.api_calls_json())};
  }
  if (request.method() == http::verb::delete_ && path == "/fake/api_calls") {
    model.clear_api_calls();
    return {.answer = make_response(http::status::no_content, "text/plain", "")};
  }
  if (const auto api_path = served_api_path(path)) {
    return api_reply(model.call_api(api_request{
        .method = request.method_string(),
        .path = path,
        .api_path = *api_path,
        .query = query,
        .parameters = parameters,
        .content_type = request[http::field::content_type],
        .body = request.body(),
        .header_names = header_names(request),
    }));
  }
  return {.answer = make_response(http::status::not_found, "text/plain", "not found\n")};
}

// The connections waiting for a request, for closing them as a server's idle timeout would,
// and the calls held by the hang control, for releasing them. Touched only on the fake's thread.
struct connection_registry {
  std::set<beast::tcp_stream*> idle;     // waiting for a request
  std::set<beast::tcp_stream*> busy;     // a request read, its answer not yet written
  std::set<beast::tcp_stream*> closing;  // busy when idle ones were closed: closes once done
  std::set<asio::steady_timer*> held;    // cancelled to release a held call
};

// Holds a hung request until the peer gives up (or the fake is destroyed, which destroys
// this coroutine). Anything the peer sends meanwhile is read and ignored.
asio::awaitable<void> hang_until_peer_leaves(tls_stream& stream) {
  beast::get_lowest_layer(stream).expires_after(hang_limit);
  char ignored[512];
  for (;;) {
    auto [error, read] =
        co_await stream.async_read_some(asio::buffer(ignored), asio::as_tuple(asio::use_awaitable));
    if (error) co_return;
  }
}

// Holds a call while the hang control is on: true once it is switched off (answer now), false
// if the peer leaves first. Anything the peer sends meanwhile is read and ignored.
asio::awaitable<bool> hold_until_released(tls_stream& stream, connection_registry& connections) {
  using namespace asio::experimental::awaitable_operators;
  beast::get_lowest_layer(stream).expires_after(hang_limit);
  asio::steady_timer release(stream.get_executor(), asio::steady_timer::time_point::max());
  struct registered {
    connection_registry& connections;
    asio::steady_timer* release;
    ~registered() { connections.held.erase(release); }
  } const held{connections, &release};
  connections.held.insert(&release);

  char ignored[512];
  for (;;) {
    // Named first: a temporary inside the co_await operand trips g++ 12.
    auto released = release.async_wait(asio::as_tuple(asio::use_awaitable));
    auto peer = stream.async_read_some(asio::buffer(ignored), asio::as_tuple(asio::use_awaitable));
    auto first = co_await (std::move(released) || std::move(peer));
    if (first.index() == 0) co_return true;
    const auto [error, read] = std::get<1>(first);
    if (error) co_return false;
  }
}

// A generated body a chunk at a time, so tens of MiB never sit in memory at once.
asio::awaitable<error_code> write_generated(tls_stream& stream, const response& head,
                                            std::uint64_t size) {
  const auto on_error = asio::as_tuple(asio::use_awaitable);
  auto& transport = beast::get_lowest_layer(stream);
  http::response<http::buffer_body> message{head.base()};
  message.body().data = nullptr;
  message.body().more = true;
  http::response_serializer<http::buffer_body> serializer{message};
  transport.expires_after(write_timeout);
  auto [header_error, header_written] =
      co_await http::async_write_header(stream, serializer, on_error);
  if (header_error) co_return header_error;

  for (std::uint64_t sent = 0; sent < size;) {
    auto chunk = generated_media(sent, std::min<std::uint64_t>(size - sent, generated_chunk_size));
    sent += chunk.size();
    message.body().data = chunk.data();
    message.body().size = chunk.size();
    message.body().more = sent < size;
    transport.expires_after(write_timeout);
    auto [error, written] = co_await http::async_write(stream, serializer, on_error);
    // need_buffer: this chunk is out and the serializer waits for the next.
    if (error && error != http::error::need_buffer) co_return error;
  }
  if (!serializer.is_done()) {  // an empty body: the serializer still has to finish
    message.body().data = nullptr;
    message.body().more = false;
    auto [error, written] = co_await http::async_write(stream, serializer, on_error);
    co_return error;
  }
  co_return error_code{};
}

asio::awaitable<void> serve_connection(tls_stream stream, wecom_model& model,
                                       std::chrono::milliseconds answer_delay,
                                       connection_registry& connections) {
  const auto on_error = asio::as_tuple(asio::use_awaitable);
  auto& transport = beast::get_lowest_layer(stream);

  transport.expires_after(handshake_timeout);
  auto [handshake_error] =
      co_await stream.async_handshake(asio::ssl::stream_base::server, on_error);
  // A client that distrusts the certificate aborts here; nothing to answer.
  if (handshake_error) co_return;
  model.handshake_completed(SSL_session_reused(stream.native_handle()) == 1);

  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(request_header_limit);
    parser.body_limit(request_body_limit);
    transport.expires_after(idle_timeout);
    connections.idle.insert(&transport);
    auto [read_error, read] = co_await http::async_read(stream, buffer, parser, on_error);
    connections.idle.erase(&transport);
    if (read_error) co_return;  // peer gone, timed out, closed as idle, or not HTTP
    const auto& request = parser.get();
    struct busy_request {
      connection_registry& connections;
      beast::tcp_stream* transport;
      ~busy_request() {
        connections.busy.erase(transport);
        connections.closing.erase(transport);
      }
    } const busy{connections, &transport};
    connections.busy.insert(&transport);

    reply next = route(model, answer_delay, request);
    // In flight from here until this iteration ends: answered, dropped or hung up on.
    struct in_flight_call {
      wecom_model* model;
      ~in_flight_call() {
        if (model) model->call_ended();
      }
    } const counted{next.gettoken ? &model : nullptr};
    if (next.gettoken) model.call_began();
    if (next.what == reply::action::drop_connection) co_return;  // the socket closes unanswered
    if (next.what == reply::action::hang) {
      co_await hang_until_peer_leaves(stream);
      co_return;
    }
    if (next.what == reply::action::hold_until_released) {
      const bool released = co_await hold_until_released(stream, connections);
      if (!released) co_return;
    }
    if (next.delay > 0ms) {
      // On the timer, not the thread: other connections keep being served meanwhile.
      asio::steady_timer delay(stream.get_executor(), next.delay);
      co_await delay.async_wait(on_error);
    }

    next.answer.keep_alive(request.keep_alive());
    error_code write_error;
    if (next.generated_body) {
      write_error = co_await write_generated(stream, next.answer, *next.generated_body);
    } else {
      transport.expires_after(write_timeout);
      auto [error, written] = co_await http::async_write(stream, next.answer, on_error);
      write_error = error;
    }
    if (write_error || !next.answer.keep_alive() || connections.closing.contains(&transport)) break;
  }

  // A polite close_notify, but briefly: clients often just drop the connection, which shows
  // up here as stream_truncated and is fine.
  transport.expires_after(tls_shutdown_timeout);
  co_await stream.async_shutdown(on_error);
}

asio::awaitable<void> accept_connections(tcp::acceptor& acceptor, asio::ssl::context& tls,
                                         wecom_model& model, std::chrono::milliseconds answer_delay,
                                         connection_registry& connections) {
  const auto on_error = asio::as_tuple(asio::use_awaitable);
  for (;;) {
    auto [error, socket] = co_await acceptor.async_accept(on_error);
    if (!acceptor.is_open() || error == asio::error::operation_aborted) co_return;
    if (error) continue;  // one failed accept (the peer reset early) must not stop the fake
    asio::co_spawn(
        acceptor.get_executor(),
        serve_connection(tls_stream(std::move(socket), tls), model, answer_delay, connections),
        asio::detached);
  }
}

asio::ssl::context server_tls_context(const tls_material& material) {
  asio::ssl::context tls(asio::ssl::context::tls_server);
  tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3);
  tls.use_certificate_chain(asio::buffer(material.certificate_pem));
  tls.use_private_key(asio::buffer(material.private_key_pem), asio::ssl::context::pem);
  return tls;
}

}  // namespace

// Declaration order is destruction order in reverse: the io_context goes first, destroying
// any coroutine still suspended (a hung connection), while the model and the TLS context it
// uses are still alive.
struct fake_wecom::state {
  explicit state(const fake_options& options)
      : model(options), tls(server_tls_context(options.tls)), answer_delay(options.answer_delay) {
    const tcp::endpoint endpoint(asio::ip::make_address(options.host), options.port);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen();
    port = acceptor.local_endpoint().port();
  }

  wecom_model model;
  asio::ssl::context tls;
  std::chrono::milliseconds answer_delay;
  connection_registry connections;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::uint16_t port = 0;
  std::thread thread;
};

fake_wecom::fake_wecom(fake_options options) : state_(std::make_unique<state>(options)) {
  asio::co_spawn(state_->io,
                 accept_connections(state_->acceptor, state_->tls, state_->model,
                                    state_->answer_delay, state_->connections),
                 asio::detached);
  state_->thread = std::thread([&io = state_->io] { io.run(); });
}

fake_wecom::~fake_wecom() {
  // No draining: a test that scripted a hang must still be able to end. Whatever is
  // suspended is destroyed with the io_context; its sockets close and peers see EOF.
  state_->io.stop();
  state_->thread.join();
  error_code ignored;
  state_->acceptor.close(ignored);
}

std::uint16_t fake_wecom::port() const {
  return state_->port;
}

std::string fake_wecom::base_url() const {
  return "https://localhost:" + std::to_string(port());
}

void fake_wecom::add_app(const std::string& corpid, const std::string& secret) {
  state_->model.add_app(corpid, secret);
}

void fake_wecom::set_behaviour(expiry_behaviour behaviour) {
  state_->model.set_behaviour(behaviour);
}

void fake_wecom::set_lifetime(std::chrono::seconds lifetime) {
  state_->model.set_lifetime(lifetime);
}

void fake_wecom::set_ticket_lifetime(std::optional<std::chrono::seconds> lifetime) {
  state_->model.set_ticket_lifetime(lifetime);
}

void fake_wecom::set_ticket_quota(int calls_per_hour) {
  state_->model.set_ticket_quota(calls_per_hour);
}

void fake_wecom::script_faults(const std::string& secret, std::vector<fault> faults) {
  state_->model.script_faults(secret, credential_kind::access_token, std::move(faults));
}

void fake_wecom::script_ticket_faults(const std::string& secret, ticket_kind kind,
                                      std::vector<fault> faults) {
  state_->model.script_faults(secret, credential_of(kind), std::move(faults));
}

void fake_wecom::revoke_tokens(const std::string& secret) {
  state_->model.revoke(secret, credential_kind::access_token);
}

void fake_wecom::revoke_tickets(const std::string& secret, ticket_kind kind) {
  state_->model.revoke(secret, credential_of(kind));
}

std::vector<api_call> fake_wecom::api_calls() const {
  return state_->model.api_calls();
}

std::map<std::string, int> fake_wecom::api_calls_by_path() const {
  return state_->model.api_calls_by_path();
}

void fake_wecom::clear_api_calls() {
  state_->model.clear_api_calls();
}

void fake_wecom::set_api_limit(const std::string& corpid, const std::string& api_path,
                               std::optional<int> calls_per_minute) {
  state_->model.set_api_limit(corpid, api_path, calls_per_minute);
}

void fake_wecom::hang_api_calls(bool hang) {
  // The flag first: a call read after this is not held, one read before is already registered
  // (route and registration run in one step on the fake's thread), so the post below sees it.
  state_->model.hang_api_calls(hang);
  if (hang) return;
  std::promise<void> released;
  asio::post(state_->io, [&] {
    for (auto* release : state_->connections.held) release->cancel();
    released.set_value();
  });
  released.get_future().wait();
}

void fake_wecom::set_api_delay(std::chrono::milliseconds delay) {
  state_->model.set_api_delay(delay);
}

int fake_wecom::tls_handshakes() const {
  return state_->model.handshakes();
}

int fake_wecom::tls_resumed_handshakes() const {
  return state_->model.resumed_handshakes();
}

void fake_wecom::close_idle_connections() {
  std::promise<void> closed;
  asio::post(state_->io, [&] {
    // Each one's pending read ends (operation_aborted) and its coroutine returns later. A
    // connection still writing an answer the client may already have read closes after it.
    auto& connections = state_->connections;
    for (auto* transport : connections.idle) transport->close();
    connections.closing.insert(connections.busy.begin(), connections.busy.end());
    closed.set_value();
  });
  closed.get_future().wait();
}

service_model& fake_wecom::service() {
  return state_->model.service;
}

std::vector<std::string> fake_wecom::suite_token_requests() const {
  return state_->model.service.suite_token_requests();
}

int fake_wecom::gettoken_calls(const std::string& secret) const {
  return state_->model.calls(secret, credential_kind::access_token);
}

int fake_wecom::gettoken_calls() const {
  return state_->model.calls();
}

int fake_wecom::max_concurrent_gettoken_calls() const {
  return state_->model.max_concurrent_calls();
}

std::map<std::string, int> fake_wecom::gettoken_calls_by_corpid() const {
  return state_->model.calls_by_corpid();
}

token_status fake_wecom::check(const std::string& access_token) const {
  return state_->model.check(access_token, credential_kind::access_token);
}

std::optional<std::chrono::system_clock::time_point> fake_wecom::expires_at(
    const std::string& value) const {
  return state_->model.expires_at(value);
}

std::optional<std::chrono::system_clock::time_point> fake_wecom::issued_if_repeated_in_full(
    const std::string& value) const {
  return state_->model.repeated_in_full(value);
}

int fake_wecom::ticket_calls(const std::string& secret, ticket_kind kind) const {
  return state_->model.calls(secret, credential_of(kind));
}

int fake_wecom::ticket_calls(ticket_kind kind) const {
  return state_->model.ticket_calls(kind);
}

int fake_wecom::ticket_calls() const {
  return state_->model.ticket_calls(std::nullopt);
}

token_status fake_wecom::check_ticket(
    ticket_kind kind, const std::string& ticket,
    std::optional<std::chrono::system_clock::time_point> at) const {
  return state_->model.check(ticket, credential_of(kind), at);
}

std::vector<std::string> fake_wecom::issued_tickets(const std::string& secret,
                                                    ticket_kind kind) const {
  return state_->model.issued(secret, credential_of(kind));
}

namespace {
// splitmix64: a fixed, well-mixed word for each 8-byte position, computable at any offset.
std::uint64_t pattern_word(std::uint64_t index) {
  auto word = index + 0x9e3779b97f4a7c15;
  word = (word ^ (word >> 30)) * 0xbf58476d1ce4e5b9;
  word = (word ^ (word >> 27)) * 0x94d049bb133111eb;
  return word ^ (word >> 31);
}
}  // namespace

std::string generated_media(std::uint64_t offset, std::size_t size) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) {
    const auto at = offset + i;
    bytes[i] = static_cast<char>(pattern_word(at / 8) >> (8 * (at % 8)));
  }
  return bytes;
}

std::string sha256_hex(std::string_view data) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (const auto byte : token_broker::sha256(data)) {
    hex += digits[byte >> 4];
    hex += digits[byte & 0xf];
  }
  return hex;
}

std::string to_string(token_status status) {
  switch (status) {
    case token_status::valid:
      return "valid";
    case token_status::expired:
      return "expired";
    case token_status::invalid:
      return "invalid";
  }
  return "unknown";
}

std::string to_string(ticket_kind kind) {
  return kind == ticket_kind::jsapi ? "jsapi" : "agent_config";
}

}  // namespace token_broker::fake
