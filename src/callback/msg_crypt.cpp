#include "token_broker/callback/msg_crypt.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

#include "token_broker/config/config.hpp"
#include "token_broker/core/base64.hpp"
#include "token_broker/core/secret_digest.hpp"

namespace token_broker {
namespace {

constexpr std::size_t block_size = 32;  // WeCom pads to 32 bytes, not AES's 16
constexpr std::size_t length_size = 4;

using cipher_context = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

// AES-256-CBC over whole blocks, padding handled by the caller (WeCom's is not AES's).
std::string aes_cbc(const std::array<unsigned char, 32>& key, std::string_view input,
                    bool encrypt) {
  const cipher_context context(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  std::string output(input.size(), '\0');
  int written = 0;
  int finished = 0;
  if (!context ||
      EVP_CipherInit_ex(context.get(), EVP_aes_256_cbc(), nullptr, key.data(), key.data(),
                        encrypt ? 1 : 0) != 1 ||
      EVP_CIPHER_CTX_set_padding(context.get(), 0) != 1 ||
      EVP_CipherUpdate(context.get(), reinterpret_cast<unsigned char*>(output.data()), &written,
                       reinterpret_cast<const unsigned char*>(input.data()),
                       static_cast<int>(input.size())) != 1 ||
      EVP_CipherFinal_ex(context.get(), reinterpret_cast<unsigned char*>(output.data()) + written,
                         &finished) != 1) {
    throw std::runtime_error("OpenSSL failed at AES-256-CBC");
  }
  return output;
}

}  // namespace

msg_crypt::msg_crypt(std::string token, std::string_view encoding_aes_key, const std::string& field)
    : token_(std::move(token)) {
  std::optional<std::string> key;
  if (encoding_aes_key.size() == 43) key = base64_decode(std::string(encoding_aes_key) + "=");
  if (!key || key->size() != key_.size()) {
    throw config_error(field, "not an EncodingAESKey (43 characters of base64)");
  }
  std::copy(key->begin(), key->end(), key_.begin());
  OPENSSL_cleanse(key->data(), key->size());
}

msg_crypt::~msg_crypt() {
  OPENSSL_cleanse(key_.data(), key_.size());
  OPENSSL_cleanse(token_.data(), token_.size());
}

std::string msg_crypt::signature(std::string_view timestamp, std::string_view nonce,
                                 std::string_view encrypted) const {
  std::array<std::string_view, 4> parts{token_, timestamp, nonce, encrypted};
  std::sort(parts.begin(), parts.end());
  std::string joined;
  joined.reserve(parts[0].size() + parts[1].size() + parts[2].size() + parts[3].size());
  for (const auto part : parts) joined.append(part);
  return sha1_hex(joined);
}

bool msg_crypt::signed_by_wecom(std::string_view msg_signature, std::string_view timestamp,
                                std::string_view nonce, std::string_view encrypted) const {
  const auto expected = signature(timestamp, nonce, encrypted);
  return msg_signature.size() == expected.size() &&
         CRYPTO_memcmp(msg_signature.data(), expected.data(), expected.size()) == 0;
}

std::optional<msg_crypt::opened> msg_crypt::open(std::string_view encrypted) const {
  const auto sealed = base64_decode(encrypted);
  if (!sealed || sealed->empty() || sealed->size() % block_size != 0) return std::nullopt;
  const auto plain = aes_cbc(key_, *sealed, false);
  const auto pad = static_cast<unsigned char>(plain.back());
  if (pad == 0 || pad > block_size ||
      !std::all_of(plain.end() - pad, plain.end(),
                   [pad](char each) { return static_cast<unsigned char>(each) == pad; })) {
    return std::nullopt;
  }
  const std::string_view content(plain.data(), plain.size() - pad);
  if (content.size() < random_size + length_size) return std::nullopt;
  const auto* length_bytes = reinterpret_cast<const unsigned char*>(content.data()) + random_size;
  const std::size_t length = std::size_t{length_bytes[0]} << 24 |
                             std::size_t{length_bytes[1]} << 16 |
                             std::size_t{length_bytes[2]} << 8 | std::size_t{length_bytes[3]};
  const auto rest = content.substr(random_size + length_size);
  if (length > rest.size()) return std::nullopt;
  return opened{std::string(rest.substr(0, length)), std::string(rest.substr(length))};
}

std::string msg_crypt::seal(std::string_view message, std::string_view receive_id,
                            const random_bytes& random) const {
  std::string plain(reinterpret_cast<const char*>(random.data()), random.size());
  const auto length = static_cast<std::uint32_t>(message.size());
  for (const int shift : {24, 16, 8, 0}) plain += static_cast<char>(length >> shift & 0xff);
  plain.append(message).append(receive_id);
  const auto pad = block_size - plain.size() % block_size;  // 1-32: always some
  plain.append(pad, static_cast<char>(pad));
  return base64_encode(aes_cbc(key_, plain, true));
}

}  // namespace token_broker
