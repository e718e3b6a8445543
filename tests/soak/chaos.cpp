#include "chaos.hpp"

#include <algorithm>

#include "broker_fixture.hpp"  // metric_sample
#include "event_log.hpp"
#include "http_test_client.hpp"

namespace token_broker::soak {

using std::chrono::milliseconds;

namespace {

// Gaps between events, and how long each disruption lasts. Redis stays away briefly: the
// replicas reconnect with a backoff of 100 ms doubling, and an outage much longer than a
// refresh period (3 s) would cost more than one extra call per app (each replica refreshes
// alone meanwhile).
constexpr milliseconds gap_min{300}, gap_max{2000};
constexpr milliseconds delay_min{200}, delay_max{1500};  // below upstream.timeout_ms
constexpr milliseconds redis_away_min{200}, redis_away_max{1000};
constexpr milliseconds replica_away_min{200}, replica_away_max{1500};
// After the last scripted fault is met: the retry's backoff (≤ 1 s), the min_interval floor
// (1 s) and the answer.
constexpr milliseconds recovery{2500};
constexpr milliseconds quiesce_limit{20000};
constexpr milliseconds whole_limit{15000};

milliseconds random_between(std::mt19937& random, milliseconds low, milliseconds high) {
  return milliseconds{std::uniform_int_distribution<long>(low.count(), high.count())(random)};
}

bool redis_up_at(std::uint16_t port) {
  const auto page = testing::http_get(port, "/metrics");
  return page.status == 200 && testing::metric_sample(page.body, "token_broker_redis_up") == 1;
}

}  // namespace

chaos::chaos(fake::fake_wecom& fake, testing::redis_process& redis, std::vector<replica*> replicas,
             replica& killable, std::vector<soak_app> apps, ledger& tokens, findings& found)
    : fake_(fake),
      redis_(redis),
      replicas_(std::move(replicas)),
      killable_(killable),
      apps_(std::move(apps)),
      tokens_(tokens),
      found_(found) {}

void chaos::start(std::uint32_t seed) {
  random_.seed(seed);
  thread_ = std::thread([this] { run(); });
}

void chaos::stop() {
  {
    const std::scoped_lock lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<chaos::event> chaos::bag() const {
  using fake::fault;
  using fake::fault_kind;
  using kind = event::kind;
  std::vector<event> events;
  // WeCom's transient codes (-1 system busy, 45009 frequency limit, 45033 concurrency limit)
  // and one the broker classes as configuration (60020, IP not allowed: retried slowly).
  for (const auto& [code, message] :
       std::vector<std::pair<int, std::string>>{{-1, "system busy"},
                                                {45009, "api freq out of limit"},
                                                {45033, "api concurrent out of limit"},
                                                {60020, "not allow to access from your ip"}}) {
    events.push_back({kind::upstream_fault,
                      fault{.kind = fault_kind::errcode, .errcode = code, .errmsg = message},
                      "errcode " + std::to_string(code)});
  }
  for (const auto& [fault_kind, name] : std::vector<std::pair<fake::fault_kind, std::string>>{
           {fault_kind::delay, "delay"},
           {fault_kind::html, "html"},
           {fault_kind::truncated_json, "truncated_json"},
           {fault_kind::http_500, "http_500"},
           {fault_kind::drop_connection, "drop_connection"},
           {fault_kind::hang, "hang"}}) {
    events.push_back({kind::upstream_fault, fault{.kind = fault_kind}, name});
  }
  for (int i = 0; i < 3; ++i) events.push_back({kind::revocation, {}, "revocation"});
  events.push_back({kind::redis_restart, {}, "redis restart"});
  events.push_back({kind::replica_kill, {}, "replica kill"});
  return events;
}

void chaos::run() {
  std::vector<event> events;
  std::uniform_int_distribution<std::size_t> pick_app(0, apps_.size() - 1);
  std::uniform_int_distribution<int> burst(1, 2);
  while (pause(random_between(random_, gap_min, gap_max))) {
    if (events.empty()) {
      events = bag();
      std::shuffle(events.begin(), events.end(), random_);
    }
    const auto next = events.back();
    events.pop_back();
    try {
      switch (next.what) {
        case event::kind::upstream_fault:
          inject_fault(next, apps_[pick_app(random_)], burst(random_));
          break;
        case event::kind::revocation:
          revoke(apps_[pick_app(random_)]);
          break;
        case event::kind::redis_restart:
          restart_redis();
          break;
        case event::kind::replica_kill:
          kill_replica();
          break;
      }
    } catch (const std::exception& failure) {
      // A replica that does not come back up (or a Redis that does not) ends the chaos.
      found_.add(no_crash, at_time(steady::now()) + " chaos: " + next.name + ": " + failure.what());
      return;
    }
  }
}

void chaos::inject_fault(const event& next, const soak_app& app, int times) {
  auto fault = next.fault;
  std::vector<fake::fault> script;
  for (int i = 0; i < times; ++i) {
    if (fault.kind == fake::fault_kind::delay) {
      fault.delay = random_between(random_, delay_min, delay_max);
    }
    script.push_back(fault);
  }
  {
    const std::scoped_lock lock(mutex_);
    auto& until = scripted_until_[app.id];
    until = std::max(until, fake_.gettoken_calls(app.secret)) + times;
  }
  fake_.script_faults(app.secret, std::move(script));
  count(next.name, app.id, times);
  log_event("chaos: " + next.name + " x" + std::to_string(times) + " on " + app.id);
}

void chaos::revoke(const soak_app& app) {
  fake_.revoke_tokens(app.secret);
  count("revocation", app.id);
  log_event("chaos: revocation of " + app.id);
}

void chaos::restart_redis() {
  quiesce();
  tokens_.redis_down(steady::now());
  log_event("chaos: redis stop");
  redis_.stop();
  std::this_thread::sleep_for(random_between(random_, redis_away_min, redis_away_max));
  redis_.start();
  log_event("chaos: redis started");
  count("redis restart");
  const auto give_up_at = steady::now() + whole_limit;
  for (auto* replica : replicas_) {
    while (!redis_up_at(replica->port())) {
      if (steady::now() > give_up_at) {
        found_.add(redis_readers, at_time(steady::now()) + " replica " + replica->name() +
                                      " did not reconnect to Redis within 15 s");
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  tokens_.redis_whole(steady::now());
  log_event("chaos: both replicas connected to redis");
}

void chaos::kill_replica() {
  quiesce();
  log_event("chaos: SIGKILL replica " + killable_.name());
  tokens_.replica_killed(steady::now());
  killable_.kill();
  std::this_thread::sleep_for(random_between(random_, replica_away_min, replica_away_max));
  killable_.start();  // throws if it does not answer /healthz within 10 s
  count("replica kill");
  log_event("chaos: replica " + killable_.name() + " restarted");
  const auto give_up_at = steady::now() + whole_limit;
  while (testing::http_get(killable_.port(), "/readyz").status != 200) {
    if (steady::now() > give_up_at) {
      log_event("chaos: restarted replica not ready within 15 s");
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  log_event("chaos: replica " + killable_.name() + " ready");
}

void chaos::quiesce() {
  const auto give_up_at = steady::now() + quiesce_limit;
  for (const auto& app : apps_) {
    int until = 0;
    {
      const std::scoped_lock lock(mutex_);
      until = scripted_until_[app.id];
    }
    while (fake_.gettoken_calls(app.secret) < until && steady::now() < give_up_at) {
      std::this_thread::sleep_for(20ms);
    }
  }
  std::this_thread::sleep_for(recovery);
}

bool chaos::pause(milliseconds duration) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, duration, [this] { return stopping_; });
}

void chaos::count(const std::string& name, const std::string& app, int times) {
  const std::scoped_lock lock(mutex_);
  injected_[name] += times;
  if (app.empty()) {
    cost_for_all_ += times;
  } else {
    cost_by_app_[app] += times;
  }
}

std::map<std::string, int> chaos::injected() const {
  const std::scoped_lock lock(mutex_);
  return injected_;
}

int chaos::injected_total() const {
  const std::scoped_lock lock(mutex_);
  int total = 0;
  for (const auto& [name, times] : injected_) total += times;
  return total;
}

int chaos::may_cost(const std::string& app) const {
  const std::scoped_lock lock(mutex_);
  const auto found = cost_by_app_.find(app);
  return cost_for_all_ + (found == cost_by_app_.end() ? 0 : found->second);
}

}  // namespace token_broker::soak
