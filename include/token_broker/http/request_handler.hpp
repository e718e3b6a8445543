// Turns one HTTP request into its answer: the route table (every endpoint of SPEC §4 in one
// line), the one authentication point, the handlers, and the request metrics.
#pragma once

#include <atomic>
#include <memory>
#include <span>

#include "token_broker/broker.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/core/published.hpp"
#include "token_broker/gateway/gateway.hpp"
#include "token_broker/http/client_auth.hpp"
#include "token_broker/http/jssdk_signature.hpp"
#include "token_broker/http/peer_identity.hpp"
#include "token_broker/http/responses.hpp"
#include "token_broker/http/routes.hpp"
#include "token_broker/ops/audit_log.hpp"
#include "token_broker/ops/metrics.hpp"

namespace token_broker {

using request = http::request<http::string_body>;

// A request that must wait for a credential (one there is no value of yet, or an
// invalidation), and which answer follows the wait.
struct waiting_request {
  // Kept: a reload may drop it from the set meanwhile.
  std::shared_ptr<credential_refresher> credential;
  enum {
    our_token,
    wecom_token,
    invalidation,
    signature,
    forward,
    push,           // a suite_ticket PUT by a client: kept, then a JSON answer
    callback_push,  // a suite_ticket of WeCom's callback: kept, then "success"
  } then = our_token;
  // invalidation: the value the caller saw rejected; push, callback_push: the pushed value
  std::string reported;
  // signature: what to sign, for which app, and its tickets (each waited for)
  struct signing {
    std::shared_ptr<const app_config> app;
    signature_request request;
    std::shared_ptr<credential_refresher> jsapi_ticket, agent_ticket;
  };
  std::shared_ptr<const signing> signs;
  std::shared_ptr<gateway::call> forwards;  // forward: the call to make through the gateway
  std::size_t route = 0;                    // its route table entry, for the metrics
  std::chrono::steady_clock::time_point started_at;
  std::unique_ptr<audit_record> audit;  // its audit line but for the outcome; null: none
};

// What a request's audit line names besides its path's ids: the credential a drop-in
// resolved to (the app of a gettoken's secret, the suite of a suite_access_token).
struct audit_subject {
  std::string app, suite, corp, provider;
};

class request_handler {
 public:
  // What a handler is given: the matched route, the request, and who is calling.
  struct call {
    const route_match& matched;
    request& incoming;  // a gateway call takes its body
    const client_auth& auth;
    const client_config* client;  // the authenticated client; nullptr on an open API
    audit_subject& subject;       // a drop-in names what it resolved to here
    const app_entry* app;         // the path's {app}, checked against the config and the client
    // The path's {suite} or {provider}, checked the same way (the callback's suite against the
    // config alone); the set they belong to is held while the handler runs.
    const suite_entry* suite;
    const provider_entry* provider;
  };
  using handler = std::variant<answer, waiting_request> (request_handler::*)(const call&);
  struct endpoint {
    route shape;
    handler handle;
  };
  // The route table, in matching order.
  static std::span<const endpoint> endpoints();

  // `api_gateway`: null when the gateway is not enabled; `audit`: null without an audit_log.
  request_handler(broker& apps, std::vector<client_config> clients, gateway* api_gateway = nullptr,
                  audit_log* audit = nullptr);
  ~request_handler();

  // Runs on the HTTP workers, each of which reads the clients, the app set and the tokens
  // through a copy of its own. Neither call throws: a failure inside becomes a 500 answer.
  //
  // The answer, at once and counted, for every request that needs no wait; for one that
  // does, what it waits for: then co_await answer_after_wait. Most requests never enter a
  // coroutine of the handler, so they allocate no coroutine frame.
  // `peer`: who the connection is from, by which a client may be identified too.
  std::variant<answer, waiting_request> answer_or_wait(request& incoming,
                                                       const peer_identity& peer);
  // The largest body the route of `head` takes: the gateway's for its routes, else `ordinary`.
  std::uint64_t body_limit(const http::request_header<>& head, std::uint64_t ordinary) const;
  asio::awaitable<answer> answer_after_wait(waiting_request waiting);
  // The answer to a request that could not be parsed (too large, malformed), or nothing when
  // there is nobody left to answer (the client went away, the read timed out).
  std::optional<response> answer_unreadable(const error_code& error);

  // Stopping (SIGTERM): every request that needs a wait from now on is answered at once as
  // one that found no token, without leaving its worker. With the refreshers stopped (they
  // answer the waits they have), the count of waits then only falls to 0.
  void close_waits();
  // Requests between the start of their wait and its end back on their worker: until this is
  // 0, the control loop may still hand a completion to a worker.
  std::size_t waits_in_flight() const { return waits_in_flight_; }

  // A reload's clients, for every request from now on.
  void set_clients(std::vector<client_config> clients) {
    auth_.store(std::make_shared<const client_auth>(std::move(clients)));
  }

 private:
  // The table without the gateway's routes while it is off.
  std::span<const endpoint> routes() const;
  // `client`: who the request was identified as, for the audit trail.
  std::variant<answer, waiting_request> decide(const route_match& matched, request& incoming,
                                               const peer_identity& peer,
                                               const client_config*& client,
                                               audit_subject& subject);
  // The audit line of an audited route's request, but for its outcome.
  std::optional<audit_record> audit_entry(const route_match& matched, const peer_identity& peer,
                                          const client_config* client,
                                          audit_subject& subject) const;
  void record_audit(audit_record entry, const answer& outgoing);
  // What `waiting` waits for, then its answer. Not a coroutine itself: a gateway call goes
  // straight to the gateway's, one coroutine frame fewer on every call.
  asio::awaitable<answer> wait_and_answer(const waiting_request& waiting);
  asio::awaitable<answer> wait_for_credential(const waiting_request& waiting);
  static asio::awaitable<answer> keep_pushed(const waiting_request& waiting);
  static answer answer_waited(const waiting_request& waiting, token_outcome outcome);
  asio::awaitable<answer> wait_and_sign(const waiting_request::signing& signs);
  // 200 with a signature per ticket given (null: not configured).
  static response signature_answer(const app_config& app, const signature_request& asked,
                                   const credential_view* jsapi_ticket,
                                   const credential_view* agent_ticket);
  static response internal_error();

  // The handlers, one per endpoint; those of a credential kind serve tokens and tickets alike.
  template <credential_kind kind>
  std::variant<answer, waiting_request> app_credential(const call& current);
  template <credential_kind kind>
  std::variant<answer, waiting_request> invalidate(const call& current);
  std::variant<answer, waiting_request> jssdk_signature(const call& current);
  // The third-party side (src/http/third_party_routes.cpp).
  template <credential_kind kind>
  std::variant<answer, waiting_request> third_party_credential(const call& current);
  template <credential_kind kind>
  std::variant<answer, waiting_request> third_party_invalidate(const call& current);
  // The path's provider token, suite token or corp token; an answer when there is none.
  template <credential_kind kind>
  std::variant<credential_refresher*, answer> third_party_refresher(const call& current);
  std::variant<answer, waiting_request> list_corps(const call& current);
  std::variant<answer, waiting_request> put_suite_ticket(const call& current);
  std::variant<answer, waiting_request> callback_verification(const call& current);
  std::variant<answer, waiting_request> callback_event(const call& current);
  std::variant<answer, waiting_request> wecom_provider_token(const call& current);
  std::variant<answer, waiting_request> wecom_suite_token(const call& current);
  std::variant<answer, waiting_request> wecom_corp_token(const call& current);
  // A compare-and-refresh of `credential` asked for with `body` ({"<value_field>":"…"}).
  static std::variant<answer, waiting_request> invalidation_of(credential_refresher& credential,
                                                               std::string_view body);
  // The answer a waiting request gets once `credential` has a value, or failed to get one.
  static std::variant<answer, waiting_request> serve_or_wait(credential_refresher& credential,
                                                             decltype(waiting_request::then) then);
  std::variant<answer, waiting_request> list_apps(const call& current);
  std::variant<answer, waiting_request> wecom_gettoken(const call& current);
  struct keyed_call {
    query_parameters query;
    const app_entry* app;
  };
  std::variant<keyed_call, response> keyed_by_token(const call& current);
  template <credential_kind kind>
  std::variant<answer, waiting_request> wecom_ticket(const call& current);
  std::variant<answer, waiting_request> healthz(const call& current);
  std::variant<answer, waiting_request> readyz(const call& current);
  std::variant<answer, waiting_request> metrics(const call& current);
  std::variant<answer, waiting_request> api_call(const call& current);
  std::variant<answer, waiting_request> wecom_api_call(const call& current);
  std::variant<answer, waiting_request> forward(const call& current, const app_entry& app,
                                                std::string api, bool drop_in);

  broker& apps_;
  gateway* gateway_;
  audit_log* audit_;
  published<client_auth> auth_;
  request_metrics metrics_;
  std::atomic<bool> waits_closed_{false};
  std::atomic<std::size_t> waits_in_flight_{0};
};

}  // namespace token_broker
