#include "simulated_wecom.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace token_broker::simulation {
namespace {

std::string parameter(std::string_view target, std::string_view name) {
  const auto start = target.find(std::string(name) + "=");
  if (start == std::string_view::npos) return {};
  const auto rest = target.substr(start + name.size() + 1);
  return std::string(rest.substr(0, rest.find('&')));
}

// "T-<corpid>-<n>" → corpid
std::string corpid_of_token(const std::string& value) {
  if (!value.starts_with("T-")) return {};
  const auto end = value.rfind('-');
  return end <= 2 ? std::string() : value.substr(2, end - 2);
}

}  // namespace

asio::awaitable<upstream_response> simulated_wecom::answer(const upstream_request& request) {
  const bool suite_call = request.target == "/cgi-bin/service/get_suite_token";
  const bool ticket_call = request.target.starts_with("/cgi-bin/get_jsapi_ticket");
  const auto access_token = parameter(request.target, "access_token");
  const auto corpid =
      ticket_call ? corpid_of_token(access_token) : parameter(request.target, "corpid");
  const auto counted = suite_call ? "suite" : ticket_call ? "ticket:" + corpid : corpid;
  const auto sent_at = simulated_clock::now();
  const auto sent_at_wall = wall_clock::now();
  ++total_calls_;
  ++calls_[counted];
  if (in_flight_[counted]++ > 0) ++overlapping_;

  simulated_timer latency(co_await asio::this_coro::executor, latency_);
  co_await latency.async_wait(asio::as_tuple(asio::use_awaitable));
  --in_flight_[counted];
  upstream_response answer{.status = 200,
                           .sent_at = sent_at,
                           .received_at = simulated_clock::now(),
                           .sent_at_wall = sent_at_wall};
  if (failures_left_ > 0) {
    --failures_left_;
    answer.body = fmt::format(R"({{"errcode":{},"errmsg":"simulated failure"}})", failure_errcode_);
  } else if (suite_call) {
    const auto body = nlohmann::json::parse(request.json_body.value_or("{}"));
    answer.body = !suite_ticket_.empty() && body.value("suite_ticket", "") == suite_ticket_
                      ? nlohmann::json{{"errcode", 0},
                                       {"errmsg", "ok"},
                                       {"suite_access_token", fmt::format("S-{}", ++serial_)},
                                       {"expires_in", lifetime_.count()}}
                            .dump()
                      : R"({"errcode":40085,"errmsg":"invalid suite_ticket"})";
  } else if (ticket_call && !valid(corpid, access_token)) {
    answer.body = R"({"errcode":40014,"errmsg":"invalid access_token"})";
  } else if (ticket_call) {
    answer.body = nlohmann::json{{"errcode", 0},
                                 {"errmsg", "ok"},
                                 {"ticket", fmt::format("J-{}-{}", corpid, ++serial_)},
                                 {"expires_in", lifetime_.count()}}
                      .dump();
  } else {
    std::chrono::seconds expires_in{0};
    const auto value = issue(corpid, expires_in);
    answer.body = nlohmann::json{{"errcode", 0},
                                 {"errmsg", "ok"},
                                 {"access_token", value},
                                 {"expires_in", expires_in.count()}}
                      .dump();
  }
  co_return answer;
}

std::string simulated_wecom::issue(const std::string& corpid, std::chrono::seconds& expires_in) {
  const auto now = simulated_clock::now();
  auto& current = current_[corpid];
  const bool usable = !current.value.empty() && valid(corpid, current.value);
  if (how_ == behaviour::new_token_each_call || !usable) {
    current = issued{fmt::format("T-{}-{}", corpid, ++serial_), now + lifetime_};
    older_until_[current.value] = current.expires_at;
  }
  expires_in = how_ == behaviour::same_token_seconds_left
                   ? std::chrono::floor<std::chrono::seconds>(current.expires_at - now)
                   : lifetime_;
  return current.value;
}

bool simulated_wecom::valid(const std::string& corpid, const std::string& value) const {
  const auto found = older_until_.find(value);
  return corpid_of_token(value) == corpid && found != older_until_.end() &&
         simulated_clock::now() < found->second;
}

void simulated_wecom::revoke(const std::string& corpid) {
  for (auto& [value, until] : older_until_) {
    if (corpid_of_token(value) == corpid) until = std::min(until, simulated_clock::now());
  }
}

int simulated_wecom::calls(const std::string& corpid) const {
  const auto found = calls_.find(corpid);
  return found == calls_.end() ? 0 : found->second;
}

}  // namespace token_broker::simulation
