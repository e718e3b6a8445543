// The credential store in Redis (SPEC §5), shared by every replica and read by other services:
//   {prefix}{kind}:{app}        the raw value (kind access_token, jsapi_ticket, agent_ticket),
//                               expiring with it (PX: the time it has left, on Redis's own
//                               clock, so no replica's wall clock counts)
//   {prefix}events              pub/sub: {"kind":…,"app":…,"event":"refreshed","expires_at":…}
//                               per change
//   {prefix}lock:{id}           the replica calling upstream now (SET NX PX, leased)
//   {prefix}cooldown:{id}       after a failed or same-value call: no replica calls before it ends
//   {prefix}suite_corps:{suite} a hash: each corp that authorized the suite by callback, with
//                               its permanent code sealed (at_rest_key)
//   {prefix}calls:{id}          a budgeted credential's calls in the last hour (a sorted set
//                               scored by Redis's TIME)
// where {id} is the app for an access_token ("lock:hr", as v1 named it) and "{kind}:{app}"
// for the others ("lock:jsapi_ticket:hr").
// Each decision that reads and writes is one Lua script, so replicas never race between them;
// scripts go by SHA-1 (redis_script). What touches many apps (digests, save_all) goes in
// batches of keys, one script each.
#pragma once

#include <atomic>
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

  void start(supervisor& tasks, change_listener changed) override;
  void stop() override;
  // The command connection, which the gateway's budget shares (one script per call).
  std::shared_ptr<redis_connection> commands() const { return commands_; }
  // Connected (and authenticated) to Redis now.
  std::optional<bool> up() const override { return commands_->up(); }

  bool shared() const override { return true; }
  asio::awaitable<void> settle() override;
  asio::awaitable<std::optional<stored_token>> load(const credential_id& id) override;
  asio::awaitable<save_outcome> save(const credential_id& id, const stored_token& token) override;
  asio::awaitable<std::optional<std::vector<stored_digest>>> digests(
      std::vector<credential_id> ids) override;
  asio::awaitable<std::vector<save_outcome>> save_all(
      std::vector<std::pair<credential_id, stored_token>> tokens) override;
  // The lock's lease is `call_timeout` plus a margin: a holder that dies loses it after
  // that, and a live holder always finishes (or gives up) inside it.
  asio::awaitable<refresh_permit_answer> request_refresh(
      const credential_id& id, bool forced, std::chrono::milliseconds call_timeout) override;
  asio::awaitable<void> release_refresh(const credential_id& id,
                                        std::chrono::milliseconds cool_down) override;
  asio::awaitable<call_budget_answer> spend_call(const credential_id& id, unsigned limit) override;

  void watch_corps(corps_listener changed) override;
  asio::awaitable<std::optional<sealed_corps>> authorized_corps(std::string suite) override;
  asio::awaitable<std::optional<std::string>> authorized_corp(std::string suite,
                                                              std::string corpid) override;
  asio::awaitable<bool> add_corp(std::string suite, std::string corpid,
                                 std::string sealed_code) override;
  asio::awaitable<bool> remove_corp(std::string suite, std::string corpid) override;

 private:
  std::string value_key(const credential_id& id) const;
  std::string corps_key(std::string_view suite) const;
  std::string internal_key(std::string_view purpose, const credential_id& id) const;

  std::string prefix_;
  std::string owner_;  // "<hostname>:<pid>:<random>", the lock's value
  std::shared_ptr<redis_connection> commands_;
  std::shared_ptr<redis_connection> events_;
  change_listener changed_;
  corps_listener corps_changed_;
  std::atomic<std::uint64_t> calls_counted_{0};  // makes each counted call a member of its own
};

}  // namespace token_broker
