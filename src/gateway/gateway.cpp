#include "token_broker/gateway/gateway.hpp"

#include <spdlog/spdlog.h>

#include "token_broker/gateway/api_exchange.hpp"
#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker {
namespace {

using std::chrono::steady_clock;

// What upstream says of a token it will not take: the caller's call is repeated once, with
// the token that replaces it.
bool rejects_token(int errcode) {
  return errcode == 40001 || errcode == 40014 || errcode == 42001;
}

// Upstream's own limits: passed on, and counted apart so that operators see them.
bool upstream_limited(int errcode) {
  return errcode == 45009 || errcode == 45033;
}

// The rest of an answer after the bytes already read, read as the caller takes it. Holds the
// connection and the budget's grant until the last byte is through.
class relayed_body final : public body_source {
 public:
  relayed_body(std::unique_ptr<api_exchange> exchange, budget_grant grant)
      : exchange_(std::move(exchange)), grant_(std::move(grant)) {}

  asio::awaitable<std::optional<std::string_view>> next() override {
    if (!prefix_sent_) {
      prefix_sent_ = true;
      if (!exchange_->prefix().empty()) co_return std::string_view(exchange_->prefix());
    }
    auto reading = exchange_->next_piece();  // named: g++ 12 mishandles temporaries here
    auto piece = co_await std::move(reading);
    if (piece && piece->empty()) {
      exchange_->finish();
      grant_ = budget_grant{};
    }
    co_return piece;
  }

 private:
  std::unique_ptr<api_exchange> exchange_;
  budget_grant grant_;
  bool prefix_sent_ = false;
};

// Upstream's answer for the caller: its status (as given, one Beast does not name included)
// and the fields that describe the body; no cache may keep it (it may carry personal data).
answer pass_on(std::unique_ptr<api_exchange> exchange, budget_grant grant) {
  if (exchange->complete()) {
    auto whole = format_response(exchange->status(),
                                 {{"Content-Type", exchange->content_type()},
                                  {"Content-Disposition", exchange->content_disposition()},
                                  {"Cache-Control", "no-store"}},
                                 exchange->take_prefix());
    exchange->finish();
    return whole;
  }
  response head;
  head.result(exchange->status());
  if (!exchange->content_type().empty()) {
    head.set(http::field::content_type, exchange->content_type());
  }
  if (!exchange->content_disposition().empty()) {
    head.set(http::field::content_disposition, exchange->content_disposition());
  }
  head.set(http::field::cache_control, "no-store");
  if (const auto length = exchange->content_length()) head.content_length(*length);
  return relayed_answer{std::move(head),
                        std::make_unique<relayed_body>(std::move(exchange), std::move(grant))};
}

response over_budget(const budget_refusal& refusal) {
  auto reply = json_response(
      http::status::ok,
      R"json({"errcode":45009,"errmsg":"api freq out of limit (token-broker budget)"})json");
  reply.set(http::field::retry_after, std::to_string(refusal.retry_after.count()));
  return reply;
}

response upstream_failed(const exchange_failure& failure) {
  return failure.timed_out
             ? error_response(http::status::gateway_timeout, "gateway_timeout", failure.reason)
             : error_response(http::status::bad_gateway, "bad_gateway", failure.reason);
}

// No token to call with: the token route's answer, or WeCom's shape for an SDK.
response no_token(const gateway::call& asked, const token_outcome& outcome) {
  if (!asked.drop_in) return unavailable_response(asked.token->id(), outcome);
  const auto failure =
      outcome.failure.value_or(fetch_failure{failure_class::transient, -1, "system busy"});
  return wecom_error_response(failure.errcode, failure.errmsg);
}

}  // namespace

gateway::gateway(const upstream_config& upstream, const gateway_config& settings,
                 std::unique_ptr<api_budget> budget)
    : settings_(settings),
      pool_(upstream),
      connections_(settings.max_connections),
      budget_(std::move(budget)) {}

void gateway::render_metrics(std::string& out) const {
  metrics_.render(out);
  out +=
      "# HELP token_broker_gateway_upstream_handshakes_total TLS handshakes with upstream by "
      "the gateway's connection pool.\n"
      "# TYPE token_broker_gateway_upstream_handshakes_total counter\n"
      "token_broker_gateway_upstream_handshakes_total ";
  out += std::to_string(pool_.tls_handshakes());
  out += '\n';
}

answer gateway::counted(const call& asked, const std::string& label, std::string_view outcome,
                        steady_clock::time_point started, answer result) {
  metrics_.record(asked.app, label, outcome, steady_clock::now() - started);
  spdlog::debug("gateway app={} api={} outcome={} status={}", asked.app, label, outcome,
                status_of(result));
  return result;
}

// One coroutine for the whole call, each outcome counted where it is decided: a coroutine
// frame per call fewer than a wrapper that counts would cost.
asio::awaitable<answer> gateway::forward(call asked) {
  const auto started = steady_clock::now();
  const auto& label = labels_.of(asked.api);
  token_outcome held{.view = asked.token->view()};
  if (!held.view->servable(clock::now())) {
    auto waiting = asked.token->wait_for_token();  // named: g++ 12 and temporaries
    held = co_await std::move(waiting);
  }
  for (bool retried = false;; retried = true) {
    if (!held.view) {
      co_return counted(asked, label, "no_token", started, no_token(asked, held));
    }
    const std::string used = held.view->current->value;

    auto decision = budget_->decide_now(asked.corpid, asked.api);
    if (!decision) {
      auto acquiring = budget_->try_acquire(asked.corpid, asked.api);  // named: g++ 12
      decision = co_await std::move(acquiring);
    }
    if (const auto* refusal = std::get_if<budget_refusal>(&*decision)) {
      metrics_.record_rejection(asked.app, label);
      co_return counted(asked, label, "budget", started, over_budget(*refusal));
    }
    auto grant = std::get<budget_grant>(std::move(*decision));

    const auto deadline = steady_clock::now() + settings_.timeout;
    auto permit = connections_.try_acquire();
    if (!permit) {
      auto waiting_for_connection = connections_.acquire();  // named: g++ 12 and temporaries
      permit = co_await std::move(waiting_for_connection);
    }
    const api_request request{.method = asked.method,
                              .path = asked.api,
                              .query = asked.query,
                              .token = used,
                              .content_type = asked.content_type,
                              .body = asked.body};
    auto starting =
        api_exchange::start(pool_, std::move(*permit), request, deadline, settings_.timeout);
    auto opened = co_await std::move(starting);
    if (auto* failure = std::get_if<exchange_failure>(&opened)) {
      spdlog::warn("gateway app={} api={}: {}", asked.app, label, failure->reason);
      co_return counted(asked, label, failure->timed_out ? "timeout" : "bad_gateway", started,
                        upstream_failed(*failure));
    }
    auto exchange = std::get<std::unique_ptr<api_exchange>>(std::move(opened));

    const auto errcode =
        exchange->complete() ? wecom_errcode(exchange->prefix()) : std::optional<int>{};
    if (errcode && rejects_token(*errcode) && !retried) {
      exchange->finish();
      spdlog::info(
          "gateway app={} api={}: upstream rejected the token (errcode {}); reporting "
          "it and calling once more",
          asked.app, label, *errcode);
      auto reporting = asked.token->invalidate(used);  // named: g++ 12 and temporaries
      held = co_await std::move(reporting);
      continue;
    }
    const std::string_view outcome = !errcode || *errcode == 0    ? "ok"
                                     : upstream_limited(*errcode) ? "upstream_limited"
                                                                  : "upstream_error";
    co_return counted(asked, label, outcome, started,
                      pass_on(std::move(exchange), std::move(grant)));
  }
}

}  // namespace token_broker
