// The gateway's budget shared by the fleet: one script per call decides on Redis's clock and
// counts atomically, so replicas never race between reading the counts and adding theirs.
#include <spdlog/spdlog.h>

#include <atomic>
#include <bit>
#include <random>

#include "token_broker/gateway/api_budget.hpp"
#include "token_broker/gateway/budget_window.hpp"
#include "token_broker/redis/redis_connection.hpp"
#include "token_broker/redis/redis_script.hpp"

namespace token_broker {
namespace {

using std::chrono::milliseconds;

// KEYS: buckets (a hash "{tag}:{bucket}" → calls), leases (a sorted set of lease ids by
// deadline). ARGV: lease id, lease_ttl_ms, concurrency (0: none), the number of capped
// windows, then per window its tag, bucket width (ms), buckets per period and cap.
// → {1} when counted in every window (and leased), or {0, now_ms, leases held, then per window
// its covering counts, oldest first} when a cap refuses, nothing counted.
// The rule is budget_window.hpp's: the covering buckets run from current - buckets to current,
// and a call passes when their counts plus one stay within the cap. Times are Redis's own
// (TIME; scripts replicate their effects, Redis >= 5), so replicas' clocks never meet.
const redis_script acquire_script(
    // Replicas may differ in limits and lease_ttl for a while (a reload): a key's life is only
    // ever lengthened, so that no replica cuts short what another one counts on.
    "local function extend(key, ttl)\n"
    "  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end\n"
    "end\n"
    "local time = redis.call('TIME')\n"
    "local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)\n"
    "local concurrency = tonumber(ARGV[3])\n"
    "local stored, flat = {}, redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #flat, 2 do stored[flat[i]] = tonumber(flat[i + 1]) end\n"
    "local answer, admitted, keep = {0, now, 0}, true, 0\n"
    "local judged, live, current_fields = {}, {}, {}\n"
    "for w = 0, tonumber(ARGV[4]) - 1 do\n"
    "  local tag, width = ARGV[5 + 4 * w], tonumber(ARGV[6 + 4 * w])\n"
    "  local buckets, cap = tonumber(ARGV[7 + 4 * w]), tonumber(ARGV[8 + 4 * w])\n"
    "  local current, counted = math.floor(now / width), 0\n"
    "  judged[tag] = true\n"
    "  for bucket = current - buckets, current do\n"
    "    local field = tag .. ':' .. bucket\n"
    "    live[field] = true\n"
    "    local count = stored[field] or 0\n"
    "    counted = counted + count\n"
    "    answer[#answer + 1] = count\n"
    "  end\n"
    "  if counted + 1 > cap then admitted = false end\n"
    "  current_fields[#current_fields + 1] = tag .. ':' .. current\n"
    "  keep = math.max(keep, (buckets + 1) * width)\n"
    "end\n"
    "if concurrency > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "  answer[3] = redis.call('ZCARD', KEYS[2])\n"
    "  if answer[3] >= concurrency then admitted = false end\n"
    "end\n"
    "if not admitted then return answer end\n"
    // Buckets that cover no more are dropped, so the hash keeps buckets + 1 fields per window;
    // a window this replica does not cap is left to those that do (limits differ for a while
    // after a reload).
    "for field in pairs(stored) do\n"
    "  if judged[string.sub(field, 1, 1)] and not live[field] then\n"
    "    redis.call('HDEL', KEYS[1], field)\n"
    "  end\n"
    "end\n"
    "for _, field in ipairs(current_fields) do redis.call('HINCRBY', KEYS[1], field, 1) end\n"
    "if keep > 0 then extend(KEYS[1], keep) end\n"
    "if concurrency > 0 then\n"
    "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])\n"
    "  extend(KEYS[2], tonumber(ARGV[2]))\n"
    "end\n"
    "return {1}\n");

// What a grant's place needs once the grant is gone, however long the budget has been.
struct lease_keeper {
  lease_keeper(std::shared_ptr<redis_connection> connection, milliseconds ttl)
      : redis(std::move(connection)), lease_ttl(ttl) {}

  std::shared_ptr<redis_connection> redis;
  milliseconds lease_ttl;
  std::atomic<std::uint64_t> lost_releases{0};
};

// ZREM of the lease, sent without anyone waiting for it. A release that fails is counted and
// logged (at 1, 2, 4, … failures: an outage does not flood the log); the lease frees itself
// at its deadline anyway.
asio::awaitable<void> give_back(std::shared_ptr<lease_keeper> keeper, std::string leases_key,
                                std::string lease_id) {
  std::vector<std::string> command{"ZREM", std::move(leases_key), std::move(lease_id)};
  const auto [error, reply] = co_await keeper->redis->command(std::move(command));
  if (!error && reply.type != redis_reply::kind::error) co_return;
  const auto lost = ++keeper->lost_releases;
  if (std::has_single_bit(lost)) {
    spdlog::warn(
        "gateway budget: {} concurrency lease(s) could not be given back to Redis so far; each "
        "frees itself after {} ms",
        lost, keeper->lease_ttl.count());
  }
}

class redis_place final : public budget_grant::place {
 public:
  redis_place(asio::any_io_executor executor, std::shared_ptr<lease_keeper> keeper,
              std::string leases_key, std::string lease_id)
      : executor_(std::move(executor)),
        keeper_(std::move(keeper)),
        leases_key_(std::move(leases_key)),
        lease_id_(std::move(lease_id)) {}
  ~redis_place() override {
    asio::co_spawn(executor_,
                   give_back(std::move(keeper_), std::move(leases_key_), std::move(lease_id_)),
                   asio::detached);
  }

 private:
  asio::any_io_executor executor_;
  std::shared_ptr<lease_keeper> keeper_;
  std::string leases_key_;
  std::string lease_id_;
};

std::string make_lease_owner() {
  std::mt19937_64 random(std::random_device{}());
  return fmt::format("{:016x}", random());
}

class redis_budget final : public api_budget {
 public:
  redis_budget(const api_budget_limits& limits, std::shared_ptr<redis_connection> redis,
               std::string key_prefix, milliseconds lease_ttl)
      : limits_(limits),
        key_prefix_(std::move(key_prefix)),
        owner_(make_lease_owner()),
        keeper_(std::make_shared<lease_keeper>(std::move(redis), lease_ttl)),
        fallback_(make_local_budget(limits)) {
    for (const auto& [shape, cap] :
         {std::pair{&minute_window, limits.per_minute}, std::pair{&hour_window, limits.per_hour}}) {
      if (cap > 0) capped_.push_back({shape, cap});
    }
    arguments_ = {"", std::to_string(lease_ttl.count()), std::to_string(limits.concurrency),
                  std::to_string(capped_.size())};
    for (const auto& [shape, cap] : capped_) {
      arguments_.insert(arguments_.end(),
                        {std::string(1, shape->tag), std::to_string(shape->bucket_width.count()),
                         std::to_string(shape->buckets), std::to_string(cap)});
    }
  }

  std::optional<budget_decision> decide_now(std::string_view, std::string_view) override {
    if (capped_.empty() && limits_.concurrency == 0) return budget_grant{};  // nothing to count
    return std::nullopt;
  }

  asio::awaitable<budget_decision> try_acquire(std::string_view corpid,
                                               std::string_view api) override {
    if (auto at_once = decide_now(corpid, api)) co_return std::move(*at_once);
    const auto scope = fmt::format("{}:{}", corpid, api);
    auto leases_key = key_prefix_ + "gateway_leases:" + scope;
    std::vector<std::string> keys{key_prefix_ + "gateway:" + scope, leases_key};
    auto arguments = arguments_;
    if (limits_.concurrency > 0) arguments[0] = fmt::format("{}:{}", owner_, ++leases_issued_);
    auto lease_id = arguments[0];

    const auto reply =
        co_await acquire_script.run(*keeper_->redis, std::move(keys), std::move(arguments));
    if (auto decision = reply ? decision_from(*reply) : std::nullopt) {
      note_redis_answers(true);
      if (auto* grant = std::get_if<budget_grant>(&*decision); grant && limits_.concurrency > 0) {
        // The release is sent from the caller's executor, whichever worker that is.
        auto executor = co_await asio::this_coro::executor;
        *grant = budget_grant{std::make_unique<redis_place>(
            std::move(executor), keeper_, std::move(leases_key), std::move(lease_id))};
      }
      co_return std::move(*decision);
    }
    note_redis_answers(false);
    auto local = fallback_->try_acquire(corpid, api);
    co_return co_await std::move(local);
  }

 private:
  struct capped_window {
    const budget_window_shape* shape;
    std::uint32_t cap;
  };

  // The script's answer as a decision (the grant holding nothing yet); nullopt when it is not
  // the script's shape.
  std::optional<budget_decision> decision_from(const redis_reply& reply) const {
    const auto& fields = reply.elements;
    const auto integer = [&](std::size_t i) {
      return fields[i].type == redis_reply::kind::integer;
    };
    if (reply.type != redis_reply::kind::array || fields.empty() || !integer(0)) {
      return std::nullopt;
    }
    if (fields[0].integer == 1) return budget_grant{};

    std::size_t expected = 3;
    for (const auto& window : capped_) expected += window.shape->covering();
    if (fields.size() != expected) return std::nullopt;
    for (std::size_t i = 1; i < expected; ++i) {
      if (!integer(i) || fields[i].integer < 0) return std::nullopt;
    }
    const auto now_ms = fields[1].integer;
    budget_verdict verdict;
    std::size_t next = 3;
    for (const auto& [shape, cap] : capped_) {
      std::uint32_t counts[max_covering_buckets];
      for (unsigned i = 0; i < shape->covering(); ++i) {
        counts[i] = static_cast<std::uint32_t>(fields[next++].integer);
      }
      const std::span<const std::uint32_t> covering(counts, shape->covering());
      verdict.consider(shape->cap, budget_window_wait(covering, cap, now_ms, *shape));
    }
    if (limits_.concurrency > 0 && fields[2].integer >= limits_.concurrency) {
      verdict.consider("concurrency", concurrency_retry);
    }
    // The script refused, so some cap must: a disagreement would be a broken script.
    if (verdict.admitted()) return std::nullopt;
    return budget_refusal{verdict.retry_after(), verdict.cap()};
  }

  // Logged once per change, never per call; the connection logs why (without its URL).
  void note_redis_answers(bool answers) {
    if (answers != on_local_.load(std::memory_order_relaxed)) return;
    if (on_local_.exchange(!answers) == !answers) return;  // another worker noted it first
    if (answers) {
      spdlog::info("gateway budget: Redis answers again; budgets are fleet-wide");
    } else {
      spdlog::warn("gateway budget: Redis does not answer; budgets are per process until it does");
    }
  }

  const api_budget_limits limits_;
  const std::string key_prefix_;
  const std::string owner_;  // this budget's part of every lease id
  std::shared_ptr<lease_keeper> keeper_;
  std::unique_ptr<api_budget> fallback_;
  std::vector<capped_window> capped_;
  std::vector<std::string> arguments_;  // ARGV, the lease id left to each call
  std::atomic<std::uint64_t> leases_issued_{0};
  std::atomic<bool> on_local_{false};
};

}  // namespace

std::unique_ptr<api_budget> make_redis_budget(const api_budget_limits& limits,
                                              std::shared_ptr<redis_connection> redis,
                                              std::string key_prefix,
                                              std::chrono::milliseconds lease_ttl) {
  return std::make_unique<redis_budget>(limits, std::move(redis), std::move(key_prefix), lease_ttl);
}

}  // namespace token_broker
