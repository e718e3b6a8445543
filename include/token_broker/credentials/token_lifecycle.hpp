// The life of one credential (an app's token, a ticket…) as pure decisions: when to call
// upstream, what a fetch result means, what may be handed out. No I/O and no clock of its own:
// time comes in as arguments, and so does randomness (a "unit" in [0, 1)), so every rule is
// unit-tested deterministically.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "token_broker/config/config.hpp"
#include "token_broker/credentials/fetch_result.hpp"

namespace token_broker {

// Expiries of one token that went through a store come back this close to the original
// (whole milliseconds, and the round trips of writing and reading them): only a larger
// difference is news, to a replica and to the store alike.
inline constexpr std::chrono::milliseconds expiry_rounding{100};

struct token {
  std::string value;
  time_point issued_at;  // when its request was sent (or when it was adopted)
  // Counted from the moment its request was sent, so latency never stretches it.
  time_point expires_at;
  // Handed out only before this: expires_at less a safety margin, so a caller that gets
  // the token still has time to use it.
  time_point serve_until;
  // Upstream may consider the token valid until as late as this (expires_at plus the
  // latency of the call that issued it); asking for a new one earlier can return it again.
  time_point replaceable_at;
  // expires_at on the wall clock, fixed when the token arrived, so that every answer about
  // one token gives the same Unix time.
  wall_time_point expires_at_wall;
};

// Builds the token a successful fetch describes, on its own (no previous token considered).
token token_from_fetch(const fetched_token& fetched);
// Builds a token from a known value and expiry, seen at `now` (= `wall_now` on the wall
// clock, which only dates the answers' expires_at): adopted from a store or another replica,
// so the latency of the call that issued it is unknown.
token token_from_expiry(std::string value, time_point expires_at, time_point now,
                        wall_time_point wall_now);

enum class app_state { unknown, fresh, refreshing, failing };
std::string_view to_string(app_state state);

class token_lifecycle {
 public:
  explicit token_lifecycle(const refresh_config& policy) : policy_(policy) {}
  // New settings (a reload) count from the next decision; the plan already made stands.
  void set_policy(const refresh_config& policy) { policy_ = policy; }

  // The token callers may be given at `now`, or nullptr.
  const token* servable(time_point now) const;
  // The token held, servable or not (expired, revoked), or nullptr.
  const token* held() const { return token_ ? &*token_ : nullptr; }

  // When the next gettoken call should start, min_interval floor included.
  time_point next_attempt_at() const;
  bool in_flight() const { return in_flight_; }
  app_state state(time_point now) const;
  // Why the last attempt failed; empty once an attempt succeeds.
  const std::optional<fetch_failure>& last_failure() const { return last_failure_; }

  // Replicas are agreeing on who calls upstream: callers wait as for a call in flight, but
  // no call has started (the min_interval floor does not count from here).
  void attempt_pending() { in_flight_ = true; }
  void attempt_started(time_point now);
  // The pending attempt ends without a call of ours: another replica's token was adopted, or
  // another replica asks that nobody calls before `retry_at`.
  void attempt_withdrawn(std::optional<time_point> retry_at);
  void attempt_succeeded(const fetched_token& fetched, double jitter_unit);
  void attempt_failed(fetch_failure failure, time_point now, double jitter_unit);

  // After a failure, the next attempt is due at once (the min_interval floor still counts):
  // what it lacked has arrived.
  void retry_now() {
    if (last_failure_ && !in_flight_) scheduled_at_ = time_point{};
  }

  // Takes a token from elsewhere (a store, another replica) when it outlives the one held.
  // For the token held, learns only that it ends sooner (never later). True when it changed
  // what is held.
  bool adopt(const token& candidate, double jitter_unit);

  // A caller saw upstream reject `value`. True when `value` is the held token: it is no
  // longer served, and a new one is fetched as soon as the floor allows. Reports of a token
  // already replaced return false and change nothing.
  bool invalidate(std::string_view value, time_point now);
  // The held token was reported dead and not yet replaced.
  bool revoked() const { return token_ && revoked_; }

 private:
  void schedule_refresh_of_held(double jitter_unit);
  std::chrono::milliseconds backoff(failure_class kind, double jitter_unit) const;

  refresh_config policy_;
  std::optional<token> token_;
  bool revoked_ = false;
  time_point revoked_at_{};
  bool in_flight_ = false;
  std::optional<time_point> last_attempt_started_;
  time_point scheduled_at_{};  // before the floor; the clock's epoch: due at once
  int consecutive_failures_ = 0;
  std::optional<fetch_failure> last_failure_;
};

}  // namespace token_broker
