// The window rule of the gateway's budget (SPEC §8), as pure arithmetic on counts and times:
// the per-process budget and the Redis script apply the same rule, and this is where it is
// defined and tested.
//
// A window of `period` is cut into `buckets` sub-buckets of `bucket_width`, aligned on
// multiples of the width since the clock's epoch. A call at `now` is judged on the buckets
// that cover [now - period, now]: the current one and the `buckets` before it (buckets + 1 in
// all, oldest first). It passes when the calls counted in them plus this one stay within the
// cap. Counting the partly covered oldest bucket in full makes the rule strict: no interval of
// `period` ever holds more than `cap` granted calls, whatever their timing (WeCom's own block
// lasts a minute or an hour), at the price of refusing up to one bucket's width early.
// Memory is one counter per bucket, never a log of calls.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>

namespace token_broker {

struct budget_window_shape {
  std::string_view cap;  // "per_minute", "per_hour": names the cap in refusals
  char tag;              // names the window's buckets in Redis ('m', 'h')
  std::chrono::milliseconds bucket_width;
  unsigned buckets;  // per period

  std::chrono::milliseconds period() const { return bucket_width * buckets; }
  // Buckets judged per call: the period's and the partly covered one before it.
  unsigned covering() const { return buckets + 1; }
};

inline constexpr budget_window_shape minute_window{"per_minute", 'm', std::chrono::seconds{10}, 6};
inline constexpr budget_window_shape hour_window{"per_hour", 'h', std::chrono::minutes{5}, 12};
inline constexpr unsigned max_covering_buckets = 13;  // hour_window's

// The bucket that holds the instant `now_ms` (milliseconds since the clock's epoch, >= 0).
std::int64_t bucket_of(std::int64_t now_ms, const budget_window_shape& shape);

// How long from `now_ms` until one more call fits within `cap` (> 0), given the counts of the
// covering buckets at `now_ms`, oldest first: 0 when it fits now; else the time until enough
// of the oldest counted buckets have left the covering ones. Only the counts already made are
// considered: calls granted meanwhile are not foreseen.
std::chrono::milliseconds budget_window_wait(std::span<const std::uint32_t> covering_oldest_first,
                                             std::uint32_t cap, std::int64_t now_ms,
                                             const budget_window_shape& shape);

// A call refused for its concurrency cap may pass as soon as any call in flight ends, which
// nothing foretells: it is told to come back in a second.
inline constexpr std::chrono::seconds concurrency_retry{1};

// The caps' judgement of one call, cap by cap: refused when any cap refuses, and then until
// the longest of their waits.
class budget_verdict {
 public:
  // `wait` is 0 when the cap admits the call.
  void consider(std::string_view cap, std::chrono::milliseconds wait);
  bool admitted() const { return cap_.empty(); }
  // The cap that refuses for longest.
  std::string_view cap() const { return cap_; }
  // Whole seconds, rounded up, at least 1 (Retry-After).
  std::chrono::seconds retry_after() const;

 private:
  std::string_view cap_;
  std::chrono::milliseconds wait_{0};
};

// The counts of one window for one (corp, API) in this process: a ring of the covering
// buckets.
class budget_window {
 public:
  explicit budget_window(const budget_window_shape& shape) : shape_(&shape) {}
  const budget_window_shape& shape() const { return *shape_; }

  // The covering counts at `now_ms`, oldest first, written to `out` (covering() of them). A
  // time earlier than the newest counted bucket is read as that bucket's (clocks here are
  // monotonic; this only guards the arithmetic).
  void covering(std::int64_t now_ms, std::span<std::uint32_t> out) const;
  // Counts one call at `now_ms`.
  void count(std::int64_t now_ms);
  // No call of it is counted at `now_ms` any more.
  bool empty(std::int64_t now_ms) const;

 private:
  // Forgets the buckets that no longer cover `now_ms` and makes its bucket the newest.
  void advance(std::int64_t now_ms);

  const budget_window_shape* shape_;
  std::int64_t newest_ = 0;  // the bucket counted in counts_[newest_ % covering]
  std::uint32_t counts_[max_covering_buckets] = {};
};

}  // namespace token_broker
