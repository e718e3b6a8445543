// Where tokens live beyond the process: the store behind the in-memory cache. With no
// "redis" in the config it is memory_token_store, which keeps tokens across app restarts
// within the process (a reloaded app adopts its token instead of calling upstream).
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "token_broker/asio.hpp"
#include "token_broker/fetch_result.hpp"

namespace token_broker {

struct stored_token {
  std::string value;
  wall_time_point expires_at;  // wall clock: stores are shared with other processes
};

class token_store {
 public:
  virtual ~token_store() = default;
  // The token stored for `app_id`, if any (callers check its expiry).
  virtual asio::awaitable<std::optional<stored_token>> load(const std::string& app_id) = 0;
  virtual asio::awaitable<void> save(const std::string& app_id, const stored_token& token) = 0;
};

class memory_token_store final : public token_store {
 public:
  asio::awaitable<std::optional<stored_token>> load(const std::string& app_id) override {
    const std::lock_guard lock(mutex_);
    const auto found = tokens_.find(app_id);
    if (found == tokens_.end()) co_return std::nullopt;
    co_return found->second;
  }

  asio::awaitable<void> save(const std::string& app_id, const stored_token& token) override {
    const std::lock_guard lock(mutex_);
    tokens_.insert_or_assign(app_id, token);
    co_return;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, stored_token> tokens_;
};

}  // namespace token_broker
