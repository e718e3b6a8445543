// Violations of the soak's assertions, from any thread: counted per assertion, the first few
// kept word for word for the report. Times are printed as seconds into the soak.
#pragma once

#include <array>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace token_broker::soak {

using steady = std::chrono::steady_clock;

// The soak's time zero, so that findings, chaos events and broker logs can be lined up.
inline steady::time_point soak_started = steady::now();

inline std::string at_time(steady::time_point at) {
  char text[32];
  std::snprintf(text, sizeof text, "t=%.3fs",
                std::chrono::duration<double>(at - soak_started).count());
  return text;
}

// The assertions, numbered as in the report.
enum assertion : int {
  no_dead_token = 1,  // nothing served that upstream rejects (revoked: only before being told)
  no_needless_failure = 2,  // no failed request while a valid token existed
  gettoken_budget = 3,
  no_crash = 4,
  flat_memory = 5,
  redis_readers = 6,  // what readers straight from Redis see
};

class findings {
 public:
  void add(assertion which, std::string what) {
    const std::scoped_lock lock(mutex_);
    auto& kept = kept_[which];
    if (kept.size() < examples_kept) kept.push_back(std::move(what));
    ++counts_[which];
  }
  int count(assertion which) const {
    const std::scoped_lock lock(mutex_);
    return counts_[which];
  }
  std::vector<std::string> examples(assertion which) const {
    const std::scoped_lock lock(mutex_);
    return kept_[which];
  }

 private:
  static constexpr std::size_t examples_kept = 10;
  mutable std::mutex mutex_;
  std::array<int, 7> counts_{};
  std::array<std::vector<std::string>, 7> kept_;
};

}  // namespace token_broker::soak
