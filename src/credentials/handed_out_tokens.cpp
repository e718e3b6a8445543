#include "token_broker/credentials/handed_out_tokens.hpp"

#include <mutex>

namespace token_broker {

void handed_out_tokens::changed(const std::string& app_id, std::string_view before,
                                std::string_view after, time_point now) {
  if (before == after) return;
  const std::unique_lock lock(mutex_);
  if (!before.empty()) {
    if (const auto found = by_value_.find(std::string(before));
        found != by_value_.end() && found->second.app_id == app_id) {
      found->second.replaced_at = now;
      replaced_.emplace_back(now, std::string(before));
    }
  }
  if (!after.empty()) by_value_.insert_or_assign(std::string(after), holder{app_id, std::nullopt});
  forget_replaced_before(now - grace);
}

std::optional<std::string> handed_out_tokens::app_of(const std::string& value,
                                                     time_point now) const {
  const std::shared_lock lock(mutex_);
  const auto found = by_value_.find(value);
  if (found == by_value_.end()) return std::nullopt;
  const auto& [app_id, replaced_at] = found->second;
  if (replaced_at && *replaced_at + grace <= now) return std::nullopt;
  return app_id;
}

void handed_out_tokens::forget_replaced_before(time_point cutoff) {
  while (!replaced_.empty() && replaced_.front().first <= cutoff) {
    const auto& [at, value] = replaced_.front();
    // Unless it became current again since (a store's value adopted back), or was replaced
    // once more (then a later entry forgets it).
    if (const auto found = by_value_.find(value);
        found != by_value_.end() && found->second.replaced_at == at) {
      by_value_.erase(found);
    }
    replaced_.pop_front();
  }
}

}  // namespace token_broker
