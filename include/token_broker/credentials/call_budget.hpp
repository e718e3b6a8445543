// A ceiling on upstream calls for one credential: at most `limit` in any rolling window
// (SPEC §3 refresh.ticket_calls_per_hour: WeCom allows 100 ticket calls an hour per app, and
// an app that exceeds them breaks every page's signature until the hour is over). This is the
// process's own count; a shared store counts the fleet's (token_store::spend_call).
#pragma once

#include <chrono>
#include <vector>

#include "token_broker/core/clock.hpp"

namespace token_broker {

inline constexpr std::chrono::milliseconds call_budget_window = std::chrono::hours{1};

class call_window {
 public:
  // How long from `now` until one more call keeps within `limit` calls per window; 0: now.
  std::chrono::milliseconds wait(time_point now, unsigned limit) const;
  void record(time_point now);

 private:
  std::vector<time_point> calls_;  // within the window, oldest first; empty for most kinds
};

}  // namespace token_broker
