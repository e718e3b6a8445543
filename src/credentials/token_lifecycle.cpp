#include "token_broker/credentials/token_lifecycle.hpp"

#include <algorithm>

namespace token_broker {
namespace {

using std::chrono::milliseconds;

// A token handed out must still be usable by the caller: stop serving it this long before
// its expiry. Small, because in upstream behaviours (a) and (b) no new token can be had
// before the old one expires, so callers wait out this margin.
milliseconds serve_margin(milliseconds lifetime) {
  return std::min<milliseconds>(std::chrono::seconds{1}, lifetime / 10);
}

// A token from elsewhere carries no latency of the call that issued it, and upstream counts
// its expiry from when it answered: asking before this much past the expiry may bring it
// back once more (upstream behaviours a and b).
constexpr milliseconds adopted_latency_allowance{1000};

milliseconds scaled(milliseconds span, double unit) {
  return milliseconds{static_cast<milliseconds::rep>(static_cast<double>(span.count()) * unit)};
}

}  // namespace

failure_class classify_errcode(int errcode) {
  switch (errcode) {
    case 45009:  // API call frequency exceeded
      return failure_class::throttled;
    case 40001:  // invalid secret
    case 40013:  // invalid corpid
    case 40091:  // invalid secret (app disabled or secret reset)
    case 41002:  // corpid missing
    case 41004:  // corpsecret missing
    case 48002:  // API forbidden for this app
    case 60020:  // caller's IP is not on the app's whitelist
      return failure_class::configuration;
    default:  // -1 system busy, 45033 concurrency limit, and whatever WeCom adds
      return failure_class::transient;
  }
}

token token_from_fetch(const fetched_token& fetched) {
  const auto expires_at = fetched.sent_at + fetched.expires_in;
  return token{
      .value = fetched.value,
      .issued_at = fetched.sent_at,
      .expires_at = expires_at,
      .serve_until = expires_at - serve_margin(fetched.expires_in),
      .replaceable_at = fetched.received_at + fetched.expires_in,
      .expires_at_wall = fetched.sent_at_wall + fetched.expires_in,
  };
}

token token_from_expiry(std::string value, time_point expires_at, time_point now,
                        wall_time_point wall_now) {
  const auto lifetime = std::chrono::duration_cast<milliseconds>(expires_at - now);
  return token{
      .value = std::move(value),
      .issued_at = now,
      .expires_at = expires_at,
      .serve_until = expires_at - serve_margin(std::max(lifetime, milliseconds{0})),
      .replaceable_at = expires_at + adopted_latency_allowance,
      .expires_at_wall =
          wall_now + std::chrono::duration_cast<wall_clock::duration>(expires_at - now),
  };
}

std::string_view to_string(app_state state) {
  switch (state) {
    case app_state::fresh:
      return "fresh";
    case app_state::refreshing:
      return "refreshing";
    case app_state::failing:
      return "failing";
    case app_state::unknown:
      break;
  }
  return "unknown";
}

const token* token_lifecycle::servable(time_point now) const {
  if (!token_ || revoked_ || now >= token_->serve_until) return nullptr;
  return &*token_;
}

time_point token_lifecycle::next_attempt_at() const {
  if (!last_attempt_started_) return scheduled_at_;
  return std::max(scheduled_at_, *last_attempt_started_ + policy_.min_interval);
}

app_state token_lifecycle::state(time_point now) const {
  if (in_flight_) return app_state::refreshing;
  if (last_failure_) return app_state::failing;
  if (servable(now)) return app_state::fresh;
  return app_state::unknown;
}

void token_lifecycle::attempt_started(time_point now) {
  in_flight_ = true;
  last_attempt_started_ = now;
}

void token_lifecycle::attempt_succeeded(const fetched_token& fetched, double jitter_unit) {
  in_flight_ = false;
  consecutive_failures_ = 0;
  last_failure_.reset();

  auto fetched_token = token_from_fetch(fetched);
  const bool same_token = token_ && token_->value == fetched.value;
  if (!same_token) {
    token_ = std::move(fetched_token);
    revoked_ = false;
    schedule_refresh_of_held(jitter_unit);
    return;
  }

  // Upstream handed back the token we hold. Its expiry never moves forward: in behaviour (a)
  // the full expires_in comes back while the original expiry stands. expires_in counts whole
  // seconds, so the answer puts the true expiry before received + expires_in + 1 s; only if
  // our expiry lies beyond that does upstream know better (the token ends sooner).
  const auto answer_latest = fetched.received_at + fetched.expires_in + std::chrono::seconds{1};
  if (token_->expires_at > answer_latest) {
    token_->expires_at = fetched_token.expires_at;
    token_->serve_until = fetched_token.serve_until;
    token_->expires_at_wall = fetched_token.expires_at_wall;
  }
  token_->replaceable_at = std::min(token_->replaceable_at, answer_latest);

  // A report of this token that came in while the call was under way is not answered by
  // it: upstream may not have acted on the revocation yet. Ask again.
  if (revoked_ && revoked_at_ > *last_attempt_started_) {
    scheduled_at_ = fetched.received_at;
    return;
  }
  revoked_ = false;  // upstream vouches for it: the report was wrong

  // Asking again before upstream lets the token go only brings it back once more, so wait
  // until it is surely replaceable; callers wait out the gap. If upstream returned a token
  // that is already past that point, its clock runs behind ours: retry shortly, not in a loop.
  scheduled_at_ = std::max(token_->replaceable_at, fetched.received_at + policy_.retry_min);
}

void token_lifecycle::attempt_failed(fetch_failure failure, time_point now, double jitter_unit) {
  in_flight_ = false;
  if (failure.kind == failure_class::rationed) {
    // No call was made and none may be before the budget allows: the held value cannot be
    // replaced, so it is served until its expiry, even one reported dead (SPEC §3).
    revoked_ = false;
    scheduled_at_ = now + failure.retry_after;
    last_failure_ = std::move(failure);
    return;
  }
  ++consecutive_failures_;
  scheduled_at_ = now + backoff(failure.kind, jitter_unit);
  last_failure_ = std::move(failure);
}

void token_lifecycle::attempt_withdrawn(std::optional<time_point> retry_at) {
  in_flight_ = false;
  if (retry_at) scheduled_at_ = std::max(scheduled_at_, *retry_at);
}

bool token_lifecycle::adopt(const token& candidate, double jitter_unit) {
  if (token_ && candidate.value == token_->value) {
    // Someone who saw this token too may know it ends sooner (behaviour b); nobody can know
    // that it ends later than its first answer said.
    if (revoked_ || candidate.expires_at >= token_->expires_at - expiry_rounding) return false;
    token_->expires_at = candidate.expires_at;
    token_->serve_until = std::min(token_->serve_until, candidate.serve_until);
    token_->replaceable_at = std::min(token_->replaceable_at, candidate.replaceable_at);
    token_->expires_at_wall = candidate.expires_at_wall;
    scheduled_at_ = std::min(scheduled_at_, token_->replaceable_at);
    return true;
  }
  if (token_ && !revoked_ && candidate.expires_at <= token_->expires_at) return false;
  token_ = candidate;
  revoked_ = false;
  consecutive_failures_ = 0;
  last_failure_.reset();
  schedule_refresh_of_held(jitter_unit);
  return true;
}

bool token_lifecycle::invalidate(std::string_view value, time_point now) {
  if (!token_ || token_->value != value) return false;
  if (!revoked_) {
    revoked_ = true;
    revoked_at_ = now;
    scheduled_at_ = now;  // as soon as the min_interval floor allows
  }
  return true;
}

void token_lifecycle::schedule_refresh_of_held(double jitter_unit) {
  // Refresh at expiry − min(ahead, lifetime/2) − jitter. Jitter is capped at a quarter of the
  // lifetime so that a short-lived token is not refreshed the moment it arrives.
  const auto lifetime =
      std::chrono::duration_cast<milliseconds>(token_->expires_at - token_->issued_at);
  const auto lead = std::min<milliseconds>(policy_.ahead, lifetime / 2) +
                    scaled(std::min<milliseconds>(policy_.jitter, lifetime / 4), jitter_unit);
  scheduled_at_ = token_->expires_at - lead;
}

milliseconds token_lifecycle::backoff(failure_class kind, double jitter_unit) const {
  if (kind == failure_class::configuration) return policy_.retry_max;
  // Exponential from retry_min, doubling per consecutive failure, capped at retry_max.
  // 45009 starts three doublings higher: retrying into a frequency limit prolongs it.
  const int doublings =
      std::min(consecutive_failures_ - 1 + (kind == failure_class::throttled ? 3 : 0), 30);
  const auto ceiling =
      std::min<milliseconds>(policy_.retry_max, policy_.retry_min * (std::int64_t{1} << doublings));
  // "Equal jitter": half fixed, half random, so replicas and apps spread out but the backoff
  // still grows; never below retry_min.
  return std::max(policy_.retry_min, ceiling / 2 + scaled(ceiling / 2, jitter_unit));
}

}  // namespace token_broker
