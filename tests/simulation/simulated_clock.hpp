// Simulated time for the credential engine: a clock that moves only when a test moves it, and
// a loop that runs an io_context on it. Asio's timers on this clock fire as the test advances
// it, so hours of a credential's life run in a fraction of a second, the same every run.
#pragma once

#include <algorithm>
#include <chrono>

#include "token_broker/core/asio.hpp"
#include "token_broker/core/clock.hpp"

namespace token_broker::simulation {

struct simulated_clock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = boot_clock::time_point;  // the engine's time, whatever moves it
  static constexpr bool is_steady = true;

  static time_point now() noexcept { return current; }
  // Far from the epoch, which the lifecycle reads as "due at once".
  static void reset() { current = time_point(std::chrono::hours{1000}); }

  static inline time_point current = time_point(std::chrono::hours{1000});
  // How long the earliest timer has left, as the reactor last asked (see wait_traits below).
  static inline duration earliest_timer_in = duration::max();
};

using simulated_timer = asio::basic_waitable_timer<simulated_clock>;
}  // namespace token_broker::simulation

// The reactor sleeps (its timerfd) for as long as the earliest timer has left, in real time;
// on simulated time that is never right. Zero: every poll looks at the timers, and the ones
// the simulated clock has passed fire. What the earliest has left tells run_for how far the
// clock may jump.
template <>
struct boost::asio::wait_traits<token_broker::simulation::simulated_clock> {
  using clock = token_broker::simulation::simulated_clock;
  static clock::duration to_wait_duration(const clock::duration& left) {
    clock::earliest_timer_in = std::min(clock::earliest_timer_in, left);
    return {};
  }
  static clock::duration to_wait_duration(const clock::time_point& at) {
    return to_wait_duration(at - clock::now());
  }
};

namespace token_broker::simulation {

// Runs every handler that is ready, then moves the clock on to the earliest timer (by at
// least a millisecond, at most `longest_step`), until `span` of simulated time has passed.
inline void run_for(asio::io_context& io, simulated_clock::duration span,
                    simulated_clock::duration longest_step = std::chrono::seconds{1}) {
  const auto end = simulated_clock::now() + span;
  for (;;) {
    simulated_clock::earliest_timer_in = simulated_clock::duration::max();
    io.restart();
    io.poll();
    if (simulated_clock::now() >= end) break;
    const auto step = std::clamp<simulated_clock::duration>(
        simulated_clock::earliest_timer_in, std::chrono::milliseconds{1}, longest_step);
    simulated_clock::current = std::min(end, simulated_clock::now() + step);
  }
}

}  // namespace token_broker::simulation
