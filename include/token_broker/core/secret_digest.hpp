// SHA-256 and constant-time comparison, for checking secrets and client keys without
// leaking through timing how much of a guess was right; and SHA-1 in hex, by which Redis
// names scripts (EVALSHA) and the store compares tokens without sending them.
#pragma once

#include <string>
#include <string_view>

#include "token_broker/config/config.hpp"

namespace token_broker {

sha256_digest sha256(std::string_view data);
bool digests_equal(const sha256_digest& left, const sha256_digest& right);
// The first 12 lower-case hex digits of the SHA-256 of a credential: what the audit trail says
// of one, enough to match a line with a token seen elsewhere, useless to replay.
std::string fingerprint_of(std::string_view credential);
// 40 lower-case hex digits, as Redis's SHA1 of a script and redis.sha1hex() give them.
std::string sha1_hex(std::string_view data);

}  // namespace token_broker
