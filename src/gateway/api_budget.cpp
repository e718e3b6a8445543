#include "token_broker/gateway/api_budget.hpp"

#include <array>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "token_broker/gateway/budget_window.hpp"

namespace token_broker {
namespace {

// Workers on other (corp, API) pairs rarely wait for one another: the table is split in
// shards, each with its own lock.
constexpr std::size_t shard_count = 16;
// A shard drops its idle entries when it has grown to this many, or twice as many as it kept
// at its last sweep: amortized, a constant cost per call.
constexpr std::size_t first_sweep_at = 1024;

struct key_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
};

class local_budget final : public api_budget {
 public:
  local_budget(const api_budget_limits& limits, budget_clock now)
      : state_(std::make_shared<state>(limits, std::move(now))) {}

  asio::awaitable<budget_decision> try_acquire(std::string_view corpid,
                                               std::string_view api) override {
    co_return *decide_now(corpid, api);
  }
  std::optional<budget_decision> decide_now(std::string_view corpid,
                                            std::string_view api) override {
    return state_->decide(state_, corpid, api);
  }

 private:
  struct entry {
    budget_window minute{minute_window};
    budget_window hour{hour_window};
    std::uint32_t in_flight = 0;
  };

  struct shard {
    std::mutex mutex;
    // By "{corpid}\n{api}", found by a view of it; nodes never move.
    std::unordered_map<std::string, entry, key_hash, std::equal_to<>> entries;
    std::size_t sweep_at = first_sweep_at;
  };

  struct state {
    state(const api_budget_limits& caps, budget_clock clock_now)
        : limits(caps), now(std::move(clock_now)) {}

    static budget_decision decide(const std::shared_ptr<state>& self, std::string_view corpid,
                                  std::string_view api);
    std::int64_t now_ms() const {
      return std::chrono::duration_cast<std::chrono::milliseconds>(now().time_since_epoch())
          .count();
    }

    const api_budget_limits limits;
    const budget_clock now;
    std::array<shard, shard_count> shards;
  };

  // A place of the concurrency cap, given back when the grant ends; it keeps the table alive,
  // and its entry (one with calls in flight is never dropped).
  class local_place final : public budget_grant::place {
   public:
    local_place(std::shared_ptr<state> owner, shard& in, entry& held)
        : owner_(std::move(owner)), shard_(in), entry_(held) {}
    ~local_place() override {
      const std::lock_guard lock(shard_.mutex);
      --entry_.in_flight;
    }

   private:
    std::shared_ptr<state> owner_;
    shard& shard_;
    entry& entry_;
  };

  static void sweep(shard& table, std::int64_t now_ms) {
    std::erase_if(table.entries, [&](const auto& keyed) {
      const auto& counted = keyed.second;
      return counted.in_flight == 0 && counted.minute.empty(now_ms) && counted.hour.empty(now_ms);
    });
    table.sweep_at = std::max(first_sweep_at, 2 * table.entries.size());
  }

  std::shared_ptr<state> state_;
};

budget_decision local_budget::state::decide(const std::shared_ptr<state>& self,
                                            std::string_view corpid, std::string_view api) {
  // Built in a buffer of the thread's: a call that finds its entry allocates nothing.
  thread_local std::string key;
  key.assign(corpid).append("\n").append(api);
  const auto& limits = self->limits;
  auto& table = self->shards[key_hash{}(key) % shard_count];
  const auto now_ms = self->now_ms();

  const std::lock_guard lock(table.mutex);
  if (table.entries.size() >= table.sweep_at) sweep(table, now_ms);
  auto found = table.entries.find(std::string_view(key));
  if (found == table.entries.end()) found = table.entries.emplace(key, entry{}).first;
  auto& counted = found->second;

  budget_verdict verdict;
  const auto judge = [&](const budget_window& window, std::uint32_t cap) {
    if (cap == 0) return;
    std::uint32_t counts[max_covering_buckets];
    const std::span<std::uint32_t> covering(counts, window.shape().covering());
    window.covering(now_ms, covering);
    verdict.consider(window.shape().cap, budget_window_wait(covering, cap, now_ms, window.shape()));
  };
  judge(counted.minute, limits.per_minute);
  judge(counted.hour, limits.per_hour);
  if (limits.concurrency > 0 && counted.in_flight >= limits.concurrency) {
    verdict.consider("concurrency", concurrency_retry);
  }
  if (!verdict.admitted()) return budget_refusal{verdict.retry_after(), verdict.cap()};

  if (limits.per_minute > 0) counted.minute.count(now_ms);
  if (limits.per_hour > 0) counted.hour.count(now_ms);
  if (limits.concurrency == 0) return budget_grant{};
  ++counted.in_flight;
  return budget_grant{std::make_unique<local_place>(self, table, counted)};
}

}  // namespace

std::unique_ptr<api_budget> make_local_budget(const api_budget_limits& limits, budget_clock now) {
  return std::make_unique<local_budget>(limits, std::move(now));
}

}  // namespace token_broker
