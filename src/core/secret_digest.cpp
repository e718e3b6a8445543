#include "token_broker/core/secret_digest.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <memory>
#include <stdexcept>

namespace token_broker {
namespace {

// OpenSSL 3's one-shot SHA1() and SHA256() look their algorithm up in the provider registry on
// every call (EVP_Q_digest), which costs more than hashing the few hundred bytes of a request's
// key or a JS-SDK signature. Each algorithm is fetched once, and each thread keeps a context.
const EVP_MD& algorithm(const char* name) {
  const EVP_MD* fetched = EVP_MD_fetch(nullptr, name, nullptr);
  if (!fetched) throw std::runtime_error(std::string("OpenSSL has no ") + name);
  return *fetched;  // kept for the life of the process
}

void digest(const EVP_MD& md, std::string_view data, unsigned char* out) {
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(
      EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!context || EVP_DigestInit_ex2(context.get(), &md, nullptr) != 1 ||
      EVP_DigestUpdate(context.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(context.get(), out, nullptr) != 1) {
    throw std::runtime_error("OpenSSL failed to compute a digest");
  }
}

}  // namespace

sha256_digest sha256(std::string_view data) {
  static const EVP_MD& md = algorithm("SHA256");
  sha256_digest digest_bytes{};
  digest(md, data, digest_bytes.data());
  return digest_bytes;
}

std::string fingerprint_of(std::string_view credential) {
  const auto digest = sha256(credential);
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (std::size_t i = 0; i < 6; ++i) {
    hex += digits[digest[i] >> 4];
    hex += digits[digest[i] & 0xf];
  }
  return hex;
}

std::string sha1_hex(std::string_view data) {
  static const EVP_MD& md = algorithm("SHA1");
  unsigned char bytes[SHA_DIGEST_LENGTH];
  digest(md, data, bytes);
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * SHA_DIGEST_LENGTH);
  for (const unsigned char byte : bytes) {
    hex += digits[byte >> 4];
    hex += digits[byte & 0xf];
  }
  return hex;
}

bool digests_equal(const sha256_digest& left, const sha256_digest& right) {
  return CRYPTO_memcmp(left.data(), right.data(), left.size()) == 0;
}

}  // namespace token_broker
