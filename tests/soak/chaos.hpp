// The chaos: one thread that, at random intervals, scripts upstream faults of every kind the
// fake has on random apps, revokes apps' tokens early, restarts Redis (empty: it persists
// nothing) and SIGKILLs one replica and starts it again. Events are drawn from a shuffled bag
// holding every kind, so each kind comes up in every round of the bag.
//
// Events never overlap where the outcome would be physically forced rather than the broker's
// doing: before a Redis restart or a kill, the chaos waits until every scripted fault has been
// met and the apps have had time to recover, and it injects nothing while Redis is away or a
// replica is down (a replica alone, without Redis, cannot know the token the other holds).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fake_wecom.hpp"
#include "findings.hpp"
#include "ledger.hpp"
#include "redis_process.hpp"
#include "replica.hpp"

namespace token_broker::soak {

struct soak_app {
  std::string id;
  std::string secret;  // never printed
};

class chaos {
 public:
  chaos(fake::fake_wecom& fake, testing::redis_process& redis, std::vector<replica*> replicas,
        replica& killable, std::vector<soak_app> apps, ledger& tokens, findings& found);
  ~chaos() { stop(); }

  void start(std::uint32_t seed);
  // Finishes the event under way (Redis back up, the killed replica running) and joins.
  void stop();

  // Events by class ("errcode 45009", "hang", "revocation", "redis restart", …).
  std::map<std::string, int> injected() const;
  int injected_total() const;
  // Upstream calls the chaos may have cost `app`: its faults and revocations, and every
  // Redis restart and replica kill.
  int may_cost(const std::string& app) const;

 private:
  struct event {
    enum class kind { upstream_fault, revocation, redis_restart, replica_kill } what;
    fake::fault fault{};
    std::string name;
  };

  void run();
  std::vector<event> bag() const;
  void inject_fault(const event& next, const soak_app& app, int count);
  void revoke(const soak_app& app);
  void restart_redis();
  void kill_replica();
  // Until every scripted fault has been met, then a pause for the apps to recover.
  void quiesce();
  // Sleeps unless stop() is called meanwhile; false when stopping.
  bool pause(std::chrono::milliseconds duration);
  void count(const std::string& name, const std::string& app = {}, int times = 1);

  fake::fake_wecom& fake_;
  testing::redis_process& redis_;
  std::vector<replica*> replicas_;
  replica& killable_;
  std::vector<soak_app> apps_;
  ledger& tokens_;
  findings& found_;
  std::mt19937 random_;

  mutable std::mutex mutex_;  // the counts, scripted_until_ and stopping_
  std::condition_variable wake_;
  bool stopping_ = false;
  std::map<std::string, int> injected_;
  std::map<std::string, int> cost_by_app_;     // faults and revocations per app
  int cost_for_all_ = 0;                       // Redis restarts and replica kills
  std::map<std::string, int> scripted_until_;  // per app: the call count once its script is met
  std::thread thread_;
};

}  // namespace token_broker::soak
