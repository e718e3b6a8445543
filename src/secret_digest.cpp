#include "token_broker/secret_digest.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

namespace token_broker {

sha256_digest sha256(std::string_view data) {
  sha256_digest digest{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

bool digests_equal(const sha256_digest& left, const sha256_digest& right) {
  return CRYPTO_memcmp(left.data(), right.data(), left.size()) == 0;
}

}  // namespace token_broker
