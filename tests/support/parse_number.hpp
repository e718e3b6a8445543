// A whole number from a command-line flag's value, within bounds, or an error naming the flag:
// shared by the test and benchmark tools (fake-wecom, bench-fan-in).
#pragma once

#include <stdexcept>
#include <string>

namespace token_broker {

inline long parse_number(const std::string& flag, const std::string& text, long min, long max) {
  std::size_t used = 0;
  long value = 0;
  try {
    value = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < min || value > max) {
    throw std::invalid_argument(flag + ": expected a number from " + std::to_string(min) + " to " +
                                std::to_string(max));
  }
  return value;
}

}  // namespace token_broker
