// A token's 200 answers, serialized once when the token is published. Between two requests
// only `expires_in` changes, so an answer is the prepared text around that one number: the
// hot path builds no JSON and allocates nothing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "token_broker/credentials/token_lifecycle.hpp"

namespace token_broker {

struct prepared_body {
  std::string before_expires_in;  // {"app":"hr","access_token":"…","expires_in":
  std::string after_expires_in;   // ,"expires_at":1790000000}
};

struct prepared_token_answers {
  prepared_body ours;   // GET /v1/apps/{app}/token, SPEC §4
  prepared_body wecom;  // GET /cgi-bin/gettoken, WeCom's own shape
};

prepared_token_answers prepare_token_answers(std::string_view app_id, const token& current);

// Whole seconds left at `now`: what `expires_in` says.
std::int64_t seconds_left(const token& current, time_point now);

}  // namespace token_broker
