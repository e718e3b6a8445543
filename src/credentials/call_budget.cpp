#include "token_broker/credentials/call_budget.hpp"

#include <algorithm>

namespace token_broker {

std::chrono::milliseconds call_window::wait(time_point now, unsigned limit) const {
  const auto in_window = std::find_if(calls_.begin(), calls_.end(), [&](time_point call) {
    return call > now - call_budget_window;
  });
  const auto counted = static_cast<std::size_t>(calls_.end() - in_window);
  if (counted < limit) return std::chrono::milliseconds{0};
  if (limit == 0) return call_budget_window;
  // The call that must age out first for one more to fit.
  const auto frees = *(calls_.end() - limit) + call_budget_window;
  return std::chrono::ceil<std::chrono::milliseconds>(frees - now);
}

void call_window::record(time_point now) {
  std::erase_if(calls_, [&](time_point call) { return call <= now - call_budget_window; });
  calls_.push_back(now);
}

}  // namespace token_broker
