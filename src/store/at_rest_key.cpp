#include "token_broker/store/at_rest_key.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

#include "token_broker/core/base64.hpp"
#include "token_broker/config/config.hpp"

namespace token_broker {
namespace {

constexpr unsigned char version = 1;
constexpr std::size_t nonce_size = 12;
constexpr std::size_t tag_size = 16;

using cipher_context = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

const unsigned char* bytes_of(std::string_view text) {
  return reinterpret_cast<const unsigned char*>(text.data());
}

}  // namespace

at_rest_key::at_rest_key(std::string_view key, const std::string& field) {
  if (key.size() != key_size) {
    throw config_error(field, "must hold exactly 32 bytes (head -c 32 /dev/urandom), holds " +
                                  std::to_string(key.size()));
  }
  std::copy(key.begin(), key.end(), key_.begin());
}

at_rest_key::~at_rest_key() {
  OPENSSL_cleanse(key_.data(), key_.size());
}

std::string at_rest_key::seal(std::string_view plaintext, std::string_view bound_to) const {
  std::string sealed(1 + nonce_size + plaintext.size() + tag_size, '\0');
  auto* out = reinterpret_cast<unsigned char*>(sealed.data());
  out[0] = version;
  unsigned char* const nonce = out + 1;
  unsigned char* const ciphertext = nonce + nonce_size;
  unsigned char* const tag = ciphertext + plaintext.size();
  const cipher_context context(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  int written = 0;
  if (RAND_bytes(nonce, static_cast<int>(nonce_size)) != 1 || !context ||
      EVP_EncryptInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) != 1 ||
      EVP_EncryptUpdate(context.get(), nullptr, &written, bytes_of(bound_to),
                        static_cast<int>(bound_to.size())) != 1 ||
      EVP_EncryptUpdate(context.get(), ciphertext, &written, bytes_of(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(context.get(), ciphertext + written, &written) != 1 ||
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_GET_TAG, tag_size, tag) != 1) {
    throw std::runtime_error("OpenSSL failed to seal a value (AES-256-GCM)");
  }
  return base64_encode(sealed);
}

std::optional<std::string> at_rest_key::open(std::string_view sealed,
                                             std::string_view bound_to) const {
  const auto raw = base64_decode(sealed);
  if (!raw || raw->size() < 1 + nonce_size + tag_size ||
      static_cast<unsigned char>((*raw)[0]) != version) {
    return std::nullopt;
  }
  const auto* nonce = bytes_of(*raw) + 1;
  const auto* ciphertext = nonce + nonce_size;
  const std::size_t size = raw->size() - 1 - nonce_size - tag_size;
  // The tag as OpenSSL wants it (a non-const pointer), copied out of the sealed bytes.
  std::array<unsigned char, tag_size> tag{};
  std::copy_n(ciphertext + size, tag_size, tag.begin());
  std::string plaintext(size, '\0');
  const cipher_context context(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  int written = 0;
  if (!context ||
      EVP_DecryptInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) != 1 ||
      EVP_DecryptUpdate(context.get(), nullptr, &written, bytes_of(bound_to),
                        static_cast<int>(bound_to.size())) != 1 ||
      EVP_DecryptUpdate(context.get(), reinterpret_cast<unsigned char*>(plaintext.data()), &written,
                        ciphertext, static_cast<int>(size)) != 1 ||
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_TAG, tag_size, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(context.get(),
                          reinterpret_cast<unsigned char*>(plaintext.data()) + written,
                          &written) != 1) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return std::nullopt;
  }
  return plaintext;
}

}  // namespace token_broker
