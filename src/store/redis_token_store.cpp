#include "token_broker/store/redis_token_store.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <random>

#include "token_broker/credentials/call_budget.hpp"
#include "token_broker/credentials/token_lifecycle.hpp"
#include "token_broker/redis/redis_replies.hpp"
#include "token_broker/redis/redis_script.hpp"

namespace token_broker {
namespace {

using std::chrono::milliseconds;

// A lock holder asks for the lock only once it holds an upstream slot, so its call starts at
// once and ends within the timeout; the margin covers the ask, the write of the token right
// after, and clocks that run at slightly different rates.
constexpr milliseconds lease_margin{2000};

// Every time in these scripts is a time left, in milliseconds, counted on Redis's own clock
// (PTTL, SET PX): Redis, not a replica, decides when a token ends, so replicas whose clocks
// differ never compare their clocks.

// KEYS: token. → {ttl_ms, token} or {}
const redis_script load_script(
    "local stored = redis.call('GET', KEYS[1])\n"
    "if not stored then return {} end\n"
    "local ttl = redis.call('PTTL', KEYS[1])\n"
    "if ttl <= 0 then return {} end\n"
    "return {ttl, stored}\n");

// KEYS: events, then a token key per token. ARGV: per token its value, ttl_ms and event.
// → an outcome per token: 1 written, 0 nothing to change, -1 the store knows better (a newer
// token, or an earlier end of this one).
// A different token replaces the stored one only if it lives longer; the same token's expiry
// only moves earlier (whoever knows it ends sooner is right), and only by more than the
// rounding that the round trips of replicas' readings and writings bring. A writer told -1
// loads the stored value: in behaviour (a) upstream hands a token it issued before with its
// full lifetime, and only the replica that fetched it first knows when it ends.
const redis_script save_script(fmt::format(
    "local outcomes = {{}}\n"
    "for i = 2, #KEYS do\n"
    "  local key, value, offered = KEYS[i], ARGV[3 * i - 5], tonumber(ARGV[3 * i - 4])\n"
    "  local outcome = 1\n"
    "  if offered <= 0 then\n"
    "    outcome = 0\n"
    "  else\n"
    "    local stored = redis.call('GET', key)\n"
    "    local ttl = stored and redis.call('PTTL', key) or -2\n"
    "    if ttl > 0 and stored == value and ttl <= offered + {0} then outcome = 0 end\n"
    "    if ttl > 0 and stored == value and ttl + {0} < offered then outcome = -1 end\n"
    "    if ttl > 0 and stored ~= value and ttl >= offered then outcome = -1 end\n"
    "  end\n"
    "  if outcome == 1 then\n"
    "    redis.call('SET', key, value, 'PX', offered)\n"
    "    redis.call('PUBLISH', KEYS[1], ARGV[3 * i - 3])\n"
    "  end\n"
    "  outcomes[i - 1] = outcome\n"
    "end\n"
    "return outcomes\n",
    expiry_rounding.count()));

// KEYS: events, the suite's corps hash. ARGV: corpid, sealed permanent code, event. → 1
const redis_script add_corp_script(
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('PUBLISH', KEYS[1], ARGV[3])\n"
    "return 1\n");

// KEYS: events, the suite's corps hash, then the corp's token and internal keys. ARGV:
// corpid, event. → 1
const redis_script remove_corp_script(
    "redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end\n"
    "redis.call('PUBLISH', KEYS[1], ARGV[2])\n"
    "return 1\n");

// KEYS: budget. ARGV: limit, window_ms, a member no other call uses. → {1, 0} counted, or
// {0, wait_ms} when `limit` calls were counted in the window: the wait until the oldest of them
// leaves it. Times are Redis's own (TIME; scripts replicate their effects, Redis ≥ 5).
const redis_script budget_script(
    "local now = redis.call('TIME')\n"
    "now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"
    "local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)\n"
    "if redis.call('ZCARD', KEYS[1]) >= limit then\n"
    "  local frees = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')\n"
    "  return {0, tonumber(frees[2]) + window - now}\n"
    "end\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], window)\n"
    "return {1, 0}\n");

// KEYS: token keys. → {ttl_ms, digest} per key, flat; ttl -2 and "" for an absent key. Enough
// to tell whether a replica holds what Redis holds, without sending the values.
const redis_script digests_script(
    "local answer = {}\n"
    "for i, key in ipairs(KEYS) do\n"
    "  local stored = redis.call('GET', key)\n"
    "  answer[2 * i - 1] = stored and redis.call('PTTL', key) or -2\n"
    "  answer[2 * i] = stored and redis.sha1hex(stored):sub(1, 16) or ''\n"
    "end\n"
    "return answer\n");

// KEYS: lock, cooldown, token. ARGV: owner, lease_ms, forced ("1"/"0").
// → {verdict, wait_ms[, ttl_ms, token]}: the stored token tells the caller whether the call
// is needed at all.
const redis_script request_script(
    "local stored = redis.call('GET', KEYS[3])\n"
    "local ttl = stored and redis.call('PTTL', KEYS[3]) or -2\n"
    "local verdict, wait = 'granted', 0\n"
    "if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then\n"
    "  verdict, wait = 'cooling_down', redis.call('PTTL', KEYS[2])\n"
    "elseif not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  verdict, wait = 'busy', redis.call('PTTL', KEYS[1])\n"
    "end\n"
    "if ttl > 0 then return {verdict, wait, ttl, stored} end\n"
    "return {verdict, wait}\n");

// KEYS: lock, cooldown. ARGV: owner, cooldown_ms. Only the holder releases (a holder whose
// lease ran out must not free a successor's lock) and only the holder sets the cool-down.
const redis_script release_script(
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end\n"
    "return 1\n");

// Keys per script that touches many apps: Redis runs one script at a time, so a batch must
// stay short (about a millisecond per thousand keys), and a few batches cover many apps.
constexpr std::size_t batch_keys = 1000;

std::string make_owner_id() {
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host = {};
  std::mt19937_64 random(std::random_device{}());
  return fmt::format("{}:{}:{:016x}", host.data(), getpid(), random());
}

// Redis counts the time left from when the script runs, a one-way trip after `now`; this much
// is taken off for that trip (generously: a busy Redis, a loaded host), so that the key never
// outlives the token. Nothing to a real token's two hours.
constexpr milliseconds write_trip_allowance{10};

// The time `expires_at` leaves from `now`, in whole milliseconds, rounded down, less the trip.
long long milliseconds_left(time_point expires_at, time_point now) {
  return (std::chrono::floor<milliseconds>(expires_at - now) - write_trip_allowance).count();
}

}  // namespace

redis_token_store::redis_token_store(asio::any_io_executor executor, const redis_config& settings)
    : prefix_(settings.key_prefix),
      owner_(make_owner_id()),
      commands_(std::make_shared<redis_connection>(executor, settings, "commands")),
      events_(std::make_shared<redis_connection>(executor, settings, "events")) {
  // Loaded before any other command on each connection: the first calls find the scripts.
  std::vector<std::vector<std::string>> load_scripts;
  for (const auto* script :
       {&load_script, &save_script, &digests_script, &request_script, &release_script,
        &budget_script, &add_corp_script, &remove_corp_script}) {
    load_scripts.push_back(script->load_command());
  }
  commands_->on_connect_send(std::move(load_scripts));
}

void redis_token_store::start(supervisor& tasks, change_listener changed) {
  changed_ = std::move(changed);
  // Writes and events may have been missed while a connection was down: the broker compares
  // every credential with the store.
  commands_->on_up([this] { changed_(std::nullopt); });
  events_->on_up([this] { changed_(std::nullopt); });
  events_->subscribe(prefix_ + "events", [this](std::string_view payload) {
    const auto id = event_credential(payload);
    if (!id) return;
    if (const auto corp = corp_event(payload)) {
      if (corps_changed_) corps_changed_(*id, *corp == corp_change::added);
      return;
    }
    changed_(id);
  });
  commands_->start(tasks);
  events_->start(tasks);
}

void redis_token_store::stop() {
  commands_->stop();
  events_->stop();
}

void redis_token_store::watch_corps(corps_listener changed) {
  corps_changed_ = std::move(changed);
}

std::string redis_token_store::corps_key(std::string_view suite) const {
  return prefix_ + "suite_corps:" + std::string(suite);
}

asio::awaitable<std::optional<sealed_corps>> redis_token_store::authorized_corps(
    std::string suite) {
  std::vector<std::string> command{"HGETALL", corps_key(suite)};
  const auto [failure, reply] = co_await commands_->command(std::move(command));
  if (failure || reply.type != redis_reply::kind::array) co_return std::nullopt;
  sealed_corps corps;
  for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
    corps.insert_or_assign(reply.elements[i].text, reply.elements[i + 1].text);
  }
  co_return corps;
}

asio::awaitable<std::optional<std::string>> redis_token_store::authorized_corp(std::string suite,
                                                                               std::string corpid) {
  std::vector<std::string> command{"HGET", corps_key(suite), std::move(corpid)};
  const auto [failure, reply] = co_await commands_->command(std::move(command));
  if (failure || reply.type != redis_reply::kind::string) co_return std::nullopt;
  co_return reply.text;
}

asio::awaitable<bool> redis_token_store::add_corp(std::string suite, std::string corpid,
                                                  std::string sealed_code) {
  const credential_id id{credential_kind::corp_token, suite + ":" + corpid};
  std::vector<std::string> keys{prefix_ + "events", corps_key(suite)};
  std::vector<std::string> arguments{std::move(corpid), std::move(sealed_code),
                                     event_message(id, "added")};
  const auto reply =
      co_await add_corp_script.run(*commands_, std::move(keys), std::move(arguments));
  co_return reply.has_value();
}

asio::awaitable<bool> redis_token_store::remove_corp(std::string suite, std::string corpid) {
  const credential_id id{credential_kind::corp_token, suite + ":" + corpid};
  std::vector<std::string> keys{prefix_ + "events", corps_key(suite), value_key(id),
                                internal_key("lock", id), internal_key("cooldown", id)};
  std::vector<std::string> arguments{std::move(corpid), event_message(id, "removed")};
  const auto reply =
      co_await remove_corp_script.run(*commands_, std::move(keys), std::move(arguments));
  co_return reply.has_value();
}

std::string redis_token_store::value_key(const credential_id& id) const {
  return prefix_ + to_string(id);
}

// An app's access_token keeps v1's internal keys ("lock:hr"), so that a v1 and a v2 replica
// side by side during an upgrade still share one lock; other kinds name theirs.
std::string redis_token_store::internal_key(std::string_view purpose,
                                            const credential_id& id) const {
  return prefix_ + std::string(purpose) + ":" +
         (id.kind == credential_kind::access_token ? id.scope : to_string(id));
}

asio::awaitable<void> redis_token_store::settle() {
  // Bounded by the first connect attempt: with Redis down the broker starts from upstream
  // alone.
  asio::steady_timer pause(co_await asio::this_coro::executor);
  const auto give_up_at = std::chrono::steady_clock::now() + redis_timeouts{}.connect;
  while (!commands_->up() && !commands_->tried() && std::chrono::steady_clock::now() < give_up_at) {
    pause.expires_after(milliseconds{10});
    co_await pause.async_wait(asio::use_awaitable);
  }
}

asio::awaitable<std::optional<stored_token>> redis_token_store::load(const credential_id& id) {
  // Arguments are named before each co_await: g++ 12 miscompiles braced lists in its operand.
  std::vector<std::string> keys{value_key(id)};
  std::vector<std::string> no_arguments;
  const auto sent_at = clock::now();
  const auto reply = co_await load_script.run(*commands_, std::move(keys), std::move(no_arguments));
  if (!reply) co_return std::nullopt;
  co_return loaded_token(*reply, sent_at);
}

asio::awaitable<save_outcome> redis_token_store::save(const credential_id& id,
                                                      const stored_token& token) {
  std::vector<std::pair<credential_id, stored_token>> one{{id, token}};
  const auto outcomes = co_await save_all(std::move(one));
  co_return outcomes.front();
}

asio::awaitable<std::vector<save_outcome>> redis_token_store::save_all(
    std::vector<std::pair<credential_id, stored_token>> tokens) {
  std::vector<save_outcome> outcomes;
  outcomes.reserve(tokens.size());
  for (std::size_t first = 0; first < tokens.size(); first += batch_keys) {
    const auto last = std::min(tokens.size(), first + batch_keys);
    std::vector<std::string> keys{prefix_ + "events"};
    std::vector<std::string> arguments;
    // Measured as late as possible: the time left is what Redis counts from.
    const auto now = clock::now();
    const auto wall_now = wall_clock::now();
    for (auto i = first; i < last; ++i) {
      const auto& [id, token] = tokens[i];
      const auto left = milliseconds_left(token.expires_at, now);
      keys.push_back(value_key(id));
      arguments.push_back(token.value);
      arguments.push_back(std::to_string(left));
      // The wall-clock expiry is for people and readers, never compared by a replica.
      arguments.push_back(
          event_message(id, "refreshed", unix_seconds(wall_now + milliseconds{left})));
    }
    const auto reply = co_await save_script.run(*commands_, std::move(keys), std::move(arguments));
    const auto batch = reply ? save_results(*reply, last - first)
                             : std::vector<save_outcome>(last - first, save_outcome::unavailable);
    outcomes.insert(outcomes.end(), batch.begin(), batch.end());
  }
  co_return outcomes;
}

asio::awaitable<std::optional<std::vector<stored_digest>>> redis_token_store::digests(
    std::vector<credential_id> ids) {
  std::vector<stored_digest> digests;
  digests.reserve(ids.size());
  for (std::size_t first = 0; first < ids.size(); first += batch_keys) {
    const auto last = std::min(ids.size(), first + batch_keys);
    std::vector<std::string> keys;
    for (auto i = first; i < last; ++i) keys.push_back(value_key(ids[i]));
    std::vector<std::string> no_arguments;
    const auto sent_at = clock::now();
    const auto reply =
        co_await digests_script.run(*commands_, std::move(keys), std::move(no_arguments));
    if (!reply) co_return std::nullopt;
    auto batch = stored_digests(*reply, last - first, sent_at);
    if (!batch) co_return std::nullopt;
    std::move(batch->begin(), batch->end(), std::back_inserter(digests));
  }
  co_return digests;
}

asio::awaitable<refresh_permit_answer> redis_token_store::request_refresh(
    const credential_id& id, bool forced, milliseconds call_timeout) {
  std::vector<std::string> keys{internal_key("lock", id), internal_key("cooldown", id),
                                value_key(id)};
  // Sized per request, so that it follows a reload's upstream.timeout_ms.
  const auto lease = call_timeout + lease_margin;
  std::vector<std::string> arguments{owner_, std::to_string(lease.count()), forced ? "1" : "0"};
  const auto sent_at = clock::now();
  const auto reply = co_await request_script.run(*commands_, std::move(keys), std::move(arguments));
  if (!reply) co_return refresh_permit_answer{};
  co_return refresh_permit_from(*reply, sent_at);
}

asio::awaitable<void> redis_token_store::release_refresh(const credential_id& id,
                                                         milliseconds cool_down) {
  std::vector<std::string> keys{internal_key("lock", id), internal_key("cooldown", id)};
  std::vector<std::string> arguments{owner_,
                                     std::to_string(std::max(milliseconds{0}, cool_down).count())};
  co_await release_script.run(*commands_, std::move(keys), std::move(arguments));
}

asio::awaitable<call_budget_answer> redis_token_store::spend_call(const credential_id& id,
                                                                  unsigned limit) {
  std::vector<std::string> keys{internal_key("calls", id)};
  std::vector<std::string> arguments{std::to_string(limit),
                                     std::to_string(call_budget_window.count()),
                                     fmt::format("{}:{}", owner_, ++calls_counted_)};
  const auto reply = co_await budget_script.run(*commands_, std::move(keys), std::move(arguments));
  if (!reply) co_return call_budget_answer{};
  co_return call_budget_from(*reply);
}

}  // namespace token_broker
