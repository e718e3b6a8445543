// What the JS-SDK ticket tests of the real binary share (issue 14): configs with tickets, the
// signature rule computed apart from the broker's code, finding which of the fake's tickets made
// a signature, and the rule that no ticket or token ever reaches a broker's output.
#pragma once

#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "broker_fixture.hpp"
#include "token_broker/core/secret_digest.hpp"

namespace token_broker::testing {

inline constexpr std::int64_t hr_agentid = 1000002;

inline std::string ticket_of(const http_answer& answer) {
  return nlohmann::json::parse(answer.body).at("ticket").get<std::string>();
}

// The config change that gives `app` the tickets named ("jsapi", "agent_config").
inline nlohmann::json tickets_for(const std::string& app, const nlohmann::json& tickets) {
  return {{"apps", {{app, {{"agentid", hr_agentid}, {"tickets", tickets}}}}}};
}

inline nlohmann::json both_tickets_for(const std::string& app) {
  return tickets_for(app, {"jsapi", "agent_config"});
}

// WeCom's rule (its JS-SDK docs), the same for both tickets, computed here rather than by the
// broker's own function so that a wrong rule there cannot agree with itself.
inline std::string expected_signature(const std::string& ticket, const std::string& noncestr,
                                      std::int64_t timestamp, const std::string& url) {
  return sha1_hex("jsapi_ticket=" + ticket + "&noncestr=" + noncestr +
                  "&timestamp=" + std::to_string(timestamp) + "&url=" + url);
}

inline http_exchange signature_request(const std::string& app, const nlohmann::json& body) {
  return {.method = "POST", .target = "/v1/apps/" + app + "/jssdk_signature", .body = body.dump()};
}

// The ticket of `kind` issued for `secret` that made the signature in `part` ("config" or
// "agent_config") of a jssdk_signature answer, or nothing if none of the fake's did.
inline std::optional<std::string> signing_ticket(const fake::fake_wecom& wecom,
                                                 const std::string& secret, fake::ticket_kind kind,
                                                 const nlohmann::json& answer,
                                                 const std::string& part) {
  const auto signature = answer.at(part).at("signature").get<std::string>();
  const auto noncestr = answer.at("noncestr").get<std::string>();
  const auto timestamp = answer.at("timestamp").get<std::int64_t>();
  const auto url = answer.at("url").get<std::string>();
  const auto issued = wecom.issued_tickets(secret, kind);
  // Newest first: the one in use is almost always among the last.
  for (auto ticket = issued.rbegin(); ticket != issued.rend(); ++ticket) {
    if (expected_signature(*ticket, noncestr, timestamp, url) == signature) return *ticket;
  }
  return std::nullopt;
}

class ticket_fixture : public broker_fixture {
 protected:
  void TearDown() override {
    // Tickets are credentials: none the fake ever issued may reach a broker's output, nor any
    // token a test was handed.
    for (const auto& app : apps_) {
      for (const auto kind : {fake::ticket_kind::jsapi, fake::ticket_kind::agent_config}) {
        for (auto& ticket : fake_->issued_tickets(app.secret, kind)) {
          forbid_in_logs(std::move(ticket), fake::to_string(kind) + " ticket of " + app.id);
        }
      }
    }
    for (const auto& token : tokens_seen_) forbid_in_logs(token, "an access_token handed out");
    broker_fixture::TearDown();
  }

  // The token in a /v1/apps/{app}/token answer, kept for the log check. Thread-safe.
  std::string seen_token(const http_answer& answer) {
    auto token = token_of(answer);
    const std::scoped_lock lock(tokens_mutex_);
    tokens_seen_.insert(token);
    return token;
  }

  // Polls `target` until it answers 200 or `limit` passes.
  http_answer await_ok(const broker_process& broker, const std::string& target,
                       std::chrono::milliseconds limit) {
    const auto give_up_at = std::chrono::steady_clock::now() + limit;
    http_answer answer;
    while (std::chrono::steady_clock::now() < give_up_at) {
      answer = http_get(broker.port(), target);
      if (answer.status == 200) break;
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
    return answer;
  }

 private:
  std::mutex tokens_mutex_;
  std::set<std::string> tokens_seen_;
};

}  // namespace token_broker::testing
