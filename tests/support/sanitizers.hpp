// Whether the daemon's code runs under AddressSanitizer in this build. The tests' own code is
// not instrumented then (tests/CMakeLists.txt), so the build says so rather than the compiler.
#pragma once

namespace token_broker::testing {

#ifdef TOKEN_BROKER_ASAN_BUILD
inline constexpr bool under_address_sanitizer = true;
#else
inline constexpr bool under_address_sanitizer = false;
#endif

}  // namespace token_broker::testing
