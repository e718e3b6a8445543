// The third-party side of the API (SPEC §4, §7): provider, suite and corp credentials, the
// suite_ticket a service pushes, WeCom's callback, and WeCom's drop-ins for the service
// tokens. These answers read views through the refreshers themselves, not the workers' cache
// of apps' views: a corp's refresher may go (cancel_auth) and another take its address.
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "token_broker/callback/callback_xml.hpp"
#include "token_broker/core/secret_digest.hpp"
#include "token_broker/http/request_handler.hpp"

namespace token_broker {
namespace {

// A suite_ticket is WeCom's random text of a few dozen bytes.
constexpr std::size_t max_ticket_size = 512;

response bad_request(std::string_view message) {
  return error_response(http::status::bad_request, "bad_request", message);
}

// The body of a WeCom-style POST drop-in: a JSON object, or nullopt.
std::optional<nlohmann::json> json_object(std::string_view body) {
  auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return std::nullopt;
  return json;
}

std::string string_member(const nlohmann::json& object, const char* name) {
  const auto found = object.find(name);
  return found != object.end() && found->is_string() ? found->get<std::string>() : std::string();
}

// The callback's query: msg_signature, timestamp, nonce (and echostr for the verification).
struct signed_query {
  std::string signature, timestamp, nonce, echostr;
};

std::optional<signed_query> read_signed_query(std::string_view query) {
  const auto parsed = query_parameters::parse(query);
  if (!parsed) return std::nullopt;
  signed_query read;
  for (auto [name, into] :
       {std::pair{"msg_signature", &read.signature}, std::pair{"timestamp", &read.timestamp},
        std::pair{"nonce", &read.nonce}, std::pair{"echostr", &read.echostr}}) {
    if (const auto* value = parsed->find(name)) *into = *value;
  }
  if (read.signature.empty() || read.timestamp.empty() || read.nonce.empty()) return std::nullopt;
  return read;
}

}  // namespace

std::variant<answer, waiting_request> request_handler::serve_or_wait(
    credential_refresher& credential, decltype(waiting_request::then) then) {
  const auto now = clock::now();
  if (auto view = credential.view(); view->servable(now)) {
    if (then == waiting_request::wecom_token) return wecom_token_answer(std::move(view), now);
    return our_token_answer(std::move(view), now);
  }
  return waiting_request{.credential = credential.shared_from_this(), .then = then};
}

template <credential_kind kind>
std::variant<credential_refresher*, answer> request_handler::third_party_refresher(
    const call& current) {
  if constexpr (kind == credential_kind::provider_token) return current.provider->token.get();
  if constexpr (kind == credential_kind::suite_token) return current.suite->token.get();
  const auto* corp = current.suite->corp(current.matched.parameters["corpid"]);
  if (!corp) {
    return error_response(http::status::not_found, "unknown_corp",
                          "no such corp has authorized suite " + current.suite->suite->id);
  }
  return corp->token.get();
}

template <credential_kind kind>
std::variant<answer, waiting_request> request_handler::third_party_credential(const call& current) {
  auto found = third_party_refresher<kind>(current);
  if (auto* refusal = std::get_if<answer>(&found)) return std::move(*refusal);
  return serve_or_wait(*std::get<credential_refresher*>(found), waiting_request::our_token);
}

template <credential_kind kind>
std::variant<answer, waiting_request> request_handler::third_party_invalidate(const call& current) {
  auto found = third_party_refresher<kind>(current);
  if (auto* refusal = std::get_if<answer>(&found)) return std::move(*refusal);
  return invalidation_of(*std::get<credential_refresher*>(found), current.incoming.body());
}

template std::variant<answer, waiting_request>
request_handler::third_party_credential<credential_kind::provider_token>(const call&);
template std::variant<answer, waiting_request>
request_handler::third_party_credential<credential_kind::suite_token>(const call&);
template std::variant<answer, waiting_request>
request_handler::third_party_credential<credential_kind::corp_token>(const call&);
template std::variant<answer, waiting_request>
request_handler::third_party_invalidate<credential_kind::provider_token>(const call&);
template std::variant<answer, waiting_request>
request_handler::third_party_invalidate<credential_kind::suite_token>(const call&);
template std::variant<answer, waiting_request>
request_handler::third_party_invalidate<credential_kind::corp_token>(const call&);

std::variant<answer, waiting_request> request_handler::list_corps(const call& current) {
  const auto now = clock::now();
  auto listing = nlohmann::ordered_json::array();
  for (const auto& [corpid, corp] : current.suite->corps) {
    nlohmann::ordered_json listed{{"corpid", corpid}, {"source", to_string(corp.origin)}};
    describe(listed, *corp.token, now);
    listing.push_back(std::move(listed));
  }
  return json_response(http::status::ok, listing.dump());
}

std::variant<answer, waiting_request> request_handler::put_suite_ticket(const call& current) {
  const auto body = json_object(current.incoming.body());
  const auto ticket = body ? string_member(*body, "suite_ticket") : std::string();
  if (ticket.empty() || ticket.size() > max_ticket_size) {
    return bad_request(
        "the body must be {\"suite_ticket\":\"<the ticket WeCom pushed>\"}, at most " +
        std::to_string(max_ticket_size) + " bytes");
  }
  return waiting_request{
      .credential = current.suite->ticket, .then = waiting_request::push, .reported = ticket};
}

asio::awaitable<answer> request_handler::keep_pushed(const waiting_request& waiting) {
  auto keeping = waiting.credential->accept_pushed(waiting.reported, suite_ticket_lifetime);
  co_await std::move(keeping);
  if (waiting.then == waiting_request::callback_push) {
    co_return text_response(http::status::ok, "success");
  }
  co_return json_response(http::status::ok,
                          nlohmann::ordered_json{{"suite", waiting.credential->id().scope},
                                                 {"expires_in", suite_ticket_lifetime.count()}}
                              .dump());
}

// SPEC §7: GET with msg_signature, timestamp, nonce, echostr: the echostr decrypted is the answer.
std::variant<answer, waiting_request> request_handler::callback_verification(const call& current) {
  const auto& suite = *current.suite;
  if (!suite.callback) {
    return error_response(http::status::not_found, "not_configured",
                          "suite " + suite.suite->id + " has no callback configured");
  }
  const auto query = read_signed_query(current.matched.query);
  if (!query || query->echostr.empty()) {
    return bad_request("msg_signature, timestamp, nonce and echostr are required");
  }
  if (!suite.callback->signed_by_wecom(query->signature, query->timestamp, query->nonce,
                                       query->echostr)) {
    spdlog::warn("suite={} callback verification refused: bad signature", suite.suite->id);
    return error_response(http::status::forbidden, "forbidden", "bad signature");
  }
  const auto opened = suite.callback->open(query->echostr);
  if (!opened) return bad_request("echostr does not decrypt under the suite's EncodingAESKey");
  spdlog::info("suite={} callback URL verified", suite.suite->id);
  return text_response(http::status::ok, opened->message);
}

// SPEC §7: POST of an encrypted event. Answered at once: WeCom wants "success" within 1 s, so
// what takes upstream calls (an auth code's exchange) runs after the answer.
std::variant<answer, waiting_request> request_handler::callback_event(const call& current) {
  const auto& suite = *current.suite;
  const auto& id = suite.suite->id;
  if (!suite.callback) {
    return error_response(http::status::not_found, "not_configured",
                          "suite " + id + " has no callback configured");
  }
  const auto query = read_signed_query(current.matched.query);
  if (!query) return bad_request("msg_signature, timestamp and nonce are required");
  const auto encrypted = encrypted_text_of(current.incoming.body());
  if (!encrypted) return bad_request("the body is not WeCom's <xml> envelope with <Encrypt>");
  if (!suite.callback->signed_by_wecom(query->signature, query->timestamp, query->nonce,
                                       *encrypted)) {
    spdlog::warn("suite={} callback refused: bad signature", id);
    return error_response(http::status::forbidden, "forbidden", "bad signature");
  }
  const auto opened = suite.callback->open(*encrypted);
  if (!opened) return bad_request("the message does not decrypt under the suite's EncodingAESKey");
  if (opened->receive_id != suite.suite->suite_id) {
    spdlog::warn("suite={} callback refused: sealed for another receive id", id);
    return bad_request("the message is sealed for another suite");
  }
  const auto event = read_suite_event(opened->message);
  if (!event) return bad_request("the message is not a suite event with an InfoType");
  spdlog::info("suite={} callback {} (WeCom's timestamp {})", id, event->info_type,
               event->timestamp);
  if (event->info_type == "suite_ticket") {
    if (event->suite_ticket.empty() || event->suite_ticket.size() > max_ticket_size) {
      return bad_request("a suite_ticket event without a usable SuiteTicket");
    }
    return waiting_request{.credential = suite.ticket,
                           .then = waiting_request::callback_push,
                           .reported = event->suite_ticket};
  }
  if (event->info_type == "create_auth" || event->info_type == "reset_permanent_code") {
    if (event->auth_code.empty()) return bad_request("an authorization event without AuthCode");
    apps_.authorize_corp(id, event->auth_code);
  } else if (event->info_type == "cancel_auth") {
    if (event->auth_corp_id.empty()) return bad_request("cancel_auth without AuthCorpId");
    apps_.cancel_corp(id, event->auth_corp_id);
  }
  // change_auth and the rest change no credential: logged above, and answered.
  return text_response(http::status::ok, "success");
}

// The drop-ins answer in WeCom's shapes (HTTP 200 with an errcode) so that SDKs pointed at the
// broker behave as they would at WeCom. Secrets are compared by digest, in constant time.
std::variant<answer, waiting_request> request_handler::wecom_provider_token(const call& current) {
  const auto body = json_object(current.incoming.body());
  if (!body) return wecom_error_response(47001, "data format error");
  const auto corpid = string_member(*body, "corpid");
  const auto offered = sha256(string_member(*body, "provider_secret"));
  const auto set = apps_.third_party();
  const provider_entry* matched = nullptr;
  bool known = false;
  for (const auto& [id, provider] : set->providers) {
    if (provider.provider->corpid != corpid) continue;
    known = true;
    if (digests_equal(provider.secret_digest, offered) && !matched) matched = &provider;
  }
  if (!known) return wecom_error_response(40013, "invalid corpid");
  if (!matched) return wecom_error_response(40001, "invalid provider_secret");
  current.subject.provider = matched->provider->id;
  return serve_or_wait(*matched->token, waiting_request::wecom_token);
}

std::variant<answer, waiting_request> request_handler::wecom_suite_token(const call& current) {
  const auto body = json_object(current.incoming.body());
  if (!body) return wecom_error_response(47001, "data format error");
  const auto set = apps_.third_party();
  const auto* suite = set->suite_with_suite_id(string_member(*body, "suite_id"));
  if (!suite) return wecom_error_response(40013, "invalid suite_id");
  if (!digests_equal(suite->secret_digest, sha256(string_member(*body, "suite_secret")))) {
    return wecom_error_response(40001, "invalid suite_secret");
  }
  current.subject.suite = suite->suite->id;
  return serve_or_wait(*suite->token, waiting_request::wecom_token);
}

// Keyed by a suite_access_token, as WeCom keys it: one this broker serves now.
std::variant<answer, waiting_request> request_handler::wecom_corp_token(const call& current) {
  const auto query = query_parameters::parse(current.matched.query);
  const auto* suite_token = query ? query->find("suite_access_token") : nullptr;
  if (!suite_token || suite_token->empty()) {
    return wecom_error_response(41001, "suite_access_token missing");
  }
  const auto body = json_object(current.incoming.body());
  if (!body) return wecom_error_response(47001, "data format error");
  const auto now = clock::now();
  const auto set = apps_.third_party();
  const suite_entry* suite = nullptr;
  for (const auto& [id, each] : set->suites) {
    const auto view = each.token->view();
    if (const auto* held = view->servable(now); held && held->value == *suite_token) suite = &each;
  }
  if (!suite) return wecom_error_response(40082, "invalid suite_access_token");
  current.subject.suite = suite->suite->id;
  const auto* corp = suite->corp(string_member(*body, "auth_corpid"));
  if (!corp) return wecom_error_response(40084, "invalid permanent_code");
  if (!digests_equal(corp->code_digest, sha256(string_member(*body, "permanent_code")))) {
    return wecom_error_response(40084, "invalid permanent_code");
  }
  current.subject.corp = corp->corpid;
  return serve_or_wait(*corp->token, waiting_request::wecom_token);
}

}  // namespace token_broker
