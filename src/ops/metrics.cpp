#include "token_broker/ops/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <stdexcept>

#include "token_broker/broker.hpp"

namespace token_broker {
namespace {

void append_metric_header(std::string& out, std::string_view name, std::string_view type,
                          std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

request_metrics::request_metrics(std::vector<std::string_view> table_labels)
    : names_(std::move(table_labels)) {
  names_.push_back("other");
  names_.push_back("malformed");
  if (names_.size() > max_routes) throw std::logic_error("more routes than request_metrics counts");
}

request_metrics::shard& request_metrics::this_threads_shard() {
  static std::atomic<std::size_t> threads_seen{0};
  thread_local const std::size_t drawn = threads_seen.fetch_add(1, std::memory_order_relaxed);
  return shards_[drawn % shard_count];
}

void request_metrics::record(std::size_t route, unsigned status,
                             std::chrono::nanoseconds duration) {
  auto& mine = this_threads_shard();
  const auto status_slot = static_cast<std::size_t>(
      std::find(statuses.begin(), statuses.end(), status) - statuses.begin());
  mine.requests[route][status_slot].fetch_add(1, std::memory_order_relaxed);

  const double seconds = std::chrono::duration<double>(duration).count();
  const auto bucket = static_cast<std::size_t>(
      std::lower_bound(bucket_bounds.begin(), bucket_bounds.end(), seconds) -
      bucket_bounds.begin());
  mine.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  mine.duration_sum_ns.fetch_add(
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, duration.count())),
      std::memory_order_relaxed);
}

std::uint64_t request_metrics::sum(
    const std::function<const std::atomic<std::uint64_t>&(const shard&)>& counter) const {
  std::uint64_t total = 0;
  for (const auto& each : shards_) total += counter(each).load(std::memory_order_relaxed);
  return total;
}

void request_metrics::render(std::string& out) const {
  append_metric_header(out, "token_broker_requests_total", "counter",
                       "HTTP requests answered, by route and status code.");
  for (std::size_t route = 0; route < names_.size(); ++route) {
    for (std::size_t slot = 0; slot <= statuses.size(); ++slot) {
      const auto count =
          sum([&](const shard& each) -> auto& { return each.requests[route][slot]; });
      if (count == 0) continue;
      const std::string code = slot < statuses.size() ? std::to_string(statuses[slot]) : "other";
      fmt::format_to(std::back_inserter(out),
                     "token_broker_requests_total{{route=\"{}\",code=\"{}\"}} {}\n", names_[route],
                     code, count);
    }
  }

  append_metric_header(out, "token_broker_request_duration_seconds", "histogram",
                       "Time from a parsed request to its answer being ready.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bucket_bounds.size(); ++i) {
    cumulative += sum([&](const shard& each) -> auto& { return each.buckets[i]; });
    if (i == bucket_bounds.size()) break;
    fmt::format_to(std::back_inserter(out),
                   "token_broker_request_duration_seconds_bucket{{le=\"{}\"}} {}\n",
                   bucket_bounds[i], cumulative);
  }
  const auto sum_ns = sum([](const shard& each) -> auto& { return each.duration_sum_ns; });
  fmt::format_to(std::back_inserter(out),
                 "token_broker_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n"
                 "token_broker_request_duration_seconds_sum {}\n"
                 "token_broker_request_duration_seconds_count {}\n",
                 cumulative, static_cast<double>(sum_ns) / 1e9, cumulative);
}

namespace {
std::mutex failures_mutex;
}  // namespace

void upstream_metrics::record_failure(int errcode) {
  const std::lock_guard lock(failures_mutex);
  if (!failures_) failures_ = std::make_unique<std::map<int, std::uint64_t>>();
  ++(*failures_)[errcode];
}

std::map<int, std::uint64_t> upstream_metrics::failures() const {
  const std::lock_guard lock(failures_mutex);
  return failures_ ? *failures_ : std::map<int, std::uint64_t>{};
}

namespace {

// A label value as Prometheus's text format writes it.
std::string escaped_label(std::string_view value) {
  std::string escaped;
  for (const char c : value) {
    if (c == '\\' || c == '"') escaped += '\\';
    escaped += c == '\n' ? std::string_view("\\n") : std::string_view(&c, 1);
  }
  return escaped;
}

}  // namespace

std::string credential_label(const credential_id& id) {
  std::string label;
  for (const auto value : naming_values(id)) {
    if (!label.empty()) label += '/';
    label += value;
  }
  return label;
}

std::string render_metrics(const request_metrics& requests, const app_set& apps,
                           const third_party_set& third_party, std::optional<bool> redis_up) {
  std::string out;
  out.reserve(4096 + apps.in_order().size() * 512);
  append_metric_header(out, "token_broker_build_info", "gauge", "The running version.");
  fmt::format_to(std::back_inserter(out), "token_broker_build_info{{version=\"{}\"}} 1\n",
                 TOKEN_BROKER_VERSION);
  requests.render(out);

  // App, provider and suite ids are [A-Za-z0-9_.-] and kinds fixed words: label values that
  // need no escaping. Corpids come from WeCom too, so those are escaped.
  const auto each_credential = [&](auto&& write) {
    for (const auto& app : apps.in_order()) {
      for (const auto* credential : app.credentials()) {
        write(app.app->id, to_string(credential->id().kind), *credential);
      }
    }
    for (const auto* credential : third_party.credentials()) {
      write(escaped_label(credential_label(credential->id())), to_string(credential->id().kind),
            *credential);
    }
  };
  append_metric_header(out, "token_broker_upstream_requests_total", "counter",
                       "Credential calls upstream made by this process, by app, kind and result.");
  each_credential([&](const std::string& app, std::string_view kind,
                      const credential_refresher& credential) {
    const auto& results = credential.upstream_results();
    std::uint64_t failed = 0;
    for (const auto& [errcode, count] : results.failures()) failed += count;
    fmt::format_to(std::back_inserter(out),
                   "token_broker_upstream_requests_total{{app=\"{0}\",kind=\"{1}\",result=\"ok\"}} "
                   "{2}\n"
                   "token_broker_upstream_requests_total{{app=\"{0}\",kind=\"{1}\",result="
                   "\"error\"}} {3}\n",
                   app, kind, results.ok(), failed);
  });
  append_metric_header(out, "token_broker_refresh_failures_total", "counter",
                       "Failed credential calls by app, kind and WeCom errcode (-1: network, TLS, "
                       "HTTP or an unreadable answer).");
  each_credential([&](const std::string& app, std::string_view kind,
                      const credential_refresher& credential) {
    for (const auto& [errcode, count] : credential.upstream_results().failures()) {
      fmt::format_to(std::back_inserter(out),
                     "token_broker_refresh_failures_total{{app=\"{}\",kind=\"{}\",errcode=\"{}\"}} "
                     "{}\n",
                     app, kind, errcode, count);
    }
  });
  append_metric_header(out, "token_broker_token_expiry_timestamp_seconds", "gauge",
                       "Unix time at which the servable credential expires; 0 when there is none.");
  const auto now = clock::now();
  each_credential(
      [&](const std::string& app, std::string_view kind, const credential_refresher& credential) {
        const auto view = credential.view();
        const token* current = view->servable(now);
        fmt::format_to(std::back_inserter(out),
                       "token_broker_token_expiry_timestamp_seconds{{app=\"{}\",kind=\"{}\"}} {}\n",
                       app, kind, current ? unix_seconds(current->expires_at_wall) : 0);
      });
  if (redis_up) {
    append_metric_header(out, "token_broker_redis_up", "gauge",
                         "1 while the connection to Redis is up.");
    fmt::format_to(std::back_inserter(out), "token_broker_redis_up {}\n", *redis_up ? 1 : 0);
  }
  return out;
}

}  // namespace token_broker
