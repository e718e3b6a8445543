#include "simulated_redis.hpp"

#include <algorithm>

namespace token_broker::simulation {
namespace {

using std::chrono::milliseconds;

// A round trip: the answer comes from the loop, as a Redis reply does.
asio::awaitable<void> round_trip() {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
}

milliseconds left(time_point until) {
  return std::max(milliseconds{0},
                  std::chrono::duration_cast<milliseconds>(until - simulated_clock::now()));
}

}  // namespace

void simulated_redis::set_up(bool up, bool lost_everything) {
  up_ = up;
  if (lost_everything) {
    tokens_.clear();
    locks_.clear();
    cool_downs_.clear();
    calls_.clear();
  }
  if (up) announce(std::nullopt);
}

std::optional<simulated_redis::entry> simulated_redis::token(const credential_id& key) const {
  const auto found = tokens_.find(key);
  if (found == tokens_.end() || found->second.expires_at <= simulated_clock::now()) return {};
  return found->second;
}

std::optional<stored_token> simulated_redis::load(const credential_id& key) const {
  const auto held = token(key);
  if (!held) return std::nullopt;
  return stored_token{held->value, held->expires_at};
}

save_outcome simulated_redis::save(const credential_id& key, const std::string& value,
                                   time_point offered) {
  ++commands_;
  if (offered <= simulated_clock::now()) return save_outcome::written;
  if (const auto held = token(key)) {
    if (held->value == value && held->expires_at + expiry_rounding < offered) {
      return save_outcome::store_knows_better;
    }
    if (held->value == value) return save_outcome::written;
    if (held->expires_at >= offered) return save_outcome::store_knows_better;
  }
  tokens_[key] = entry{value, offered};
  announce(key);
  return save_outcome::written;
}

refresh_permit_answer simulated_redis::request(const credential_id& key, const std::string& owner,
                                               milliseconds lease, bool forced) {
  ++commands_;
  refresh_permit_answer answer{.permit = refresh_permit::granted};
  const auto now = simulated_clock::now();
  const auto cool_down = cool_downs_.find(key);
  const auto lock = locks_.find(key);
  if (!forced && cool_down != cool_downs_.end() && cool_down->second > now) {
    answer = {.permit = refresh_permit::cooling_down, .wait = left(cool_down->second)};
  } else if (lock != locks_.end() && lock->second.until > now) {
    answer = {.permit = refresh_permit::busy, .wait = left(lock->second.until)};
  } else {
    locks_[key] = {owner, now + lease};
  }
  answer.stored = load(key);
  return answer;
}

void simulated_redis::release(const credential_id& key, const std::string& owner,
                              milliseconds cool_down) {
  ++commands_;
  const auto lock = locks_.find(key);
  if (lock == locks_.end() || lock->second.owner != owner ||
      lock->second.until <= simulated_clock::now()) {
    return;
  }
  locks_.erase(lock);
  if (cool_down > milliseconds{0}) cool_downs_[key] = simulated_clock::now() + cool_down;
}

call_budget_answer simulated_redis::spend_call(const credential_id& key, unsigned limit) {
  ++commands_;
  const auto now = simulated_clock::now();
  auto& calls = calls_[key];
  std::erase_if(calls, [&](time_point call) { return call <= now - call_budget_window; });
  if (calls.size() >= limit) {
    return {call_budget_answer::verdict::spent,
            std::chrono::ceil<milliseconds>(*(calls.end() - limit) + call_budget_window - now)};
  }
  calls.push_back(now);
  return {call_budget_answer::verdict::granted};
}

std::size_t simulated_redis::calls_counted(const credential_id& key) const {
  const auto found = calls_.find(key);
  if (found == calls_.end()) return 0;
  const auto now = simulated_clock::now();
  return static_cast<std::size_t>(
      std::count_if(found->second.begin(), found->second.end(),
                    [&](time_point call) { return call > now - call_budget_window; }));
}

void simulated_redis::announce(const std::optional<credential_id>& key) {
  for (const auto& subscriber : subscribers_) {
    asio::post(io_, [subscriber, key] { subscriber(key); });
  }
}

asio::awaitable<std::optional<stored_token>> simulated_store::load(const credential_id& key) {
  co_await round_trip();
  if (!redis_.up()) co_return std::nullopt;
  co_return redis_.load(key);
}

asio::awaitable<save_outcome> simulated_store::save(const credential_id& key,
                                                    const stored_token& token) {
  co_await round_trip();
  if (!redis_.up()) co_return save_outcome::unavailable;
  co_return redis_.save(key, token.value, token.expires_at);
}

asio::awaitable<std::optional<std::vector<stored_digest>>> simulated_store::digests(
    std::vector<credential_id> keys) {
  co_await round_trip();
  if (!redis_.up()) co_return std::nullopt;
  std::vector<stored_digest> digests;
  for (const auto& key : keys) {
    if (const auto held = redis_.token(key)) {
      digests.push_back({true, held->expires_at, token_digest(held->value)});
    } else {
      digests.push_back({});
    }
  }
  co_return digests;
}

asio::awaitable<std::vector<save_outcome>> simulated_store::save_all(
    std::vector<std::pair<credential_id, stored_token>> tokens) {
  co_await round_trip();
  std::vector<save_outcome> outcomes;
  for (const auto& [key, token] : tokens) {
    outcomes.push_back(redis_.up() ? redis_.save(key, token.value, token.expires_at)
                                   : save_outcome::unavailable);
  }
  co_return outcomes;
}

asio::awaitable<refresh_permit_answer> simulated_store::request_refresh(const credential_id& key,
                                                                        bool forced,
                                                                        milliseconds call_timeout) {
  co_await round_trip();
  if (!redis_.up()) co_return refresh_permit_answer{};
  co_return redis_.request(key, owner_, call_timeout + milliseconds{2000}, forced);
}

asio::awaitable<void> simulated_store::release_refresh(const credential_id& key,
                                                       milliseconds cool_down) {
  co_await round_trip();
  if (redis_.up()) redis_.release(key, owner_, cool_down);
}

asio::awaitable<call_budget_answer> simulated_store::spend_call(const credential_id& key,
                                                                unsigned limit) {
  co_await round_trip();
  if (!redis_.up()) co_return call_budget_answer{};
  co_return redis_.spend_call(key, limit);
}

}  // namespace token_broker::simulation
