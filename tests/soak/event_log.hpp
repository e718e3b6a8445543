// A timeline of what the soak did (chaos events, phases), kept for the logs directory and
// printed as it happens when SOAK_VERBOSE is set: with the brokers' logs it explains a finding.
#pragma once

#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "findings.hpp"

namespace token_broker::soak {

struct event_log_state {
  std::mutex mutex;
  std::vector<std::string> lines;
  bool verbose = false;
};

inline event_log_state& event_log() {
  static event_log_state state;
  return state;
}

inline void log_event(const std::string& what) {
  auto line = at_time(steady::now()) + " " + what;
  auto& log = event_log();
  const std::scoped_lock lock(log.mutex);
  if (log.verbose) std::cout << line << std::endl;
  log.lines.push_back(std::move(line));
}

}  // namespace token_broker::soak
