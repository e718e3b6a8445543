#include "token_broker/responses.hpp"

#include <nlohmann/json.hpp>

// ordered_json: keys go out in the order SPEC §4 lists them.

namespace token_broker {
namespace {

std::int64_t seconds_left(const token& current, time_point now) {
  return std::chrono::floor<std::chrono::seconds>(current.expires_at - now).count();
}

}  // namespace

response json_response(http::status status, std::string body) {
  response answer{status, 11};
  answer.set(http::field::content_type, "application/json");
  // Tokens are credentials: no proxy or client cache may keep an answer.
  answer.set(http::field::cache_control, "no-store");
  answer.body() = std::move(body);
  answer.prepare_payload();
  return answer;
}

response error_response(http::status status, std::string_view code, std::string_view message) {
  return json_response(status,
                       nlohmann::ordered_json{{"error", code}, {"message", message}}.dump());
}

response token_response(std::string_view app_id, const token& current, time_point now) {
  return json_response(http::status::ok,
                       nlohmann::ordered_json{
                           {"app", app_id},
                           {"access_token", current.value},
                           {"expires_in", seconds_left(current, now)},
                           {"expires_at", unix_seconds(current.expires_at_wall)},
                       }
                           .dump());
}

response unavailable_response(std::string_view app_id, const token_outcome& outcome) {
  nlohmann::ordered_json body{{"error", "unavailable"}};
  if (outcome.failure) {
    body["message"] = "no valid token for app " + std::string(app_id) + ": upstream failing";
    body["errcode"] = outcome.failure->errcode;
    body["errmsg"] = outcome.failure->errmsg;
  } else {
    body["message"] = "no valid token for app " + std::string(app_id) + " yet";
  }
  auto answer = json_response(http::status::service_unavailable, body.dump());
  answer.set(http::field::retry_after, std::to_string(outcome.retry_after.count()));
  return answer;
}

response wecom_token_response(const token& current, time_point now) {
  return json_response(http::status::ok,
                       nlohmann::ordered_json{
                           {"errcode", 0},
                           {"errmsg", "ok"},
                           {"access_token", current.value},
                           {"expires_in", seconds_left(current, now)},
                       }
                           .dump());
}

response wecom_error_response(int errcode, std::string_view errmsg) {
  return json_response(http::status::ok,
                       nlohmann::ordered_json{{"errcode", errcode}, {"errmsg", errmsg}}.dump());
}

}  // namespace token_broker
