// The token store in Redis (SPEC §5), shared by every replica and read by other services:
//   {prefix}access_token:{app}  the raw token, expiring with it (PX: the time it has left, on
//                               Redis's own clock, so no replica's wall clock counts)
//   {prefix}events              pub/sub: {"kind":"access_token","app":…,"event":"refreshed",
//                               "expires_at":…} per change
//   {prefix}lock:{app}          the replica calling upstream now (SET NX PX, leased)
//   {prefix}cooldown:{app}      after a failed or same-token call: no replica calls before it ends
// Each decision that reads and writes is one Lua script, so replicas never race between them;
// scripts go by SHA-1 (redis_script). What touches many apps (digests, save_all) goes in
// batches of keys, one script each.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "token_broker/config/config.hpp"
#include "token_broker/redis/redis_connection.hpp"
#include "token_broker/store/token_store.hpp"

namespace token_broker {

class redis_token_store final : public token_store {
 public:
  redis_token_store(asio::any_io_executor executor, const redis_config& settings);

  void start(supervisor& tasks, std::function<void(const std::string& app_id)> changed) override;
  void stop() override;
  // Connected (and authenticated) to Redis now.
  std::optional<bool> up() const override { return commands_->up(); }

  bool shared() const override { return true; }
  asio::awaitable<void> settle() override;
  asio::awaitable<std::optional<stored_token>> load(const std::string& app_id) override;
  asio::awaitable<save_outcome> save(const std::string& app_id, const stored_token& token) override;
  asio::awaitable<std::optional<std::vector<stored_digest>>> digests(
      std::vector<std::string> app_ids) override;
  asio::awaitable<std::vector<save_outcome>> save_all(
      std::vector<std::pair<std::string, stored_token>> tokens) override;
  // The lock's lease is `call_timeout` plus a margin: a holder that dies loses it after
  // that, and a live holder always finishes (or gives up) inside it.
  asio::awaitable<refresh_permit_answer> request_refresh(
      const std::string& app_id, bool forced, std::chrono::milliseconds call_timeout) override;
  asio::awaitable<void> release_refresh(const std::string& app_id,
                                        std::chrono::milliseconds cool_down) override;

 private:
  std::string key(std::string_view kind, const std::string& app_id) const;

  std::string prefix_;
  std::string owner_;  // "<hostname>:<pid>:<random>", the lock's value
  std::shared_ptr<redis_connection> commands_;
  std::shared_ptr<redis_connection> events_;
  std::function<void(const std::string&)> changed_;
};

}  // namespace token_broker
