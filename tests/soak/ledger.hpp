// What the soak knows about tokens, for judging every answer and every failure: which
// replica instance handed which token when, which ones were reported dead to whom, and when
// Redis was away. Shared by the client threads, the chaos thread and the Redis reader.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "fake_wecom.hpp"
#include "findings.hpp"
#include "token_broker/credentials/token_lifecycle.hpp"

namespace token_broker::soak {

using namespace std::chrono_literals;

// A replica process: which replica, and which of its lives (a restart is a new instance that
// knows only what Redis tells it).
struct instance {
  int replica = 0;
  int incarnation = 0;
  bool operator==(const instance&) const = default;
};

// How long one replica's news takes to reach the other through Redis: the event arrives in
// milliseconds, a replica following another's refresh looks every 200 ms. Generous, so that
// only a replica that never learns fails the rules.
inline constexpr std::chrono::milliseconds propagation{1000};

// A token counts as valid (usable) only with more than this left: the broker stops serving a
// token 1 s or a tenth of its lifetime (0.6 s here) before the expiry it knows, and it
// counts that expiry from when its request left, before connect and TLS.
inline constexpr std::chrono::milliseconds usable_margin{1000};

// How closely the replicas agree on a token's expiry: when two fetched the same token while
// Redis was away (upstream repeats it in behaviours a and b), each counts its expiry from its
// own call, and once Redis is back they settle differences larger than this, not smaller ones
// (a round trip blurs every reading by a few milliseconds, and settling those would rewrite
// every credential on every comparison). A promise is judged to this precision.
inline constexpr std::chrono::milliseconds expiry_precision = expiry_rounding;

// The brokers' upstream.timeout_ms: how long a call may be under way, so how long before a
// token's issue the replica that asked for it may have been killed.
inline constexpr std::chrono::milliseconds upstream_timeout{2000};

class ledger {
 public:
  explicit ledger(const fake::fake_wecom& fake) : fake_(fake) {}

  // `from` handed `token` of `app` to a client; `at`: when the answer arrived.
  void handed(const std::string& app, const std::string& token, instance from,
              steady::time_point at);
  // `from` answered a report that `token` is dead (at `at`); `replaced`: it answered
  // another token, which it has then written to Redis for the other replica.
  void told(const std::string& token, instance from, steady::time_point at, bool replaced);

  // Assertion 1: whether `to` must know, for a request sent at `sent`, that `token` is dead:
  // it answered a report of it itself before, or the other replica replaced it and that
  // reached `to` through Redis (see known_through_redis).
  bool was_told(const std::string& token, instance to, steady::time_point sent) const;
  // Whether some replica replaced `token` long enough before `at` for Redis to hold the
  // replacement (assertion 6).
  bool replaced_long_before(const std::string& token, steady::time_point at) const;

  // A token of `app` that a replica handed out, that upstream still accepts for more than
  // usable_margin, and for which `counts(handed_by, first_handed_at)` holds: described for the
  // report, or nothing.
  using handed_filter = std::function<bool(instance by, steady::time_point first_handed_at)>;
  std::optional<std::string> valid_token(const std::string& app, steady::time_point now,
                                         const handed_filter& counts) const;
  // Assertion 2's filter for a failure at `at` on `failed_at`: a token it handed itself, or one
  // the other replica (or an earlier life) handed that reached it through Redis.
  std::optional<std::string> valid_token_for_failure(const std::string& app, instance failed_at,
                                                     steady::time_point at) const;

  // Redis outages: from the stop until both replicas are connected again.
  void redis_down(steady::time_point at);
  void redis_whole(steady::time_point at);
  // Whether news written to Redis at `written` had reached every replica by `at`: Redis was
  // up, and `propagation` passed since the write or since the end of an outage after it
  // (a returning Redis is caught up by the replicas).
  bool known_through_redis(steady::time_point written, steady::time_point at) const;
  // Since when Redis has been whole; nothing during an outage.
  std::optional<steady::time_point> redis_whole_since() const;

  // A replica SIGKILLed at `at`: what it had fetched and not yet written to Redis is lost.
  void replica_killed(steady::time_point at);
  // Whether the one record of a token issued at `issued` may have been lost by `at`, so that
  // no replica could know its expiry: in behaviour (a) upstream hands that token again with
  // its full lifetime, and a replica that did not fetch it first can only learn the truth
  // from Redis. Lost: a replica was killed in between, or while the call that brought it was
  // under way (it may have been the one that asked: upstream answers a dead asker too), or
  // Redis was away (it starts empty) until less than `propagation` before `at`, the time the
  // replicas take to write back what they hold and learn from each other.
  bool expiry_knowledge_lost(steady::time_point issued, steady::time_point at) const;

 private:
  struct handed_token {
    std::optional<std::chrono::system_clock::time_point> true_expiry;
    std::vector<std::pair<instance, steady::time_point>> first_handed;  // per instance
  };
  struct report {
    instance by;
    steady::time_point at;
    bool replaced;
  };
  struct outage {
    steady::time_point from;
    std::optional<steady::time_point> until;
  };
  bool known_through_redis_locked(steady::time_point written, steady::time_point at) const;
  void forget_old_tokens(std::unordered_map<std::string, handed_token>& tokens);

  const fake::fake_wecom& fake_;
  mutable std::mutex mutex_;
  std::map<std::string, std::unordered_map<std::string, handed_token>> handed_;  // by app
  std::unordered_map<std::string, std::vector<report>> reports_;                 // by token
  std::vector<outage> outages_;
  std::vector<steady::time_point> kills_;
};

}  // namespace token_broker::soak
