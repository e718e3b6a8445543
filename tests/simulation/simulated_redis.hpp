// The shared store in simulated time: what the Lua scripts of redis_token_store decide, kept in
// memory and shared by every simulated replica, with outages on demand. Each replica talks to
// it through its own simulated_store, as each broker has its own Redis connection.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "simulated_clock.hpp"
#include "token_broker/credentials/call_budget.hpp"
#include "token_broker/credentials/token_lifecycle.hpp"
#include "token_broker/store/token_store.hpp"

namespace token_broker::simulation {

class simulated_redis {
 public:
  explicit simulated_redis(asio::io_context& io) : io_(io) {}

  bool up() const { return up_; }
  // Down: every command fails. Back up: it may have lost everything (a restart without
  // persistence), and every subscriber hears that it is back.
  void set_up(bool up, bool lost_everything = false);

  struct entry {
    std::string value;
    time_point expires_at;
  };
  std::optional<entry> token(const credential_id& key) const;

  // The scripts' decisions (see redis_token_store.cpp), on simulated time.
  std::optional<stored_token> load(const credential_id& key) const;
  save_outcome save(const credential_id& key, const std::string& value, time_point expires_at);
  refresh_permit_answer request(const credential_id& key, const std::string& owner,
                                std::chrono::milliseconds lease, bool forced);
  void release(const credential_id& key, const std::string& owner,
               std::chrono::milliseconds cool_down);
  // The budget script's decision: the fleet's calls for `key` in the window, on Redis's time.
  call_budget_answer spend_call(const credential_id& key, unsigned limit);
  // Calls counted for `key` in the window now.
  std::size_t calls_counted(const credential_id& key) const;

  void subscribe(token_store::change_listener changed) {
    subscribers_.push_back(std::move(changed));
  }
  int commands() const { return commands_; }

 private:
  struct lock_holder {
    std::string owner;
    time_point until;
  };
  void announce(const std::optional<credential_id>& key);

  asio::io_context& io_;
  bool up_ = true;
  std::map<credential_id, entry> tokens_;
  std::map<credential_id, lock_holder> locks_;
  std::map<credential_id, time_point> cool_downs_;
  std::map<credential_id, std::vector<time_point>> calls_;
  std::vector<token_store::change_listener> subscribers_;
  int commands_ = 0;
};

// One replica's connection to the simulated Redis.
class simulated_store final : public token_store {
 public:
  // `hears_events` false: every event is lost on the way to this replica, as pub/sub loses
  // those published while its subscription is being re-established.
  simulated_store(simulated_redis& redis, std::string owner, bool hears_events = true)
      : redis_(redis), owner_(std::move(owner)), hears_events_(hears_events) {}

  void start(supervisor&, change_listener changed) override {
    if (hears_events_) redis_.subscribe(std::move(changed));
  }
  bool shared() const override { return true; }
  std::optional<bool> up() const override { return redis_.up(); }
  asio::awaitable<std::optional<stored_token>> load(const credential_id& key) override;
  asio::awaitable<save_outcome> save(const credential_id& key, const stored_token& token) override;
  asio::awaitable<std::optional<std::vector<stored_digest>>> digests(
      std::vector<credential_id> keys) override;
  asio::awaitable<std::vector<save_outcome>> save_all(
      std::vector<std::pair<credential_id, stored_token>> tokens) override;
  // The lease is the call's timeout and 2 s, as redis_token_store's.
  asio::awaitable<refresh_permit_answer> request_refresh(
      const credential_id& key, bool forced, std::chrono::milliseconds call_timeout) override;
  asio::awaitable<void> release_refresh(const credential_id& key,
                                        std::chrono::milliseconds cool_down) override;
  asio::awaitable<call_budget_answer> spend_call(const credential_id& key, unsigned limit) override;

 private:
  simulated_redis& redis_;
  std::string owner_;
  bool hears_events_;
};

}  // namespace token_broker::simulation
