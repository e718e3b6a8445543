#include "token_broker/http/token_answer.hpp"

#include <nlohmann/json.hpp>

namespace token_broker {
namespace {

// The bodies are dumped with this in place of `expires_in` and split around it. A quote
// inside a JSON string is escaped, so the key with its quotes matches only the key itself.
constexpr std::int64_t placeholder_seconds = -9999999999;

// `text` split around the placeholder; views into `text`.
prepared_body split_at_expires_in(const std::string& text) {
  const std::string key = R"("expires_in":)";
  const auto number_at = text.find(key + std::to_string(placeholder_seconds)) + key.size();
  const std::string_view whole = text;
  return prepared_body{
      .before_expires_in = whole.substr(0, number_at),
      .after_expires_in = whole.substr(number_at + std::to_string(placeholder_seconds).size()),
  };
}

}  // namespace

std::int64_t seconds_left(const token& current, time_point now) {
  return std::chrono::floor<std::chrono::seconds>(current.expires_at - now).count();
}

prepared_token_answers::prepared_token_answers(const prepared_body& ours,
                                               const prepared_body& wecom) {
  std::size_t i = 0;
  for (const auto piece : {ours.before_expires_in, ours.after_expires_in, wecom.before_expires_in,
                           wecom.after_expires_in}) {
    text_ += piece;
    ends_[i++] = static_cast<std::uint32_t>(text_.size());
  }
}

prepared_body prepared_token_answers::part(std::size_t first) const {
  const std::string_view whole = text_;
  const std::uint32_t start = first == 0 ? 0 : ends_[first - 1];
  return prepared_body{
      .before_expires_in = whole.substr(start, ends_[first] - start),
      .after_expires_in = whole.substr(ends_[first], ends_[first + 1] - ends_[first]),
  };
}

// ordered_json: keys go out in the order SPEC §4 lists them.
prepared_token_answers prepare_token_answers(const credential_id& id, const token& current) {
  const auto field = value_field(id.kind);
  nlohmann::ordered_json named;
  const auto values = naming_values(id);
  for (std::size_t i = 0; i < values.size(); ++i) {
    named[std::string(naming_fields(id.kind)[i])] = values[i];
  }
  named[field] = current.value;
  named["expires_in"] = placeholder_seconds;
  named["expires_at"] = unix_seconds(current.expires_at_wall);
  const auto ours = named.dump();
  const auto wecom =
      nlohmann::ordered_json{
          {"errcode", 0},
          {"errmsg", "ok"},
          {field, current.value},
          {"expires_in", placeholder_seconds},
      }
          .dump();
  return prepared_token_answers(split_at_expires_in(ours), split_at_expires_in(wecom));
}

}  // namespace token_broker
