#include "token_broker/redis_token_store.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <nlohmann/json.hpp>
#include <random>

#include "token_broker/redis_replies.hpp"

namespace token_broker {
namespace {

using std::chrono::milliseconds;

// A lock holder asks for the lock only once it holds an upstream slot, so its call starts at
// once and ends within the timeout; the margin covers the ask, the write of the token right
// after, and clocks that run at slightly different rates.
constexpr milliseconds lease_margin{2000};

// Every script reads "now" from Redis itself, so replicas' clocks never compare with each
// other. replicate_commands lets scripts that read TIME write on Redis < 5 (a no-op since).
constexpr std::string_view script_prelude =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local clock = redis.call('TIME')\n"
    "local now = clock[1] * 1000 + math.floor(clock[2] / 1000)\n";

// Sets `stored` and `expiry` (absolute, ms) from the token key; expiry 0: none, or no expiry.
std::string read_stored(std::string_view token_key) {
  return fmt::format(
      "local stored = redis.call('GET', {0})\n"
      "local expiry = 0\n"
      "if stored then\n"
      "  local ttl = redis.call('PTTL', {0})\n"
      "  if ttl > 0 then expiry = now + ttl end\n"
      "end\n",
      token_key);
}

// KEYS: token. → {expiry_ms, token} or {}
const std::string load_script = std::string(script_prelude) + read_stored("KEYS[1]") +
                                "if expiry > 0 then return {expiry, stored} end\n"
                                "return {}\n";

// KEYS: token, events. ARGV: token, expiry_ms, event. → 1 written, 0 nothing to change,
// -1 a newer token is stored. A different token replaces the stored one only if it expires
// later; the same token's expiry only moves earlier (whoever knows it ends sooner is right).
const std::string save_script =
    std::string(script_prelude) + read_stored("KEYS[1]") +
    "local offered = tonumber(ARGV[2])\n"
    "if offered <= now then return 0 end\n"
    "if expiry > 0 then\n"
    "  if stored == ARGV[1] and expiry <= offered + 1 then return 0 end\n"
    "  if stored ~= ARGV[1] and expiry >= offered then return -1 end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "redis.call('PEXPIREAT', KEYS[1], offered)\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[3])\n"
    "return 1\n";

// KEYS: lock, cooldown, token. ARGV: owner, lease_ms, forced ("1"/"0").
// → {verdict, wait_ms[, expiry_ms, token]}: the stored token tells the caller whether the
// call is needed at all.
const std::string request_script =
    std::string(script_prelude) + read_stored("KEYS[3]") +
    "local verdict, wait = 'granted', 0\n"
    "if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then\n"
    "  verdict, wait = 'cooling_down', redis.call('PTTL', KEYS[2])\n"
    "elseif not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  verdict, wait = 'busy', redis.call('PTTL', KEYS[1])\n"
    "end\n"
    "if expiry > 0 then return {verdict, wait, expiry, stored} end\n"
    "return {verdict, wait}\n";

// KEYS: lock, cooldown. ARGV: owner, cooldown_ms. Only the holder releases (a holder whose
// lease ran out must not free a successor's lock) and only the holder sets the cool-down.
constexpr std::string_view release_script =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end\n"
    "return 1\n";

std::string make_owner_id() {
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host = {};
  std::mt19937_64 random(std::random_device{}());
  return fmt::format("{}:{}:{:016x}", host.data(), getpid(), random());
}

long long unix_milliseconds(wall_time_point at) {
  return std::chrono::duration_cast<milliseconds>(at.time_since_epoch()).count();
}

}  // namespace

redis_token_store::redis_token_store(asio::any_io_executor executor, const redis_config& settings)
    : prefix_(settings.key_prefix),
      owner_(make_owner_id()),
      commands_(std::make_shared<redis_connection>(executor, settings, "commands")),
      events_(std::make_shared<redis_connection>(executor, settings, "events")) {}

void redis_token_store::start(supervisor& tasks,
                              std::function<void(const std::string& app_id)> changed) {
  changed_ = std::move(changed);
  // Writes and events may have been missed while a connection was down: every app looks.
  commands_->on_up([this] { changed_(""); });
  events_->on_up([this] { changed_(""); });
  events_->subscribe(prefix_ + "events", [this](std::string_view payload) {
    if (const auto app = event_app(payload)) changed_(*app);
  });
  commands_->start(tasks);
  events_->start(tasks);
}

void redis_token_store::stop() {
  commands_->stop();
  events_->stop();
}

std::string redis_token_store::key(std::string_view kind, const std::string& app_id) const {
  return prefix_ + std::string(kind) + ":" + app_id;
}

asio::awaitable<std::optional<redis_reply>> redis_token_store::evaluate(
    std::string_view script, std::vector<std::string> keys, std::vector<std::string> arguments) {
  std::vector<std::string> command{"EVAL", std::string(script), std::to_string(keys.size())};
  command.insert(command.end(), std::make_move_iterator(keys.begin()),
                 std::make_move_iterator(keys.end()));
  command.insert(command.end(), std::make_move_iterator(arguments.begin()),
                 std::make_move_iterator(arguments.end()));
  auto [error, reply] = co_await commands_->command(std::move(command));
  if (error) co_return std::nullopt;  // the connection logs its own state changes
  if (reply.type == redis_reply::kind::error) {
    spdlog::warn("redis script failed: {}", reply.text);
    co_return std::nullopt;
  }
  co_return std::move(reply);
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

asio::awaitable<std::optional<stored_token>> redis_token_store::load(const std::string& app_id) {
  // Arguments are named before each co_await: g++ 12 miscompiles braced lists in its operand.
  std::vector<std::string> keys{key("access_token", app_id)};
  std::vector<std::string> no_arguments;
  const auto reply = co_await evaluate(load_script, std::move(keys), std::move(no_arguments));
  if (!reply) co_return std::nullopt;
  co_return loaded_token(*reply);
}

asio::awaitable<save_outcome> redis_token_store::save(const std::string& app_id,
                                                      const stored_token& token) {
  const auto event =
      nlohmann::json{
          {"app", app_id}, {"event", "refreshed"}, {"expires_at", unix_seconds(token.expires_at)}}
          .dump();
  std::vector<std::string> keys{key("access_token", app_id), prefix_ + "events"};
  std::vector<std::string> arguments{token.value,
                                     std::to_string(unix_milliseconds(token.expires_at)), event};
  const auto reply = co_await evaluate(save_script, std::move(keys), std::move(arguments));
  if (!reply) co_return save_outcome::unavailable;
  co_return save_result(*reply);
}

asio::awaitable<refresh_permit_answer> redis_token_store::request_refresh(
    const std::string& app_id, bool forced, milliseconds call_timeout) {
  std::vector<std::string> keys{key("lock", app_id), key("cooldown", app_id),
                                key("access_token", app_id)};
  // Sized per request, so that it follows a reload's upstream.timeout_ms.
  const auto lease = call_timeout + lease_margin;
  std::vector<std::string> arguments{owner_, std::to_string(lease.count()), forced ? "1" : "0"};
  const auto reply = co_await evaluate(request_script, std::move(keys), std::move(arguments));
  if (!reply) co_return refresh_permit_answer{};
  co_return refresh_permit_from(*reply);
}

asio::awaitable<void> redis_token_store::release_refresh(const std::string& app_id,
                                                         milliseconds cool_down) {
  std::vector<std::string> keys{key("lock", app_id), key("cooldown", app_id)};
  std::vector<std::string> arguments{owner_,
                                     std::to_string(std::max(milliseconds{0}, cool_down).count())};
  co_await evaluate(release_script, std::move(keys), std::move(arguments));
}

}  // namespace token_broker
