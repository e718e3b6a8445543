// Secrets the broker must store, sealed (SPEC §5: a suite's permanent codes in
// {prefix}suite_corps:{suite}): AES-256-GCM under the suite's store_key_file, a fresh random
// 96-bit nonce per value, and the value bound to where it is kept (the associated data, e.g.
// "suite_corps:crm-suite:wwcorpA…"), so that one copied to another suite or corp does not open.
//
// Sealed form, in base64: a version byte (1), the nonce (12 bytes), the ciphertext, the tag
// (16 bytes). Pure code: no I/O, no log.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace token_broker {

class at_rest_key {
 public:
  static constexpr std::size_t key_size = 32;

  // Throws config_error naming `field` unless `key` is exactly 32 bytes; the key itself never
  // appears in the message.
  at_rest_key(std::string_view key, const std::string& field);
  ~at_rest_key();
  at_rest_key(const at_rest_key&) = delete;
  at_rest_key& operator=(const at_rest_key&) = delete;

  std::string seal(std::string_view plaintext, std::string_view bound_to) const;
  // The plaintext, or nullopt when `sealed` was not sealed under this key for `bound_to`, or
  // was changed since (GCM's tag).
  std::optional<std::string> open(std::string_view sealed, std::string_view bound_to) const;

 private:
  std::array<unsigned char, key_size> key_{};
};

}  // namespace token_broker
