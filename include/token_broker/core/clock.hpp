// Time in the broker. Every decision (expiry, refresh, backoff) runs on CLOCK_BOOTTIME:
// monotonic, so a stepped wall clock (NTP, an operator's `date`) never makes a token look
// fresher or staler than it is, and counting on while the host sleeps, so a resumed machine
// does not hold a token it thinks is fresh. Wall-clock time appears only where the outside
// world reads it: `expires_at` in answers and in the store's events. Tokens shared with other
// hosts carry the time they have left, never an instant: hosts' wall clocks differ.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>

namespace token_broker {

struct boot_clock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<boot_clock>;
  static constexpr bool is_steady = true;

  static time_point now() noexcept {
    timespec now{};
    clock_gettime(CLOCK_BOOTTIME, &now);
    return time_point(std::chrono::seconds{now.tv_sec} + std::chrono::nanoseconds{now.tv_nsec});
  }
};

using clock = boot_clock;
using time_point = clock::time_point;
using wall_clock = std::chrono::system_clock;
using wall_time_point = wall_clock::time_point;

inline std::int64_t unix_seconds(wall_time_point at) {
  return std::chrono::floor<std::chrono::seconds>(at.time_since_epoch()).count();
}

}  // namespace token_broker
