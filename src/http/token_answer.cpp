#include "token_broker/http/token_answer.hpp"

#include <nlohmann/json.hpp>

namespace token_broker {
namespace {

// The bodies are dumped with this in place of `expires_in` and split around it. A quote
// inside a JSON string is escaped, so the key with its quotes matches only the key itself.
constexpr std::int64_t placeholder_seconds = -9999999999;

prepared_body split_at_expires_in(const nlohmann::ordered_json& body) {
  const std::string key = R"("expires_in":)";
  const std::string text = body.dump();
  const auto number_at = text.find(key + std::to_string(placeholder_seconds)) + key.size();
  return prepared_body{
      .before_expires_in = text.substr(0, number_at),
      .after_expires_in = text.substr(number_at + std::to_string(placeholder_seconds).size()),
  };
}

}  // namespace

std::int64_t seconds_left(const token& current, time_point now) {
  return std::chrono::floor<std::chrono::seconds>(current.expires_at - now).count();
}

// ordered_json: keys go out in the order SPEC §4 lists them.
prepared_token_answers prepare_token_answers(std::string_view app_id, const token& current) {
  return prepared_token_answers{
      .ours = split_at_expires_in({
          {"app", app_id},
          {"access_token", current.value},
          {"expires_in", placeholder_seconds},
          {"expires_at", unix_seconds(current.expires_at_wall)},
      }),
      .wecom = split_at_expires_in({
          {"errcode", 0},
          {"errmsg", "ok"},
          {"access_token", current.value},
          {"expires_in", placeholder_seconds},
      }),
  };
}

}  // namespace token_broker
