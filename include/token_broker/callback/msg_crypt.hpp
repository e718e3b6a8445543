// WeCom's callback message crypto (WXBizMsgCrypt, SPEC §7): the signature that authenticates a
// callback, and the AES-256-CBC envelope of its message. Pure code: no I/O, no clock, no log.
//
// signature = sha1_hex of token, timestamp, nonce and the encrypted text, sorted and joined.
// AESKey = base64_decode(EncodingAESKey + "="), IV = its first 16 bytes; the plaintext is
// 16 random bytes, the message's length (4 bytes, big-endian), the message and the receive id
// (a suite_id for a suite's callbacks), padded PKCS#7-style to a multiple of 32 bytes.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace token_broker {

class msg_crypt {
 public:
  static constexpr std::size_t random_size = 16;
  using random_bytes = std::array<unsigned char, random_size>;

  // Throws config_error naming `field` when `encoding_aes_key` is not WeCom's 43 characters of
  // base64 (32 bytes once decoded); the key itself never appears in the message.
  msg_crypt(std::string token, std::string_view encoding_aes_key, const std::string& field);
  ~msg_crypt();
  msg_crypt(const msg_crypt&) = delete;
  msg_crypt& operator=(const msg_crypt&) = delete;

  // What WeCom signs a callback with (lower-case hex).
  std::string signature(std::string_view timestamp, std::string_view nonce,
                        std::string_view encrypted) const;
  // Whether `msg_signature` is that signature, compared in constant time.
  bool signed_by_wecom(std::string_view msg_signature, std::string_view timestamp,
                       std::string_view nonce, std::string_view encrypted) const;

  struct opened {
    std::string message;
    std::string receive_id;
  };
  // The message and receive id inside `encrypted` (base64), or nullopt when it is not one of
  // these envelopes under this key: bad base64, a length that is no whole number of blocks,
  // bad padding, a message length past the end.
  std::optional<opened> open(std::string_view encrypted) const;
  // The envelope of `message` for `receive_id`, in base64: what WeCom sends (the fake WeCom's
  // callbacks, tests). `random` is the envelope's first 16 bytes.
  std::string seal(std::string_view message, std::string_view receive_id,
                   const random_bytes& random) const;

 private:
  std::string token_;
  std::array<unsigned char, 32> key_{};
};

}  // namespace token_broker
