#include "fake_wecom.hpp"

#include <openssl/rand.h>

#include <algorithm>
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

namespace token_broker::fake {
namespace {

using asio::ip::tcp;
using std::chrono::system_clock;
using namespace std::chrono_literals;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;
using response = http::response<http::string_body>;
using query_parameters = std::map<std::string, std::string, std::less<>>;

// A request is a few lines of headers and at most a small JSON body; more is a broken or
// hostile client.
constexpr std::uint32_t request_header_limit = 8 * 1024;
constexpr std::uint64_t request_body_limit = 1024;
// Deadlines so a client that stalls at any step cannot keep a connection (or a test) alive.
constexpr auto handshake_timeout = 10s;
constexpr auto idle_timeout = 30s;
constexpr auto write_timeout = 10s;
constexpr auto tls_shutdown_timeout = 1s;
// The hang fault waits for the peer to give up; bounded in case it never does.
constexpr auto hang_limit = 10min;

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

query_parameters parse_query(std::string_view query) {
  query_parameters parameters;
  while (!query.empty()) {
    const auto end = query.find('&');
    const auto pair = query.substr(0, end);
    query = end == std::string_view::npos ? std::string_view{} : query.substr(end + 1);
    if (pair.empty()) continue;
    const auto equals = pair.find('=');
    auto name = url_decode(pair.substr(0, equals));
    auto value =
        equals == std::string_view::npos ? std::string{} : url_decode(pair.substr(equals + 1));
    parameters.try_emplace(std::move(name), std::move(value));  // the first one wins
  }
  return parameters;
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

// WeCom's bookkeeping: apps, issued tokens and tickets, scripts, quotas and counters. No I/O, so
// the HTTP side and the test thread share it under one mutex.
class wecom_model {
 public:
  explicit wecom_model(const fake_options& options)
      : behaviour_(options.behaviour),
        lifetime_(options.lifetime),
        ticket_lifetime_(options.ticket_lifetime),
        ticket_quota_(options.ticket_calls_per_hour) {}

  void add_app(const std::string& corpid, const std::string& secret) {
    const std::scoped_lock lock(mutex_);
    secrets_by_corpid_[corpid].insert(secret);
  }

  void set_behaviour(expiry_behaviour behaviour) {
    const std::scoped_lock lock(mutex_);
    behaviour_ = behaviour;
  }

  void set_lifetime(std::chrono::seconds lifetime) {
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

  // A TLS handshake completed: one per connection, however many requests it then carries.
  void handshake_completed() {
    const std::scoped_lock lock(mutex_);
    ++handshakes_;
  }
  int handshakes() const {
    const std::scoped_lock lock(mutex_);
    return handshakes_;
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
    body["ticket_calls"] = total_ticket_calls_;
    nlohmann::ordered_json by_kind;
    for (const auto kind : {ticket_kind::jsapi, ticket_kind::agent_config}) {
      const auto found = ticket_calls_by_kind_.find(kind);
      by_kind[to_string(kind)] = found == ticket_calls_by_kind_.end() ? 0 : found->second;
    }
    body["ticket_calls_by_kind"] = std::move(by_kind);
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

  // POST /cgi-bin/service/get_suite_token: the body is recorded as it came, and a body with
  // the three fields (any values) gets a suite_access_token.
  std::string suite_token(std::string body) {
    const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    const std::scoped_lock lock(mutex_);
    suite_token_requests_.push_back(std::move(body));
    for (const char* field : {"suite_id", "suite_secret", "suite_ticket"}) {
      if (!json.is_object() || !json.contains(field) || !json[field].is_string()) {
        return wecom_json(47001, "data format error");
      }
    }
    nlohmann::ordered_json answer;
    answer["errcode"] = 0;
    answer["errmsg"] = "ok";
    answer["suite_access_token"] = random_token();
    answer["expires_in"] = 7200;
    return answer.dump();
  }

  std::vector<std::string> suite_token_requests() const {
    const std::scoped_lock lock(mutex_);
    return suite_token_requests_;
  }

  // WeCom's answer to an API call made with `access_token` (e.g. /cgi-bin/user/get).
  std::string api_answer(const std::optional<std::string>& access_token) const {
    if (!access_token || access_token->empty()) return wecom_json(41001, "access_token missing");
    switch (check(*access_token, credential_kind::access_token)) {
      case token_status::valid:
        return wecom_json(0, "ok");
      case token_status::expired:
        return wecom_json(42001, "access_token expired");
      case token_status::invalid:
        break;
    }
    return wecom_json(40014, "invalid access_token");
  }

 private:
  using series_key = std::pair<std::string, credential_kind>;  // secret, kind

  struct issued_value {
    std::string secret;
    credential_kind kind;
    system_clock::time_point issued_at;
    system_clock::time_point expires_at;
    std::optional<system_clock::time_point> revoked_at;
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

  // WeCom's frequency limit on tickets: a rolling hour of the calls it let through.
  bool within_quota(series& record, system_clock::time_point now) const {
    while (!record.let_through.empty() && record.let_through.front() <= now - 1h) {
      record.let_through.pop_front();
    }
    if (std::cmp_greater_equal(record.let_through.size(), std::max(ticket_quota_, 0))) return false;
    record.let_through.push_back(now);
    return true;
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
    if (behaviour_ != expiry_behaviour::new_token_each_call &&
        status_of(record.current, kind, now) == token_status::valid) {
      const auto& current = issued_.at(record.current);
      if (behaviour_ == expiry_behaviour::same_token_keeps_expiry) {
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
    issued_.emplace(record.current, issued_value{key.first, kind, now, now + lifetime});
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

  mutable std::mutex mutex_;
  expiry_behaviour behaviour_;
  std::chrono::seconds lifetime_;
  std::optional<std::chrono::seconds> ticket_lifetime_;
  int ticket_quota_;
  std::map<std::string, std::set<std::string>> secrets_by_corpid_;
  std::map<series_key, series> series_;
  std::map<std::string, issued_value> issued_;  // every token and ticket ever issued, by value
  std::map<std::string, int> calls_by_corpid_;
  std::map<ticket_kind, int> ticket_calls_by_kind_;
  std::vector<std::string> suite_token_requests_;
  int total_calls_ = 0;
  int total_ticket_calls_ = 0;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
  int handshakes_ = 0;
};

// What the connection does with one request.
struct reply {
  enum class action { answer, drop_connection, hang };
  action what = action::answer;
  bool gettoken = false;  // counts as a gettoken call in flight until answered or dropped
  std::chrono::milliseconds delay{0};
  response answer;
};

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
  const auto parameters =
      parse_query(question_mark == std::string_view::npos ? std::string_view{}
                                                          : target.substr(question_mark + 1));

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
  if (request.method() == http::verb::post && path.ends_with("/cgi-bin/service/get_suite_token")) {
    return {.answer = json_response(model.suite_token(request.body()))};
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
  if (request.method() == http::verb::get && path.ends_with("/cgi-bin/user/get")) {
    return {.answer = json_response(model.api_answer(parameter(parameters, "access_token")))};
  }
  return {.answer = make_response(http::status::not_found, "text/plain", "not found\n")};
}

// The connections waiting for a request, for closing them as a server's idle timeout would.
// Touched only on the fake's thread.
struct connection_registry {
  std::set<beast::tcp_stream*> idle;     // waiting for a request
  std::set<beast::tcp_stream*> busy;     // a request read, its answer not yet written
  std::set<beast::tcp_stream*> closing;  // busy when idle ones were closed: closes once done
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
  model.handshake_completed();

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
    if (next.delay > 0ms) {
      // On the timer, not the thread: other connections keep being served meanwhile.
      asio::steady_timer delay(stream.get_executor(), next.delay);
      co_await delay.async_wait(on_error);
    }

    next.answer.keep_alive(request.keep_alive());
    transport.expires_after(write_timeout);
    auto [write_error, written] = co_await http::async_write(stream, next.answer, on_error);
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

int fake_wecom::tls_handshakes() const {
  return state_->model.handshakes();
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

std::vector<std::string> fake_wecom::suite_token_requests() const {
  return state_->model.suite_token_requests();
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
