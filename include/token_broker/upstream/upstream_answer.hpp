// Strict reading of a credential call's answer (gettoken, the ticket calls): anything but
// WeCom's exact success shape is a classified failure, never a credential.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "token_broker/credentials/fetch_result.hpp"

namespace token_broker {

// Named apart from responses.hpp's token_answer (the API's answer): two classes of one name
// in one namespace break the one-definition rule, and the linker may then pick either's
// inline members (a destructor, say) for both.
struct issued_token {
  std::string value;
  std::chrono::seconds expires_in{0};
};

// Tokens are at most 512 bytes (SPEC §1).
inline constexpr std::size_t max_token_size = 512;

// A token the broker hands on: 1 to max_token_size bytes of printable ASCII, since tokens go
// into JSON, HTTP headers and Redis as they are.
bool is_plain_token(std::string_view value);

// `value_field` names the credential in the answer: "access_token", "ticket".
std::variant<issued_token, fetch_failure> parse_credential_answer(std::string_view value_field,
                                                                  unsigned http_status,
                                                                  std::string_view body);

// The errcode of any WeCom answer: the member of a JSON object's top level, or nullopt for a
// body that is no such object (a file, say).
std::optional<int> wecom_errcode(std::string_view body);

}  // namespace token_broker
