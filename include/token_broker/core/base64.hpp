// base64 (RFC 4648's alphabet, '=' padding), as WeCom's callbacks carry their envelopes and the
// store keeps sealed values.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace token_broker {

// nullopt on anything but whole groups of the alphabet with '=' padding (no whitespace).
std::optional<std::string> base64_decode(std::string_view text);
std::string base64_encode(std::string_view bytes);

}  // namespace token_broker
