#include "token_broker/request_handler.hpp"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <unordered_map>

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
  std::unordered_map<const app_refresher*, published<app_view>::reader> views;

  const app_set& current_apps(const broker& source) {
    const auto& set = apps.current(source.published_apps());
    if (set.get() != views_of) {
      views.clear();  // their apps may be gone with the old set
      views_of = set.get();
    }
    return *set;
  }
  const std::shared_ptr<const app_view>& current_view(const app_refresher& app) {
    return views[&app].current(app.published_view());
  }
};

thread_local worker_reads this_worker;

worker_reads& reads_of(const request_handler* handler) {
  if (this_worker.handler != handler) this_worker = worker_reads{.handler = handler};
  return this_worker;
}

// Counts something for exactly as long as it lives.
class counted {
 public:
  explicit counted(std::atomic<std::size_t>& count) : count_(count) { ++count_; }
  ~counted() { --count_; }
  counted(const counted&) = delete;
  counted& operator=(const counted&) = delete;

 private:
  std::atomic<std::size_t>& count_;
};

// WeCom answers a gettoken it cannot serve with -1 "system busy"; so do we when upstream
// gave no reason of its own.
fetch_failure failure_or_busy(const token_outcome& outcome) {
  return outcome.failure.value_or(fetch_failure{failure_class::transient, -1, "system busy"});
}

route_label label_of(route::kind call) {
  switch (call) {
    case route::kind::app_token:
      return route_label::token;
    case route::kind::invalidate_token:
      return route_label::invalidate;
    case route::kind::list_apps:
      return route_label::apps;
    case route::kind::wecom_gettoken:
      return route_label::gettoken;
    case route::kind::healthz:
      return route_label::healthz;
    case route::kind::readyz:
      return route_label::readyz;
    case route::kind::metrics:
      return route_label::metrics;
    case route::kind::not_found:
    case route::kind::method_not_allowed:
    case route::kind::bad_request:
      break;
  }
  return route_label::other;
}

}  // namespace

std::variant<answer, waiting_request> request_handler::answer_or_wait(const request& incoming) {
  const auto started_at = std::chrono::steady_clock::now();
  const auto call = match_route(incoming.method(), incoming.target());
  auto decided = [&]() -> std::variant<answer, waiting_request> {
    try {
      return decide(call, incoming);
    } catch (const std::exception& error) {
      // Never the target: for /cgi-bin/gettoken it holds the app secret.
      spdlog::error("request failed unexpectedly: {}", error.what());
      return internal_error();
    }
  }();
  if (auto* waiting = std::get_if<waiting_request>(&decided)) {
    waiting->label = label_of(call.call);
    waiting->started_at = started_at;
  } else {
    metrics_.record(label_of(call.call), status_of(std::get<answer>(decided)),
                    std::chrono::steady_clock::now() - started_at);
  }
  return decided;
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
  metrics_.record(waiting.label, status_of(*outgoing),
                  std::chrono::steady_clock::now() - waiting.started_at);
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
  metrics_.record(route_label::malformed, refusal.result_int(), std::chrono::nanoseconds{0});
  return refusal;
}

request_handler::~request_handler() {
  reads_of(nullptr);  // drops this thread's copies (a test may make a new handler here)
}

std::variant<answer, waiting_request> request_handler::decide(const route& call,
                                                              const request& incoming) {
  using kind = route::kind;
  auto& reads = reads_of(this);
  const auto& auth = reads.auth.current(auth_);
  const client_config* client = nullptr;
  if (call.needs_client_key() && !auth->open()) {
    client = auth->identify(incoming[http::field::authorization]);
    if (!client) {
      auto refusal = error_response(http::status::unauthorized, "unauthorized",
                                    "an Authorization: Bearer <key> header with a valid key "
                                    "is required");
      refusal.set(http::field::www_authenticate, "Bearer");
      return refusal;
    }
  }

  switch (call.call) {
    case kind::app_token:
    case kind::invalidate_token: {
      auto* app = reads.current_apps(apps_).find(call.app);
      if (!app) return error_response(http::status::not_found, "unknown_app", "no such app");
      if (!auth->may_read(client, call.app)) {
        return error_response(http::status::forbidden, "forbidden",
                              "this client may not read app " + call.app);
      }
      if (call.call == kind::invalidate_token) return invalidation(*app, incoming.body());
      // The hot path: the answer prepared with the token; no lock, no wait, no JSON.
      const auto now = clock::now();
      if (const auto& seen = reads.current_view(*app); seen->servable(now)) {
        return our_token_answer(seen, now);
      }
      return waiting_request{.app = app->shared_from_this(), .then = waiting_request::our_token};
    }
    case kind::list_apps:
      return list_apps(*auth, client);
    case kind::wecom_gettoken:
      return wecom_gettoken(call);
    case kind::healthz:
      return health();
    case kind::readyz:
      return readiness();
    case kind::metrics: {
      auto text = render_metrics(metrics_, *apps_.apps(), apps_.store_up());
      apps_.tasks().render_metrics(text);
      auto page = json_response(http::status::ok, std::move(text));
      page.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      return page;
    }
    case kind::method_not_allowed: {
      auto refusal = error_response(http::status::method_not_allowed, "method_not_allowed",
                                    "use " + std::string(call.allow));
      refusal.set(http::field::allow, call.allow);
      return refusal;
    }
    case kind::bad_request:
      return error_response(http::status::bad_request, "bad_request",
                            "malformed percent-encoding in the query");
    case kind::not_found:
      break;
  }
  return error_response(http::status::not_found, "not_found", "no such endpoint");
}

std::variant<answer, waiting_request> request_handler::invalidation(app_refresher& app,
                                                                    std::string_view body) {
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const auto reported = json.is_object() ? json.find("access_token") : json.end();
  if (!json.is_object() || reported == json.end() || !reported->is_string()) {
    return error_response(http::status::bad_request, "bad_request",
                          R"(the body must be {"access_token":"<the rejected token>"})");
  }
  return waiting_request{.app = app.shared_from_this(),
                         .then = waiting_request::invalidation,
                         .reported = reported->get<std::string>()};
}

std::variant<answer, waiting_request> request_handler::wecom_gettoken(const route& call) {
  // WeCom's own answers for missing or wrong credentials, so SDKs behave as they would there.
  if (!call.corpid || call.corpid->empty()) return wecom_error_response(41002, "corpid missing");
  if (!call.corpsecret || call.corpsecret->empty()) {
    return wecom_error_response(41004, "corpsecret missing");
  }
  auto& reads = reads_of(this);
  const auto match = reads.current_apps(apps_).match_credentials(*call.corpid, *call.corpsecret);
  switch (match.outcome) {
    case credential_match::result::unknown_corpid:
      return wecom_error_response(40013, "invalid corpid");
    case credential_match::result::wrong_secret:
      return wecom_error_response(40001, "invalid secret");
    case credential_match::result::matched:
      break;
  }
  const auto now = clock::now();
  if (const auto& seen = reads.current_view(*match.app); seen->servable(now)) {
    return wecom_token_answer(seen, now);
  }
  return waiting_request{.app = match.app->shared_from_this(),
                         .then = waiting_request::wecom_token};
}

asio::awaitable<answer> request_handler::wait_and_answer(const waiting_request& waiting) {
  auto& app = *waiting.app;
  auto operation = waiting.then == waiting_request::invalidation ? app.invalidate(waiting.reported)
                                                                 : app.wait_for_token();
  auto outcome = co_await std::move(operation);
  co_return answer_waited(waiting, std::move(outcome));
}

answer request_handler::answer_waited(const waiting_request& waiting, token_outcome outcome) {
  const auto& app = *waiting.app;
  if (waiting.then == waiting_request::wecom_token) {
    if (outcome.view) return wecom_token_answer(std::move(outcome.view), clock::now());
    const auto failure = failure_or_busy(outcome);
    return wecom_error_response(failure.errcode, failure.errmsg);
  }
  if (outcome.view) return our_token_answer(std::move(outcome.view), clock::now());
  return unavailable_response(app.app().id, outcome);
}

void request_handler::close_waits() {
  waits_closed_ = true;
}

response request_handler::list_apps(const client_auth& auth, const client_config* client) const {
  const auto now = clock::now();
  auto listing = nlohmann::ordered_json::array();
  const auto apps = apps_.apps();  // held: a reload may replace the set meanwhile
  for (const auto& app : apps->in_order()) {
    if (!auth.may_read(client, app->app().id)) continue;
    const auto view = app->view();
    const token* current = view->servable(now);
    listing.push_back({
        {"app", app->app().id},
        {"corpid", app->app().corpid},
        {"state", to_string(view->state_at(now))},
        {"expires_at", current ? nlohmann::ordered_json(unix_seconds(current->expires_at_wall))
                               : nlohmann::ordered_json(nullptr)},
    });
  }
  return json_response(http::status::ok, listing.dump());
}

// SPEC §4: 503 while a long-lived task is down, naming it.
response request_handler::health() const {
  const auto down = apps_.tasks().down();
  if (down.empty()) return json_response(http::status::ok, R"({"status":"ok"})");
  return json_response(http::status::service_unavailable,
                       nlohmann::ordered_json{{"status", "down"}, {"down", down}}.dump());
}

response request_handler::readiness() const {
  const auto now = clock::now();
  auto failing = nlohmann::ordered_json::array();
  const auto apps = apps_.apps();  // held: a reload may replace the set meanwhile
  for (const auto& app : apps->in_order()) {
    if (!app->view()->servable(now)) failing.push_back(app->app().id);
  }
  if (failing.empty()) return json_response(http::status::ok, R"({"status":"ready"})");
  return json_response(http::status::service_unavailable,
                       nlohmann::ordered_json{{"status", "unready"}, {"failing", failing}}.dump());
}

}  // namespace token_broker
