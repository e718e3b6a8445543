// What a gateway call names upstream: the WeCom path, checked; the query it forwards, with
// the app's token in place of any given; and the path as a metrics label, capped.
#pragma once

#include <mutex>
#include <set>
#include <string>
#include <string_view>

namespace token_broker {

// A WeCom API path such as "cgi-bin/message/send": segments of [A-Za-z0-9_.-], none empty,
// "." or "..", at most 256 bytes in all.
bool is_api_path(std::string_view path);

// The calls that hand out credentials: forwarded, they would fetch credentials past the
// broker's single flight and budgets, so the gateway refuses them (the broker's own
// endpoints serve them).
bool is_credential_path(std::string_view path);

// Appends the target upstream to `out` (a request's head): "/`path`?" and `query` with every
// access_token parameter dropped and access_token=`token` appended.
void append_forwarded_target(std::string& out, std::string_view path, std::string_view query,
                             std::string_view token);

// The `api` label of the gateway's metrics: the first 256 distinct paths as themselves, any
// later one "other", so that callers cannot grow the metrics without bound.
class api_labels {
 public:
  static constexpr std::size_t capacity = 256;
  // Valid as long as this object: labels are never dropped.
  const std::string& of(std::string_view path);

 private:
  std::mutex mutex_;
  std::set<std::string, std::less<>> seen_;  // found by string_view: no copy per call
  const std::string other_ = "other";
};

}  // namespace token_broker
