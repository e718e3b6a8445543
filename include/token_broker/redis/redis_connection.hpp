// One connection to Redis, kept up by itself, on asio: no Redis call ever blocks a thread that
// serves HTTP. Commands are written as they come and their replies taken in order (a FIFO of
// pending commands; hiredis only encodes and decodes RESP). It reconnects with backoff,
// authenticates and selects the database on every connect, fails commands at once while down,
// times each one out on its own, and PINGs when idle, so that a connection that went silent
// (its events with it) is noticed and rebuilt.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/core/supervisor.hpp"
#include "token_broker/redis/redis_replies.hpp"
#include "token_broker/redis/redis_stream.hpp"
#include "token_broker/redis/reply_reader.hpp"

namespace token_broker {

enum class redis_errc { not_connected = 1, timed_out, connection_lost };
const boost::system::error_category& redis_category();
inline boost::system::error_code make_error_code(redis_errc code) {
  return {static_cast<int>(code), redis_category()};
}

struct redis_timeouts {
  std::chrono::milliseconds connect{2000};
  std::chrono::milliseconds command{1000};
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{5000};
  std::chrono::milliseconds health_check{5000};  // a PING after this long without a reply
};

class redis_connection : public std::enable_shared_from_this<redis_connection> {
 public:
  using message_handler = std::function<void(std::string_view payload)>;

  // `role` names the connection in log lines ("commands", "events").
  redis_connection(asio::any_io_executor executor, redis_config settings, std::string role,
                   redis_timeouts timeouts = {});
  ~redis_connection();
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  // Before start(): subscribe to `channel` on every connect and hand each message over.
  void subscribe(std::string channel, message_handler on_message);
  // Before start(): called each time the connection is up (again), on its strand.
  void on_up(std::function<void()> handler);
  // Before start(): commands sent on every connect before the connection counts as up, so
  // that they come before any other (SCRIPT LOAD). Redis refusing one does not fail the
  // connection; it is logged.
  void on_connect_send(std::vector<std::vector<std::string>> commands);

  // Its connection loop, as a task of `tasks`: restarted should it ever end unexpectedly.
  void start(supervisor& tasks);
  // `text` (a reply, an error) with the password masked, for a log line.
  std::string redacted(std::string text) const;
  void stop();
  // Connected, authenticated and on the configured database.
  bool up() const { return up_.load(std::memory_order_acquire); }
  // At least one connect attempt has ended, up or not.
  bool tried() const { return tried_.load(std::memory_order_acquire); }

  // Sends one command. Fails with redis_errc::not_connected at once while down, with
  // timed_out when no answer comes in time (the connection is then dropped and rebuilt, since
  // a late answer would be read as the next command's). A Redis error is a reply, not a failure.
  asio::awaitable<std::tuple<boost::system::error_code, redis_reply>> command(
      std::vector<std::string> arguments);

 private:
  struct pending_command;

  asio::awaitable<void> run();
  asio::awaitable<bool> connect_and_serve();
  asio::awaitable<bool> prepare_session();
  // With Sentinel: where the master is now (the redis.io sentinel-client algorithm: the
  // sentinels asked in turn, the first that knows moved to the front), or nothing.
  asio::awaitable<std::optional<redis_endpoint>> locate_master();
  using sentinel_address = std::pair<std::string, std::uint16_t>;
  // With Sentinel, one per sentinel: its connection while it is watched, and the pause
  // between two attempts. stop() closes the one and cancels the other.
  struct sentinel_watch {
    sentinel_address node;
    std::shared_ptr<redis_stream> stream;
    asio::steady_timer pause;
  };
  // Listens to one sentinel for the master's move and drops the connection at once rather
  // than at its next failed command. Every sentinel is watched: the one leading a failover
  // names the new master from +failover-state-reconf-slaves on, the others only from their
  // +switch-master, seconds later (at worst failover-timeout), and until the old master is
  // made a replica it takes writes that will be lost.
  asio::awaitable<void> watch_sentinel(sentinel_watch& watch);
  redis_endpoint sentinel_endpoint(const sentinel_address& node) const;
  // The sentinel that named the master, or announced its switch, is asked first next time:
  // the others may not know yet.
  void ask_first(const sentinel_address& node);
  // `command` for a sentinel, after its AUTH when it wants a password.
  std::vector<std::vector<std::string>> sentinel_commands(std::vector<std::string> command) const;
  asio::awaitable<void> check_health(const std::shared_ptr<redis_stream>& stream);
  asio::awaitable<std::tuple<boost::system::error_code, redis_reply>> send_if_up(
      std::vector<std::string> arguments);
  asio::awaitable<std::tuple<boost::system::error_code, redis_reply>> send(
      std::vector<std::string> arguments);
  asio::awaitable<void> read_replies(std::shared_ptr<redis_stream> stream,
                                     std::uint64_t generation);
  asio::awaitable<void> write_commands(std::shared_ptr<redis_stream> stream,
                                       std::uint64_t generation);
  void deliver(redis_reply reply);
  // `done` by value: the coroutine holds it, whatever the caller passed.
  asio::awaitable<void> wait_until(std::chrono::steady_clock::time_point deadline,
                                   std::function<bool()> done);
  void drop(std::string why);
  // Where the connection goes, for the log: with Sentinel, the master by name and where it
  // was last.
  std::string location() const;
  void notify() { state_changed_.cancel(); }

  // Everything below is touched only on strand_.
  asio::strand<asio::any_io_executor> strand_;
  redis_config settings_;
  redis_endpoint endpoint_;                  // configured; with Sentinel, the master's TLS settings
  redis_endpoint current_;                   // connected to, or last tried
  std::vector<sentinel_address> sentinels_;  // the one that knew last comes first
  std::uint64_t master_switches_ = 0;        // moves of the master heard from the sentinels
  std::string role_;
  redis_timeouts timeouts_;
  std::string channel_;
  message_handler on_message_;
  std::function<void()> on_up_;
  std::vector<std::vector<std::string>> connect_commands_;

  std::shared_ptr<redis_stream> stream_;  // null while down
  std::uint64_t generation_ = 0;          // one per connection: its reader and writer end with it
  std::optional<reply_reader> reader_;
  std::deque<std::shared_ptr<pending_command>> pending_;  // sent, awaiting replies in order
  std::string outgoing_;                                  // encoded, not yet written
  bool writing_ = false;
  std::chrono::steady_clock::time_point last_heard_;
  std::string last_error_;
  asio::steady_timer state_changed_;  // run() sleeps on it; notify() wakes it
  asio::steady_timer retry_pause_;    // run()'s backoff; a move of the master ends it
  std::vector<std::unique_ptr<sentinel_watch>> watches_;
  bool stopping_ = false;

  std::atomic<bool> up_{false};
  std::atomic<bool> tried_{false};
};

}  // namespace token_broker

template <>
struct boost::system::is_error_code_enum<token_broker::redis_errc> : std::true_type {};
