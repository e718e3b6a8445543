// Fuzzes the opening of a callback's encrypted text (WXBizMsgCrypt, SPEC §7) under WeCom's
// sample key: the input is the <Encrypt> text as it would arrive, after its signature checked.
//
// Beyond crashes and sanitizer reports, a finding is an envelope read against its promise
// (msg_crypt.hpp): what opens holds no more than its input could carry, and sealing what opened
// gives an envelope that opens to the same message and receive id; base64 that decodes
// encodes back to text that decodes to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "token_broker/callback/msg_crypt.hpp"
#include "token_broker/core/base64.hpp"

namespace {

using token_broker::msg_crypt;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_callback_crypt: %s\n", what);
  std::abort();
}

const msg_crypt& sample() {
  static const msg_crypt crypt("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "fuzz");
  return crypt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  if (const auto bytes = token_broker::base64_decode(input)) {
    if (bytes->size() > size) finding("base64 decoded to more bytes than its text");
    if (token_broker::base64_decode(token_broker::base64_encode(*bytes)) != *bytes) {
      finding("base64 did not read back what it wrote");
    }
  }

  const auto opened = sample().open(input);
  if (!opened) return 0;
  if (opened->message.size() + opened->receive_id.size() > size) {
    finding("an envelope opened to more than its text could hold");
  }
  const msg_crypt::random_bytes random{};
  const auto resealed = sample().open(sample().seal(opened->message, opened->receive_id, random));
  if (!resealed || resealed->message != opened->message ||
      resealed->receive_id != opened->receive_id) {
    finding("sealing what opened did not open to the same");
  }
  return 0;
}
