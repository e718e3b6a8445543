// What GET /metrics counts (SPEC §6): requests by route and status, the request-duration
// histogram, and each app's upstream results. Counting is a relaxed atomic add, because it
// happens on the hot path, into a shard of the counting thread's own so that workers never
// write the same cache line; rendering to Prometheus text sums the shards when scraped.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/credentials/credential.hpp"

namespace token_broker {

class request_metrics {
 public:
  // The `route` label values: the route table's labels (fixed text, never the raw target,
  // which may hold a secret), then "other" (unknown paths, wrong methods) and "malformed"
  // (requests that could not be parsed at all).
  static constexpr std::size_t max_routes = 64;
  explicit request_metrics(std::vector<std::string_view> table_labels);
  std::size_t other() const { return names_.size() - 2; }
  std::size_t malformed() const { return names_.size() - 1; }

  // `route`: an index into the table's labels, or other() or malformed().
  void record(std::size_t route, unsigned status, std::chrono::nanoseconds duration);
  // token_broker_requests_total and token_broker_request_duration_seconds.
  void render(std::string& out) const;

 private:
  // Every status the API answers with; anything else is counted as code="other".
  static constexpr std::array<unsigned, 10> statuses = {200, 400, 401, 403, 404,
                                                        405, 413, 431, 500, 503};
  // Upper bounds in seconds: a hot-path answer takes microseconds, a cold one an upstream call.
  static constexpr std::array<double, 14> bucket_bounds = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10};

  struct alignas(64) shard {
    std::array<std::array<std::atomic<std::uint64_t>, statuses.size() + 1>, max_routes> requests{};
    std::array<std::atomic<std::uint64_t>, bucket_bounds.size() + 1> buckets{};  // not cumulative
    std::atomic<std::uint64_t> duration_sum_ns{0};
  };
  // More threads than shards share some; a thread keeps the shard it first drew.
  static constexpr std::size_t shard_count = 8;
  shard& this_threads_shard();
  std::uint64_t sum(
      const std::function<const std::atomic<std::uint64_t>&(const shard&)>& counter) const;

  std::vector<std::string_view> names_;
  std::array<shard, shard_count> shards_{};
};

// One credential's upstream results. Failures are rare, so they take a lock (one for every
// credential) and their counts are allocated on the first; successes take neither. A hundred
// thousand credentials hold one of these each.
class upstream_metrics {
 public:
  void record_ok() { ok_.fetch_add(1, std::memory_order_relaxed); }
  void record_failure(int errcode);

  std::uint64_t ok() const { return ok_.load(std::memory_order_relaxed); }
  // errcode → count
  std::map<int, std::uint64_t> failures() const;

 private:
  std::atomic<std::uint64_t> ok_{0};
  std::unique_ptr<std::map<int, std::uint64_t>> failures_;  // under failures_mutex
};

class app_set;
struct third_party_set;

// How metrics and /readyz name a credential that is not an app's: "isv", "crm-suite",
// "crm-suite/wwcorpA…" (SPEC §6).
std::string credential_label(const credential_id& id);

// The whole GET /metrics page. `redis_up` is empty when no Redis is configured (then the
// gauge is left out rather than reporting a Redis that does not exist as down).
std::string render_metrics(const request_metrics& requests, const app_set& apps,
                           const third_party_set& third_party, std::optional<bool> redis_up);

}  // namespace token_broker
