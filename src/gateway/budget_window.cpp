#include "token_broker/gateway/budget_window.hpp"

#include <algorithm>
#include <numeric>

namespace token_broker {

std::int64_t bucket_of(std::int64_t now_ms, const budget_window_shape& shape) {
  const auto width = shape.bucket_width.count();
  // Floor division, so that an instant before the epoch still falls in the bucket below it.
  return now_ms >= 0 ? now_ms / width : -((-now_ms + width - 1) / width);
}

std::chrono::milliseconds budget_window_wait(std::span<const std::uint32_t> covering_oldest_first,
                                             std::uint32_t cap, std::int64_t now_ms,
                                             const budget_window_shape& shape) {
  using std::chrono::milliseconds;
  const std::uint64_t counted =
      std::accumulate(covering_oldest_first.begin(), covering_oldest_first.end(), std::uint64_t{0});
  if (cap == 0 || counted + 1 <= cap) return milliseconds{0};
  // The covering buckets run from current - buckets to current; the i-th oldest stops covering
  // once the period no longer reaches into it, at the end of bucket current + i.
  const auto current = bucket_of(now_ms, shape);
  std::uint64_t freed = 0;
  for (std::size_t i = 0; i < covering_oldest_first.size(); ++i) {
    freed += covering_oldest_first[i];
    if (counted - freed + 1 <= cap) {
      const auto leaves_at = (current + 1 + static_cast<std::int64_t>(i)) * shape.bucket_width;
      return leaves_at - milliseconds{now_ms};
    }
  }
  // Unreachable with cap >= 1: once every bucket has left, the call fits.
  return shape.period() + shape.bucket_width;
}

void budget_verdict::consider(std::string_view cap, std::chrono::milliseconds wait) {
  if (wait <= std::chrono::milliseconds{0}) return;
  if (cap_.empty() || wait > wait_) {
    cap_ = cap;
    wait_ = wait;
  }
}

std::chrono::seconds budget_verdict::retry_after() const {
  return std::max(std::chrono::seconds{1}, std::chrono::ceil<std::chrono::seconds>(wait_));
}

void budget_window::advance(std::int64_t now_ms) {
  const auto bucket = bucket_of(now_ms, *shape_);
  if (bucket <= newest_) return;
  const auto size = static_cast<std::int64_t>(shape_->covering());
  if (bucket - newest_ >= size) {
    std::fill(std::begin(counts_), std::end(counts_), 0);
  } else {
    for (auto passed = newest_ + 1; passed <= bucket; ++passed) counts_[passed % size] = 0;
  }
  newest_ = bucket;
}

void budget_window::covering(std::int64_t now_ms, std::span<std::uint32_t> out) const {
  const auto size = static_cast<std::int64_t>(shape_->covering());
  const auto current = std::max(bucket_of(now_ms, *shape_), newest_);
  for (std::int64_t i = 0; i < size; ++i) {
    const auto bucket = current - size + 1 + i;
    const bool held = bucket >= 0 && bucket <= newest_ && bucket > newest_ - size;
    out[static_cast<std::size_t>(i)] = held ? counts_[bucket % size] : 0;
  }
}

void budget_window::count(std::int64_t now_ms) {
  advance(now_ms);
  ++counts_[newest_ % static_cast<std::int64_t>(shape_->covering())];
}

bool budget_window::empty(std::int64_t now_ms) const {
  std::uint32_t counts[max_covering_buckets];
  const std::span<std::uint32_t> covered(counts, shape_->covering());
  covering(now_ms, covered);
  return std::all_of(covered.begin(), covered.end(), [](std::uint32_t n) { return n == 0; });
}

}  // namespace token_broker
