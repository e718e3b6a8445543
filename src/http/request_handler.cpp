#include "token_broker/http/request_handler.hpp"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <unordered_map>

#include "token_broker/core/counted.hpp"

namespace token_broker {
namespace {

// What this worker thread last read of a handler's shared state (published.hpp). Only this
// thread touches it; nothing read through it may be used across a co_await, since another
// request on the same worker may move it on meanwhile.
struct worker_reads {
  const request_handler* handler = nullptr;
  published<client_auth>::reader auth;
  published<app_set>::reader apps;
  const app_set* views_of = nullptr;  // the set whose apps `views` holds
  std::unordered_map<const credential_refresher*, published<credential_view>::reader> views;

  const app_set& current_apps(const broker& source) {
    const auto& set = apps.current(source.published_apps());
    if (set.get() != views_of) {
      views.clear();  // their apps may be gone with the old set
      views_of = set.get();
    }
    return *set;
  }
  const std::shared_ptr<const credential_view>& current_view(const credential_refresher& app) {
    return views[&app].current(app.published_view());
  }
};

thread_local worker_reads this_worker;

worker_reads& reads_of(const request_handler* handler) {
  if (this_worker.handler != handler) this_worker = worker_reads{.handler = handler};
  return this_worker;
}

// WeCom answers a gettoken it cannot serve with -1 "system busy"; so do we when upstream
// gave no reason of its own.
fetch_failure failure_or_busy(const token_outcome& outcome) {
  return outcome.failure.value_or(fetch_failure{failure_class::transient, -1, "system busy"});
}

}  // namespace

std::span<const request_handler::endpoint> request_handler::endpoints() {
  using enum http::verb;
  using enum credential_kind;
  using self = request_handler;
  static constexpr std::array<endpoint, 29> table{{
      {{get, "/v1/apps/{app}/token", access::client, "token", "access_token"},
       &self::app_credential<access_token>},
      {{post, "/v1/apps/{app}/token/invalidate", access::client, "invalidate", "access_token"},
       &self::invalidate<access_token>},
      {{get, "/v1/apps/{app}/jsapi_ticket", access::client, "jsapi_ticket", "jsapi_ticket"},
       &self::app_credential<jsapi_ticket>},
      {{post, "/v1/apps/{app}/jsapi_ticket/invalidate", access::client, "jsapi_ticket_invalidate",
        "jsapi_ticket"},
       &self::invalidate<jsapi_ticket>},
      {{get, "/v1/apps/{app}/agent_ticket", access::client, "agent_ticket", "agent_ticket"},
       &self::app_credential<agent_ticket>},
      {{post, "/v1/apps/{app}/agent_ticket/invalidate", access::client, "agent_ticket_invalidate",
        "agent_ticket"},
       &self::invalidate<agent_ticket>},
      {{post, "/v1/apps/{app}/jssdk_signature", access::client, "jssdk_signature",
        "jssdk_signature"},
       &self::jssdk_signature},
      {{get, "/v1/apps", access::client, "apps"}, &self::list_apps},
      {{get, "/v1/providers/{provider}/token", access::client, "provider_token", "provider_token"},
       &self::third_party_credential<provider_token>},
      {{post, "/v1/providers/{provider}/token/invalidate", access::client,
        "provider_token_invalidate", "provider_token"},
       &self::third_party_invalidate<provider_token>},
      {{get, "/v1/suites/{suite}/token", access::client, "suite_token", "suite_token"},
       &self::third_party_credential<suite_token>},
      {{post, "/v1/suites/{suite}/token/invalidate", access::client, "suite_token_invalidate",
        "suite_token"},
       &self::third_party_invalidate<suite_token>},
      {{get, "/v1/suites/{suite}/corps", access::client, "corps"}, &self::list_corps},
      {{get, "/v1/suites/{suite}/corps/{corpid}/token", access::client, "corp_token", "corp_token"},
       &self::third_party_credential<corp_token>},
      {{post, "/v1/suites/{suite}/corps/{corpid}/token/invalidate", access::client,
        "corp_token_invalidate", "corp_token"},
       &self::third_party_invalidate<corp_token>},
      {{put, "/v1/suites/{suite}/suite_ticket", access::client, "suite_ticket"},
       &self::put_suite_ticket},
      // WeCom's callback: the signature is the authentication (SPEC §7).
      {{get, "/v1/suites/{suite}/callback", access::anyone, "callback_verification"},
       &self::callback_verification},
      {{post, "/v1/suites/{suite}/callback", access::anyone, "callback"}, &self::callback_event},
      {{get, "/cgi-bin/gettoken", access::anyone, "gettoken", "access_token"},
       &self::wecom_gettoken},
      // Keyed by a token the broker handed out, as WeCom keys them.
      {{get, "/cgi-bin/get_jsapi_ticket", access::anyone, "get_jsapi_ticket", "jsapi_ticket"},
       &self::wecom_ticket<jsapi_ticket>},
      {{get, "/cgi-bin/ticket/get", access::anyone, "ticket_get", "agent_ticket"},
       &self::wecom_ticket<agent_ticket>},
      // Checked by the provider secret, the suite secret, and the permanent code.
      {{post, "/cgi-bin/service/get_provider_token", access::anyone, "get_provider_token",
        "provider_token"},
       &self::wecom_provider_token},
      {{post, "/cgi-bin/service/get_suite_token", access::anyone, "get_suite_token", "suite_token"},
       &self::wecom_suite_token},
      {{post, "/cgi-bin/service/get_corp_token", access::anyone, "get_corp_token", "corp_token"},
       &self::wecom_corp_token},
      {{get, "/healthz", access::anyone, "healthz"}, &request_handler::healthz},
      {{get, "/readyz", access::anyone, "readyz"}, &request_handler::readyz},
      {{get, "/metrics", access::anyone, "metrics"}, &request_handler::metrics},
      // The gateway's, last: any method (`unknown`), and only while it is enabled.
      {{unknown, "/v1/apps/{app}/api/{path*}", access::client, "gateway", "api_call"},
       &self::api_call},
      {{unknown, "/cgi-bin/{path*}", access::anyone, "gateway_drop_in", "api_call"},
       &self::wecom_api_call},
  }};
  return table;
}

namespace {

constexpr std::size_t gateway_routes = 2;  // the table's last entries

std::vector<std::string_view> table_labels() {
  std::vector<std::string_view> labels;
  for (const auto& each : request_handler::endpoints()) labels.push_back(each.shape.label);
  return labels;
}

}  // namespace

request_handler::request_handler(broker& apps, std::vector<client_config> clients,
                                 gateway* api_gateway, audit_log* audit)
    : apps_(apps),
      gateway_(api_gateway),
      audit_(audit),
      auth_(std::make_shared<const client_auth>(std::move(clients))),
      metrics_(table_labels()) {}

std::span<const request_handler::endpoint> request_handler::routes() const {
  const auto table = endpoints();
  return gateway_ ? table : table.first(table.size() - gateway_routes);
}

std::uint64_t request_handler::body_limit(const http::request_header<>& head,
                                          std::uint64_t ordinary) const {
  if (!gateway_) return ordinary;
  const auto matched = match_route(routes(), head.method(), head.target());
  const bool forwarded = matched.outcome == route_match::result::matched &&
                         matched.index >= endpoints().size() - gateway_routes;
  return forwarded ? gateway_->max_body_bytes() : ordinary;
}

std::variant<answer, waiting_request> request_handler::answer_or_wait(request& incoming,
                                                                      const peer_identity& peer) {
  const auto started_at = std::chrono::steady_clock::now();
  const auto matched = match_route(routes(), incoming.method(), incoming.target());
  const auto route =
      matched.outcome == route_match::result::matched ? matched.index : metrics_.other();
  const client_config* client = nullptr;
  audit_subject subject;
  auto decided = [&]() -> std::variant<answer, waiting_request> {
    try {
      return decide(matched, incoming, peer, client, subject);
    } catch (const std::exception& error) {
      // Never the target: for /cgi-bin/gettoken it holds the app secret.
      spdlog::error("request failed unexpectedly: {}", error.what());
      return internal_error();
    }
  }();
  auto audit = audit_entry(matched, peer, client, subject);
  if (auto* waiting = std::get_if<waiting_request>(&decided)) {
    waiting->route = route;
    waiting->started_at = started_at;
    if (audit) waiting->audit = std::make_unique<audit_record>(std::move(*audit));
  } else {
    const auto& outgoing = std::get<answer>(decided);
    metrics_.record(route, status_of(outgoing), std::chrono::steady_clock::now() - started_at);
    if (audit) record_audit(std::move(*audit), outgoing);
  }
  return decided;
}

std::optional<audit_record> request_handler::audit_entry(const route_match& matched,
                                                         const peer_identity& peer,
                                                         const client_config* client,
                                                         audit_subject& subject) const {
  if (!audit_ || matched.outcome != route_match::result::matched) return std::nullopt;
  const auto& shape = routes()[matched.index].shape;
  if (shape.audited.empty()) return std::nullopt;
  const auto or_path = [&](std::string& resolved, std::string_view name) {
    return resolved.empty() ? std::string(matched.parameters[name]) : std::move(resolved);
  };
  return audit_record{
      .at = std::chrono::system_clock::now(),
      .client = client ? client->name : std::string(),
      .peer = peer.address,
      .listener = std::string(peer.listener),
      .route = shape.label,
      .app = or_path(subject.app, "app"),
      .suite = or_path(subject.suite, "suite"),
      .corp = or_path(subject.corp, "corpid"),
      .provider = or_path(subject.provider, "provider"),
      .kind = shape.audited,
  };
}

void request_handler::record_audit(audit_record entry, const answer& outgoing) {
  entry.status = status_of(outgoing);
  if (const auto* handed_out = std::get_if<token_answer>(&outgoing);
      handed_out && handed_out->view) {
    entry.fingerprint = handed_out->view->fingerprint;
  } else if (const auto* refusal = std::get_if<response>(&outgoing);
             refusal && refusal->body().starts_with(R"({"errcode":)")) {
    // A drop-in refuses as WeCom does, HTTP 200 with an errcode: the trail says which.
    const auto body = nlohmann::json::parse(refusal->body(), nullptr, /*allow_exceptions=*/false);
    if (body.is_object() && body["errcode"].is_number_integer()) {
      entry.errcode = body["errcode"].get<int>();
    }
  }
  audit_->record(std::move(entry));
}

asio::awaitable<answer> request_handler::answer_after_wait(waiting_request waiting) {
  // Counted before waits_closed_ is read, while close_waits() sets it before the count is
  // read: either this wait sees the stop, or the stop sees this wait.
  const counted wait(waits_in_flight_);
  std::optional<answer> outgoing;
  try {
    if (waits_closed_) {
      outgoing = answer_waited(waiting, token_outcome{});  // stopping: no refresh is coming
    } else {
      auto operation = wait_and_answer(waiting);  // named: g++ 12 mishandles temporaries here
      outgoing = co_await std::move(operation);
    }
  } catch (const std::exception& error) {
    spdlog::error("request failed unexpectedly: {}", error.what());
    outgoing = internal_error();
  }
  metrics_.record(waiting.route, status_of(*outgoing),
                  std::chrono::steady_clock::now() - waiting.started_at);
  if (waiting.audit) record_audit(std::move(*waiting.audit), *outgoing);
  co_return std::move(*outgoing);
}

response request_handler::internal_error() {
  return error_response(http::status::internal_server_error, "internal",
                        "the broker failed to answer; see its log");
}

std::optional<response> request_handler::answer_unreadable(const error_code& error) {
  if (error.category() != http::make_error_code(http::error::bad_target).category()) {
    return std::nullopt;  // the connection failed or timed out: nobody to answer
  }
  if (error == http::error::end_of_stream || error == http::error::partial_message) {
    return std::nullopt;  // the client went away
  }
  auto refusal =
      error == http::error::header_limit
          ? error_response(http::status::request_header_fields_too_large, "bad_request",
                           "request header too large")
      : error == http::error::body_limit
          ? error_response(http::status::payload_too_large, "bad_request", "request body too large")
          : error_response(http::status::bad_request, "bad_request",
                           "malformed HTTP request: " + error.message());
  metrics_.record(metrics_.malformed(), refusal.result_int(), std::chrono::nanoseconds{0});
  return refusal;
}

request_handler::~request_handler() {
  reads_of(nullptr);  // drops this thread's copies (a test may make a new handler here)
}

std::variant<answer, waiting_request> request_handler::decide(const route_match& matched,
                                                              request& incoming,
                                                              const peer_identity& peer,
                                                              const client_config*& client,
                                                              audit_subject& subject) {
  if (matched.outcome == route_match::result::method_not_allowed) {
    auto refusal = error_response(http::status::method_not_allowed, "method_not_allowed",
                                  "use " + matched.allow);
    refusal.set(http::field::allow, matched.allow);
    return refusal;
  }
  if (matched.outcome == route_match::result::not_found) {
    return error_response(http::status::not_found, "not_found", "no such endpoint");
  }
  const auto& entry = endpoints()[matched.index];
  auto& reads = reads_of(this);
  const auto& auth = reads.auth.current(auth_);
  if (entry.shape.who == access::client && !auth->open()) {
    const auto authorization = incoming[http::field::authorization];
    client = auth->identify(peer, authorization);
    if (!client && authorization.empty()) {
      if (auto unknown = auth->unknown_peer(peer)) {
        return error_response(http::status::forbidden, "forbidden", *unknown);
      }
    }
    if (!client) {
      auto refusal = error_response(http::status::unauthorized, "unauthorized",
                                    "an Authorization: Bearer <key> header with a valid key "
                                    "is required");
      refusal.set(http::field::www_authenticate, "Bearer");
      return refusal;
    }
  }
  const app_entry* app = nullptr;
  if (const auto app_id = matched.parameters["app"]; !app_id.empty()) {
    app = reads.current_apps(apps_).entry(app_id);
    if (!app) return error_response(http::status::not_found, "unknown_app", "no such app");
    if (!auth->may_read(client, app_id)) {
      return error_response(http::status::forbidden, "forbidden",
                            "this client may not read app " + std::string(app_id));
    }
  }
  std::shared_ptr<const third_party_set> third_party;  // held while the handler runs
  const suite_entry* suite = nullptr;
  const provider_entry* provider = nullptr;
  const bool checks_client = entry.shape.who == access::client;
  if (const auto suite_id = matched.parameters["suite"]; !suite_id.empty()) {
    third_party = apps_.third_party();
    suite = third_party->suite(suite_id);
    if (!suite) return error_response(http::status::not_found, "unknown_suite", "no such suite");
    if (checks_client && !auth->may_read_suite(client, suite_id)) {
      return error_response(http::status::forbidden, "forbidden",
                            "this client may not read suite " + std::string(suite_id));
    }
  }
  if (const auto provider_id = matched.parameters["provider"]; !provider_id.empty()) {
    third_party = apps_.third_party();
    provider = third_party->provider(provider_id);
    if (!provider) {
      return error_response(http::status::not_found, "unknown_provider", "no such provider");
    }
    if (checks_client && !auth->may_read_provider(client, provider_id)) {
      return error_response(http::status::forbidden, "forbidden",
                            "this client may not read provider " + std::string(provider_id));
    }
  }
  return (this->*entry.handle)(
      call{matched, incoming, *auth, client, subject, app, suite, provider});
}

namespace {

response not_configured(const app_config& app, credential_kind kind) {
  return error_response(http::status::not_found, "not_configured",
                        "app " + app.id + " has no " + std::string(to_string(kind)) +
                            " configured (apps." + app.id + ".tickets)");
}

}  // namespace

template <credential_kind kind>
std::variant<answer, waiting_request> request_handler::app_credential(const call& current) {
  auto* credential = current.app->credential(kind);
  if (!credential) return not_configured(*current.app->app, kind);
  // The hot path: the answer prepared with the value; no lock, no wait, no JSON.
  const auto now = clock::now();
  if (const auto& seen = reads_of(this).current_view(*credential); seen->servable(now)) {
    return our_token_answer(seen, now);
  }
  return waiting_request{.credential = credential->shared_from_this(),
                         .then = waiting_request::our_token};
}

template <credential_kind kind>
std::variant<answer, waiting_request> request_handler::invalidate(const call& current) {
  auto* credential = current.app->credential(kind);
  if (!credential) return not_configured(*current.app->app, kind);
  return invalidation_of(*credential, current.incoming.body());
}

std::variant<answer, waiting_request> request_handler::invalidation_of(
    credential_refresher& credential, std::string_view body) {
  const auto field = value_field(credential.id().kind);
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const auto reported = json.is_object() ? json.find(field) : json.end();
  if (!json.is_object() || reported == json.end() || !reported->is_string()) {
    return error_response(http::status::bad_request, "bad_request",
                          "the body must be {\"" + std::string(field) + "\":\"<the rejected " +
                              std::string(field) + ">\"}");
  }
  return waiting_request{.credential = credential.shared_from_this(),
                         .then = waiting_request::invalidation,
                         .reported = reported->get<std::string>()};
}

std::variant<answer, waiting_request> request_handler::jssdk_signature(const call& current) {
  const auto& entry = *current.app;
  if (!entry.jsapi_ticket && !entry.agent_ticket) {
    return error_response(
        http::status::not_found, "not_configured",
        "app " + entry.app->id + " has no ticket configured (apps." + entry.app->id + ".tickets)");
  }
  auto read = read_signature_request(current.incoming.body(), unix_seconds(wall_clock::now()));
  if (auto* problem = std::get_if<std::string>(&read)) {
    return error_response(http::status::bad_request, "bad_request", *problem);
  }
  auto& asked = std::get<signature_request>(read);
  const auto now = clock::now();
  auto& reads = reads_of(this);
  const auto servable = [&](const credential_refresher* ticket) -> const credential_view* {
    if (!ticket) return nullptr;
    const auto& seen = reads.current_view(*ticket);
    return seen->servable(now) ? seen.get() : nullptr;
  };
  const auto* jsapi = servable(entry.jsapi_ticket.get());
  const auto* agent = servable(entry.agent_ticket.get());
  if ((jsapi || !entry.jsapi_ticket) && (agent || !entry.agent_ticket)) {
    return signature_answer(*entry.app, asked, jsapi, agent);
  }
  return waiting_request{
      .then = waiting_request::signature,
      .signs = std::make_shared<const waiting_request::signing>(waiting_request::signing{
          entry.app, std::move(asked), entry.jsapi_ticket, entry.agent_ticket})};
}

response request_handler::signature_answer(const app_config& app, const signature_request& asked,
                                           const credential_view* jsapi_ticket,
                                           const credential_view* agent_ticket) {
  const auto ticket_of = [](const credential_view* ticket) -> std::optional<std::string_view> {
    if (!ticket) return std::nullopt;
    return ticket->current->value;
  };
  return json_response(http::status::ok, token_broker::signature_answer(
                                             app.id, app.corpid, app.agentid, asked,
                                             ticket_of(jsapi_ticket), ticket_of(agent_ticket)));
}

// Each configured ticket waited for in turn: the second wait is short or none, as both
// refresh from one token.
asio::awaitable<answer> request_handler::wait_and_sign(const waiting_request::signing& signs) {
  const std::array<std::shared_ptr<credential_refresher>, 2> tickets{signs.jsapi_ticket,
                                                                     signs.agent_ticket};
  std::array<std::shared_ptr<const credential_view>, 2> seen;
  for (std::size_t i = 0; i < tickets.size(); ++i) {
    if (!tickets[i]) continue;
    auto waiting = tickets[i]->wait_for_token();  // named: g++ 12 mishandles temporaries here
    auto outcome = co_await std::move(waiting);
    if (!outcome.view) co_return unavailable_response(tickets[i]->id(), outcome);
    seen[i] = std::move(outcome.view);
  }
  co_return signature_answer(*signs.app, signs.request, seen[0].get(), seen[1].get());
}

std::variant<answer, waiting_request> request_handler::wecom_gettoken(const call& current) {
  const auto query = query_parameters::parse(current.matched.query);
  if (!query) {
    return error_response(http::status::bad_request, "bad_request",
                          "malformed percent-encoding in the query");
  }
  // WeCom's own answers for missing or wrong credentials, so SDKs behave as they would there.
  const auto* corpid = query->find("corpid");
  const auto* corpsecret = query->find("corpsecret");
  if (!corpid || corpid->empty()) return wecom_error_response(41002, "corpid missing");
  if (!corpsecret || corpsecret->empty()) return wecom_error_response(41004, "corpsecret missing");
  auto& reads = reads_of(this);
  const auto match = reads.current_apps(apps_).match_credentials(*corpid, *corpsecret);
  switch (match.outcome) {
    case credential_match::result::unknown_corpid:
      return wecom_error_response(40013, "invalid corpid");
    case credential_match::result::wrong_secret:
      return wecom_error_response(40001, "invalid secret");
    case credential_match::result::matched:
      break;
  }
  current.subject.app = match.app->id().scope;
  const auto now = clock::now();
  if (const auto& seen = reads.current_view(*match.app); seen->servable(now)) {
    return wecom_token_answer(seen, now);
  }
  return waiting_request{.credential = match.app->shared_from_this(),
                         .then = waiting_request::wecom_token};
}

// A drop-in keyed by a token this broker handed out (current, or replaced less than 5 minutes
// ago), as WeCom keys its calls: the query and the app of that token, or the refusal in
// WeCom's shape (HTTP 200 with an errcode), so that SDKs behave as they would there.
std::variant<request_handler::keyed_call, response> request_handler::keyed_by_token(
    const call& current) {
  auto query = query_parameters::parse(current.matched.query);
  if (!query) {
    return error_response(http::status::bad_request, "bad_request",
                          "malformed percent-encoding in the query");
  }
  const auto* access_token = query->find("access_token");
  if (!access_token || access_token->empty()) {
    return wecom_error_response(41001, "access_token missing");
  }
  const auto app_id = apps_.handed_out().app_of(*access_token, clock::now());
  const auto* entry = app_id ? reads_of(this).current_apps(apps_).entry(*app_id) : nullptr;
  if (!entry) return wecom_error_response(40014, "invalid access_token");
  current.subject.app = entry->app->id;
  return keyed_call{std::move(*query), entry};
}

template <credential_kind kind>
std::variant<answer, waiting_request> request_handler::wecom_ticket(const call& current) {
  auto keyed = keyed_by_token(current);
  if (auto* refusal = std::get_if<response>(&keyed)) return std::move(*refusal);
  const auto& [query, entry] = std::get<keyed_call>(keyed);
  if (kind == credential_kind::agent_ticket) {
    const auto* type = query.find("type");
    if (!type || *type != "agent_config") {
      return wecom_error_response(40097, "invalid args: type must be agent_config");
    }
  }
  auto* ticket = entry->credential(kind);
  if (!ticket) return wecom_error_response(48002, "api forbidden: ticket not configured");
  const auto now = clock::now();
  if (const auto& seen = reads_of(this).current_view(*ticket); seen->servable(now)) {
    return wecom_token_answer(seen, now);
  }
  return waiting_request{.credential = ticket->shared_from_this(),
                         .then = waiting_request::wecom_token};
}

// SPEC §8: /v1/apps/{app}/api/{path}, for an authenticated client allowed the app.
std::variant<answer, waiting_request> request_handler::api_call(const call& current) {
  return forward(current, *current.app, std::string(current.matched.parameters["path"]),
                 /*drop_in=*/false);
}

// SPEC §8: any other /cgi-bin/… call, keyed by a token this broker handed out, as WeCom keys
// them: an SDK pointed at the broker works unchanged.
std::variant<answer, waiting_request> request_handler::wecom_api_call(const call& current) {
  auto keyed = keyed_by_token(current);
  if (auto* refusal = std::get_if<response>(&keyed)) return std::move(*refusal);
  return forward(current, *std::get<keyed_call>(keyed).app,
                 "cgi-bin/" + std::string(current.matched.parameters["path"]), /*drop_in=*/true);
}

std::variant<answer, waiting_request> request_handler::forward(const call& current,
                                                               const app_entry& app,
                                                               std::string api, bool drop_in) {
  if (!is_api_path(api)) {
    return error_response(http::status::bad_request, "bad_request",
                          "not a WeCom API path: segments of [A-Za-z0-9_.-], 256 bytes at most");
  }
  if (is_credential_path(api)) {
    return drop_in ? wecom_error_response(48002, "api forbidden: the broker hands out credentials")
                   : error_response(http::status::forbidden, "forbidden",
                                    "credentials come from the broker's own endpoints, not "
                                    "through the gateway");
  }
  auto& incoming = current.incoming;
  return waiting_request{.then = waiting_request::forward,
                         .forwards = std::make_shared<gateway::call>(gateway::call{
                             .token = app.token,
                             .app = app.app->id,
                             .corpid = app.app->corpid,
                             .method = incoming.method(),
                             .api = std::move(api),
                             .query = std::string(current.matched.query),
                             .content_type = std::string(incoming[http::field::content_type]),
                             .body = std::move(incoming.body()),
                             .drop_in = drop_in})};
}

// SPEC §4: 503 while a long-lived task is down, naming it.
std::variant<answer, waiting_request> request_handler::healthz(const call&) {
  const auto down = apps_.tasks().down();
  if (down.empty()) return json_response(http::status::ok, R"({"status":"ok"})");
  return json_response(http::status::service_unavailable,
                       nlohmann::ordered_json{{"status", "down"}, {"down", down}}.dump());
}

std::variant<answer, waiting_request> request_handler::metrics(const call&) {
  auto text = render_metrics(metrics_, *apps_.apps(), *apps_.third_party(), apps_.store_up());
  if (gateway_) gateway_->render_metrics(text);
  apps_.tasks().render_metrics(text);
  auto page = json_response(http::status::ok, std::move(text));
  page.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  return page;
}

asio::awaitable<answer> request_handler::wait_and_answer(const waiting_request& waiting) {
  if (waiting.then == waiting_request::forward)
    return gateway_->forward(std::move(*waiting.forwards));
  if (waiting.then == waiting_request::signature) return wait_and_sign(*waiting.signs);
  if (waiting.then == waiting_request::push || waiting.then == waiting_request::callback_push) {
    return keep_pushed(waiting);
  }
  return wait_for_credential(waiting);
}

asio::awaitable<answer> request_handler::wait_for_credential(const waiting_request& waiting) {
  auto& credential = *waiting.credential;
  auto operation = waiting.then == waiting_request::invalidation
                       ? credential.invalidate(waiting.reported)
                       : credential.wait_for_token();
  auto outcome = co_await std::move(operation);
  co_return answer_waited(waiting, std::move(outcome));
}

answer request_handler::answer_waited(const waiting_request& waiting, token_outcome outcome) {
  if (waiting.then == waiting_request::forward || waiting.then == waiting_request::push ||
      waiting.then == waiting_request::callback_push) {
    return error_response(http::status::service_unavailable, "unavailable",
                          "the broker is stopping");
  }
  if (waiting.then == waiting_request::signature) {
    return unavailable_response(waiting.signs->jsapi_ticket ? waiting.signs->jsapi_ticket->id()
                                                            : waiting.signs->agent_ticket->id(),
                                outcome);
  }
  const auto& credential = *waiting.credential;
  if (waiting.then == waiting_request::wecom_token) {
    if (outcome.view) return wecom_token_answer(std::move(outcome.view), clock::now());
    const auto failure = failure_or_busy(outcome);
    return wecom_error_response(failure.errcode, failure.errmsg);
  }
  if (outcome.view) return our_token_answer(std::move(outcome.view), clock::now());
  return unavailable_response(credential.id(), outcome);
}

void request_handler::close_waits() {
  waits_closed_ = true;
}

std::variant<answer, waiting_request> request_handler::list_apps(const call& asking) {
  const auto now = clock::now();
  auto listing = nlohmann::ordered_json::array();
  const auto apps = apps_.apps();  // held: a reload may replace the set meanwhile
  for (const auto& app : apps->in_order()) {
    if (!asking.auth.may_read(asking.client, app.app->id)) continue;
    nlohmann::ordered_json listed{{"app", app.app->id}, {"corpid", app.app->corpid}};
    describe(listed, *app.token, now);
    // v2: each configured ticket, by kind.
    if (app.jsapi_ticket || app.agent_ticket) {
      auto& tickets = listed["tickets"] = nlohmann::ordered_json::object();
      for (const auto* ticket : {app.jsapi_ticket.get(), app.agent_ticket.get()}) {
        if (ticket) describe(tickets[std::string(to_string(ticket->id().kind))], *ticket, now);
      }
    }
    listing.push_back(std::move(listed));
  }
  return json_response(http::status::ok, listing.dump());
}

// "hr" for an app's token, "hr/jsapi_ticket" for a ticket, "crm-suite/wwcorpA…" for a corp's.
std::variant<answer, waiting_request> request_handler::readyz(const call&) {
  const auto now = clock::now();
  auto failing = nlohmann::ordered_json::array();
  const auto apps = apps_.apps();  // held: a reload may replace the set meanwhile
  for (const auto& app : apps->in_order()) {
    for (const auto* credential : app.credentials()) {
      if (credential->view()->servable(now)) continue;
      const auto kind = credential->id().kind;
      failing.push_back(kind == credential_kind::access_token
                            ? app.app->id
                            : app.app->id + "/" + std::string(to_string(kind)));
    }
  }
  // A suite_ticket is not among them: an old one harms nobody while the suite token is valid.
  const auto third_party = apps_.third_party();  // held: the loop reads into it
  for (const auto* credential : third_party->credentials()) {
    if (!credential->view()->servable(now)) failing.push_back(credential_label(credential->id()));
  }
  if (failing.empty()) return json_response(http::status::ok, R"({"status":"ready"})");
  return json_response(http::status::service_unavailable,
                       nlohmann::ordered_json{{"status", "unready"}, {"failing", failing}}.dump());
}

}  // namespace token_broker
