// The gateway's budget (SPEC §8): per corp and WeCom API path, at most `per_minute` and
// `per_hour` calls and `concurrency` calls in flight (0 = no cap), so that the broker refuses
// a call before WeCom would block the API for a minute or an hour. Fleet-wide through Redis
// when configured, per process without it. The window rule is budget_window.hpp's.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/core/clock.hpp"

namespace token_broker {

class redis_connection;

// A call the budget let through. While it lives it holds one place of the concurrency cap;
// destroying it gives the place back (once). Move-only. Default-constructed: nothing held.
class budget_grant {
 public:
  // What a grant holds: its destructor gives the place back.
  class place {
   public:
    virtual ~place() = default;
  };

  budget_grant() = default;
  explicit budget_grant(std::unique_ptr<place> held) : held_(std::move(held)) {}

  // It holds a place of a concurrency cap (only when that cap is set).
  bool holds_place() const { return held_ != nullptr; }
  // Gives the place back now rather than at destruction.
  void release() { held_.reset(); }

 private:
  std::unique_ptr<place> held_;
};

struct budget_refusal {
  std::chrono::seconds retry_after;  // when a call may pass again (>= 1 s)
  std::string_view cap;              // "per_minute", "per_hour" or "concurrency" (static strings)
};

using budget_decision = std::variant<budget_grant, budget_refusal>;

class api_budget {
 public:
  virtual ~api_budget() = default;
  // One call of `api` (a WeCom path such as "cgi-bin/message/send") for `corpid`: counted and
  // granted when every cap allows it; refused otherwise, counting nothing. Called from many
  // threads (one per HTTP worker) at once; never throws for Redis trouble.
  // `corpid` and `api` must outlive the awaited call.
  virtual asio::awaitable<budget_decision> try_acquire(std::string_view corpid,
                                                       std::string_view api) = 0;
  // The same decision at once when it needs no wait (a budget kept in this process), else
  // nullopt and try_acquire is to be awaited: the common case without a coroutine.
  virtual std::optional<budget_decision> decide_now(std::string_view /*corpid*/,
                                                    std::string_view /*api*/) {
    return std::nullopt;
  }
};

// The time a local budget counts on: the boot clock, or a test's.
using budget_clock = std::function<time_point()>;

// Per process: every (corp, API) counted in memory, a few hundred bytes each; idle ones are
// dropped as the table grows.
std::unique_ptr<api_budget> make_local_budget(const api_budget_limits& limits,
                                              budget_clock now = &clock::now);

// Fleet-wide: one script per call on `redis` (EVALSHA, one round trip), on Redis's own clock,
// under the keys
//   {key_prefix}gateway:{corpid}:{api}         a hash of bucket counts, expiring when idle
//   {key_prefix}gateway_leases:{corpid}:{api}  the calls in flight, a sorted set of lease ids
//                                              scored by their deadline (concurrency > 0 only)
// A lease not given back (its holder crashed) frees itself after `lease_ttl`, which must
// exceed the longest call. While Redis cannot be reached, a per-process budget with the same
// limits stands in.
std::unique_ptr<api_budget> make_redis_budget(const api_budget_limits& limits,
                                              std::shared_ptr<redis_connection> redis,
                                              std::string key_prefix,
                                              std::chrono::milliseconds lease_ttl);

}  // namespace token_broker
