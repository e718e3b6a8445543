// The gateway's metrics (SPEC §6): calls by app, API path and outcome, their duration by app,
// and budget refusals. A gateway call costs an upstream round trip, so counting under a lock
// costs nothing worth measuring.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace token_broker {

class gateway_metrics {
 public:
  // `api` is already a capped label (api_labels).
  void record(std::string_view app, std::string_view api, std::string_view outcome,
              std::chrono::nanoseconds duration);
  void record_rejection(std::string_view app, std::string_view api);
  // token_broker_gateway_requests_total, token_broker_gateway_request_duration_seconds,
  // token_broker_gateway_budget_rejections_total.
  void render(std::string& out) const;

 private:
  static constexpr std::array<double, 12> bucket_bounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                           0.5,   1,    2.5,   5,    10,  30};
  struct histogram {
    std::array<std::uint64_t, bucket_bounds.size() + 1> buckets{};  // not cumulative
    double sum_seconds = 0;
  };

  mutable std::mutex mutex_;
  // By app, then API, (then outcome), each looked up by a view: counting a call allocates
  // nothing once its series exists.
  template <class Value>
  using by_name = std::map<std::string, Value, std::less<>>;
  by_name<by_name<by_name<std::uint64_t>>> calls_;
  by_name<by_name<std::uint64_t>> rejections_;
  std::map<std::string, histogram, std::less<>> durations_;  // by app
};

}  // namespace token_broker
