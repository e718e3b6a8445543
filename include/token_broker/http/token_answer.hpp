// A credential's 200 answers, serialized once when it is published. Between two requests
// only `expires_in` changes, so an answer is the prepared text around that one number: the
// hot path builds no JSON and allocates nothing.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "token_broker/credentials/credential.hpp"
#include "token_broker/credentials/token_lifecycle.hpp"

namespace token_broker {

// One answer's body around its `expires_in`: views into prepared_token_answers' text.
struct prepared_body {
  std::string_view before_expires_in;  // {"app":"hr","access_token":"…","expires_in":
  std::string_view after_expires_in;   // ,"expires_at":1790000000}
};

// Both answers in one allocation: a hundred thousand credentials hold one of these each.
class prepared_token_answers {
 public:
  prepared_token_answers() = default;
  prepared_token_answers(const prepared_body& ours, const prepared_body& wecom);

  prepared_body ours() const { return part(0); }   // GET /v1/apps/{app}/token, …/jsapi_ticket
  prepared_body wecom() const { return part(2); }  // the drop-ins: WeCom's shape

 private:
  prepared_body part(std::size_t first) const;

  std::string text_;
  std::array<std::uint32_t, 4> ends_{};  // where each of the four pieces ends in text_
};

// Ours names the credential (SPEC §4: "app"; "provider"; "suite"; "suite" and "corpid") and
// both put the value in the kind's field (value_field).
prepared_token_answers prepare_token_answers(const credential_id& id, const token& current);

// Whole seconds left at `now`: what `expires_in` says.
std::int64_t seconds_left(const token& current, time_point now);

}  // namespace token_broker
