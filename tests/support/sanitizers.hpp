// Whether this build runs under AddressSanitizer: g++ says so with __SANITIZE_ADDRESS__,
// clang only through __has_feature.
#pragma once

namespace token_broker::testing {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool under_address_sanitizer = true;
#elif defined(__has_feature)
inline constexpr bool under_address_sanitizer = __has_feature(address_sanitizer);
#else
inline constexpr bool under_address_sanitizer = false;
#endif

}  // namespace token_broker::testing
