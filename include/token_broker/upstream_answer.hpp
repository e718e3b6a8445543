// Strict reading of a gettoken answer: anything but WeCom's exact success shape is a
// classified failure, never a token.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <variant>

#include "token_broker/fetch_result.hpp"

namespace token_broker {

struct token_answer {
  std::string access_token;
  std::chrono::seconds expires_in{0};
};

// Tokens are at most 512 bytes (SPEC §1).
inline constexpr std::size_t max_token_size = 512;

std::variant<token_answer, fetch_failure> parse_gettoken_answer(unsigned http_status,
                                                                std::string_view body);

}  // namespace token_broker
