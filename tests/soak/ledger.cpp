#include "ledger.hpp"

#include <algorithm>
#include <cstdio>

namespace token_broker::soak {

using std::chrono::system_clock;

namespace {

// Tokens live 6 s; one that expired this long ago can matter to no rule any more.
constexpr auto forget_after = 30s;

std::string describe(const std::string& token, system_clock::time_point expiry, instance by,
                     steady::time_point first_handed_at) {
  char text[160];
  std::snprintf(text, sizeof text, "token %.6s… valid %.1f s more, handed by replica %d/%d at %s",
                token.c_str(), std::chrono::duration<double>(expiry - system_clock::now()).count(),
                by.replica, by.incarnation, at_time(first_handed_at).c_str());
  return text;
}

}  // namespace

void ledger::handed(const std::string& app, const std::string& token, instance from,
                    steady::time_point at) {
  const std::scoped_lock lock(mutex_);
  auto& tokens = handed_[app];
  auto [entry, added] = tokens.try_emplace(token);
  if (added) {
    entry->second.true_expiry = fake_.expires_at(token);
    forget_old_tokens(tokens);
  }
  auto& first = entry->second.first_handed;
  const auto seen = std::find_if(first.begin(), first.end(),
                                 [&](const auto& handed) { return handed.first == from; });
  if (seen == first.end()) first.emplace_back(from, at);
}

void ledger::forget_old_tokens(std::unordered_map<std::string, handed_token>& tokens) {
  const auto now = system_clock::now();
  std::erase_if(tokens, [&](const auto& entry) {
    const auto& expiry = entry.second.true_expiry;
    return expiry && *expiry + forget_after < now;
  });
}

void ledger::told(const std::string& token, instance from, steady::time_point at, bool replaced) {
  const std::scoped_lock lock(mutex_);
  reports_[token].push_back(report{from, at, replaced});
}

bool ledger::was_told(const std::string& token, instance to, steady::time_point sent) const {
  const std::scoped_lock lock(mutex_);
  const auto found = reports_.find(token);
  if (found == reports_.end()) return false;
  return std::any_of(found->second.begin(), found->second.end(), [&](const report& told) {
    if (told.by == to) return told.at < sent;
    return told.replaced && known_through_redis_locked(told.at, sent);
  });
}

bool ledger::replaced_long_before(const std::string& token, steady::time_point at) const {
  const std::scoped_lock lock(mutex_);
  const auto found = reports_.find(token);
  if (found == reports_.end()) return false;
  return std::any_of(found->second.begin(), found->second.end(), [&](const report& told) {
    return told.replaced && known_through_redis_locked(told.at, at);
  });
}

std::optional<std::string> ledger::valid_token(const std::string& app, steady::time_point now,
                                               const handed_filter& counts) const {
  const std::scoped_lock lock(mutex_);
  const auto tokens = handed_.find(app);
  if (tokens == handed_.end()) return std::nullopt;
  for (const auto& [token, handed] : tokens->second) {
    if (!handed.true_expiry || *handed.true_expiry - system_clock::now() <= usable_margin) continue;
    if (fake_.check(token) != fake::token_status::valid) continue;  // revoked
    for (const auto& [by, first_handed_at] : handed.first_handed) {
      if (first_handed_at < now && counts(by, first_handed_at)) {
        return describe(token, *handed.true_expiry, by, first_handed_at);
      }
    }
  }
  return std::nullopt;
}

std::optional<std::string> ledger::valid_token_for_failure(const std::string& app,
                                                           instance failed_at,
                                                           steady::time_point at) const {
  return valid_token(app, at, [&](instance by, steady::time_point first_handed_at) {
    // Called under mutex_: the locked variant.
    return by == failed_at || known_through_redis_locked(first_handed_at, at);
  });
}

void ledger::redis_down(steady::time_point at) {
  const std::scoped_lock lock(mutex_);
  outages_.push_back(outage{at, std::nullopt});
}

void ledger::redis_whole(steady::time_point at) {
  const std::scoped_lock lock(mutex_);
  if (!outages_.empty() && !outages_.back().until) outages_.back().until = at;
}

bool ledger::known_through_redis(steady::time_point written, steady::time_point at) const {
  const std::scoped_lock lock(mutex_);
  return known_through_redis_locked(written, at);
}

bool ledger::known_through_redis_locked(steady::time_point written, steady::time_point at) const {
  auto known_from = written;           // when the news could start to spread
  for (const auto& gone : outages_) {  // in order
    if (gone.from >= at) break;
    if (gone.until && *gone.until <= known_from) continue;  // over before the news
    if (gone.from >= known_from + propagation) break;       // the news had spread already
    if (!gone.until || *gone.until >= at) return false;     // still away
    known_from = *gone.until;                               // caught up when it came back
  }
  return at - known_from > propagation;
}

std::optional<steady::time_point> ledger::redis_whole_since() const {
  const std::scoped_lock lock(mutex_);
  if (outages_.empty()) return soak_started;
  return outages_.back().until;
}

void ledger::replica_killed(steady::time_point at) {
  const std::scoped_lock lock(mutex_);
  kills_.push_back(at);
}

bool ledger::expiry_knowledge_lost(steady::time_point issued, steady::time_point at) const {
  const std::scoped_lock lock(mutex_);
  const bool killed = std::any_of(kills_.begin(), kills_.end(), [&](steady::time_point kill) {
    return issued - upstream_timeout <= kill && kill <= at;
  });
  const bool redis_away = std::any_of(outages_.begin(), outages_.end(), [&](const outage& gone) {
    return gone.from <= at &&
           (!gone.until || (issued < *gone.until && at <= *gone.until + propagation));
  });
  return killed || redis_away;
}

}  // namespace token_broker::soak
