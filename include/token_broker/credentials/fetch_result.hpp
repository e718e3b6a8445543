// What one credential call produced: a value, or a classified failure.
#pragma once

#include <chrono>
#include <string>
#include <variant>

#include "token_broker/core/clock.hpp"

namespace token_broker {

struct fetched_token {
  std::string value;
  std::chrono::seconds expires_in{0};
  time_point sent_at;              // the request left
  time_point received_at;          // the answer arrived
  wall_time_point sent_at_wall{};  // the wall clock when the request left
};

// How a failure is retried (SPEC §1; the errcode classes).
enum class failure_class {
  transient,      // -1, 45033, network, TLS, timeout, HTTP 5xx, garbage: retry with backoff
  throttled,      // 45009: WeCom's frequency limit: back off harder, keep serving
  configuration,  // wrong corpid/secret/IP whitelist…: retrying soon cannot help
  rationed,       // no call made: the credential's call budget is spent until `retry_after`
};

// errcode -1 marks failures below WeCom's JSON (network, TLS, HTTP, unparsable answers).
inline constexpr int local_failure_errcode = -1;

struct fetch_failure {
  failure_class kind = failure_class::transient;
  int errcode = local_failure_errcode;
  std::string errmsg;  // WeCom's errmsg, or what went wrong locally; never holds a secret
  std::chrono::milliseconds retry_after{0};  // rationed: when the budget allows a call again
};

using fetch_result = std::variant<fetched_token, fetch_failure>;

failure_class classify_errcode(int errcode);

}  // namespace token_broker
