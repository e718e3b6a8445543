// SHA-256 and constant-time comparison, for checking secrets and client keys without
// leaking through timing how much of a guess was right.
#pragma once

#include <string_view>

#include "token_broker/config.hpp"

namespace token_broker {

sha256_digest sha256(std::string_view data);
bool digests_equal(const sha256_digest& left, const sha256_digest& right);

}  // namespace token_broker
