#include "token_broker/gateway/gateway_metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>

namespace token_broker {
namespace {

// The entry `name` of `table`, made (value-initialized) on first use.
template <class Table>
typename Table::mapped_type& counter(Table& table, std::string_view name) {
  auto found = table.find(name);
  if (found == table.end())
    found = table.emplace(std::string(name), typename Table::mapped_type{}).first;
  return found->second;
}

}  // namespace

void gateway_metrics::record(std::string_view app, std::string_view api, std::string_view outcome,
                             std::chrono::nanoseconds duration) {
  const double seconds = std::chrono::duration<double>(duration).count();
  const auto bucket = static_cast<std::size_t>(
      std::lower_bound(bucket_bounds.begin(), bucket_bounds.end(), seconds) -
      bucket_bounds.begin());
  const std::scoped_lock lock(mutex_);
  ++counter(counter(counter(calls_, app), api), outcome);
  auto& seen = counter(durations_, app);
  ++seen.buckets[bucket];
  seen.sum_seconds += seconds;
}

void gateway_metrics::record_rejection(std::string_view app, std::string_view api) {
  const std::scoped_lock lock(mutex_);
  ++counter(counter(rejections_, app), api);
}

// App ids are [A-Za-z0-9_.-], API paths the same with '/', outcomes fixed words: label
// values that need no escaping.
void gateway_metrics::render(std::string& out) const {
  const std::scoped_lock lock(mutex_);
  auto into = std::back_inserter(out);
  fmt::format_to(into,
                 "# HELP token_broker_gateway_requests_total Gateway calls by app, WeCom API path "
                 "and outcome.\n# TYPE token_broker_gateway_requests_total counter\n");
  for (const auto& [app, apis] : calls_) {
    for (const auto& [api, outcomes] : apis) {
      for (const auto& [outcome, count] : outcomes) {
        fmt::format_to(
            into,
            "token_broker_gateway_requests_total{{app=\"{}\",api=\"{}\",outcome=\"{}\"}} {}\n", app,
            api, outcome, count);
      }
    }
  }
  fmt::format_to(into,
                 "# HELP token_broker_gateway_request_duration_seconds Time from a gateway call's "
                 "request to its answer's head, by app.\n"
                 "# TYPE token_broker_gateway_request_duration_seconds histogram\n");
  for (const auto& [app, seen] : durations_) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bucket_bounds.size(); ++i) {
      cumulative += seen.buckets[i];
      fmt::format_to(
          into, "token_broker_gateway_request_duration_seconds_bucket{{app=\"{}\",le=\"{}\"}} {}\n",
          app, bucket_bounds[i], cumulative);
    }
    cumulative += seen.buckets.back();
    fmt::format_to(
        into,
        "token_broker_gateway_request_duration_seconds_bucket{{app=\"{0}\",le=\"+Inf\"}} "
        "{1}\ntoken_broker_gateway_request_duration_seconds_sum{{app=\"{0}\"}} {2}\n"
        "token_broker_gateway_request_duration_seconds_count{{app=\"{0}\"}} {1}\n",
        app, cumulative, seen.sum_seconds);
  }
  fmt::format_to(into,
                 "# HELP token_broker_gateway_budget_rejections_total Gateway calls refused by "
                 "the budget, without an upstream call.\n"
                 "# TYPE token_broker_gateway_budget_rejections_total counter\n");
  for (const auto& [app, apis] : rejections_) {
    for (const auto& [api, count] : apis) {
      fmt::format_to(into,
                     "token_broker_gateway_budget_rejections_total{{app=\"{}\",api=\"{}\"}} {}\n",
                     app, api, count);
    }
  }
}

}  // namespace token_broker
