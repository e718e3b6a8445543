// The credential engine on simulated time: hours of credentials' lives, with replicas sharing a
// store, outages, backlogs, revocations and dependent credentials, each run in well under a
// second and the same every run. Real Redis and the real binary are the integration tests'.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "simulated_engine.hpp"
#include "simulated_redis.hpp"
#include "simulated_wecom.hpp"
#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker::simulation {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::string corpid_of(int app) {
  return "ww" + std::to_string(app);
}

std::unique_ptr<credential_source> gettoken_for(int app) {
  return std::make_unique<gettoken_source>(corpid_of(app), "secret");
}

// The corp's JS-SDK ticket of app `app`, fetched with its access_token.
std::shared_ptr<simulated_refresher> jsapi_ticket_of(simulated_engine& engine, int app) {
  auto config = std::make_shared<const app_config>(
      app_config{.id = corpid_of(app), .corpid = corpid_of(app), .secret = "secret"});
  return std::make_shared<simulated_refresher>(
      engine, credential_id{credential_kind::jsapi_ticket, corpid_of(app)},
      std::make_unique<ticket_source>(config, credential_kind::jsapi_ticket));
}

// One broker: its store connection, upstream client and engine, wired as broker.cpp wires them.
struct replica {
  replica(asio::io_context& io, std::unique_ptr<token_store> own_store, simulated_wecom& wecom,
          const refresh_config& policy, milliseconds wait_limit, std::size_t slots = 16)
      : store(std::move(own_store)),
        engine(io.get_executor(), policy, wait_limit,
               std::make_shared<simulated_upstream>(wecom, slots), *store) {}

  // Each of `apps` with its access_token, and its jsapi_ticket if `with_tickets`.
  void start(int apps, bool with_tickets = false) {
    engine.start(tasks);
    for (int app = 0; app < apps; ++app) {
      auto refresher = std::make_shared<simulated_refresher>(
          engine, credential_id{credential_kind::access_token, corpid_of(app)}, gettoken_for(app));
      tokens.push_back(refresher);
      engine.add(std::move(refresher));
      if (with_tickets) {
        tickets.push_back(jsapi_ticket_of(engine, app));
        engine.add(tickets.back());
      }
    }
    store->start(tasks, [this](const std::optional<credential_id>& id) {
      if (id) {
        engine.store_changed(*id);
      } else {
        engine.store_returned();
      }
    });
  }

  // What the HTTP side would hand out for `app` now, or nullptr.
  const token* served(int app) const {
    view = tokens[app]->view();
    return view->servable(simulated_clock::now());
  }

  std::unique_ptr<token_store> store;
  supervisor tasks;
  simulated_engine engine;
  std::vector<std::shared_ptr<simulated_refresher>> tokens;
  std::vector<std::shared_ptr<simulated_refresher>> tickets;
  mutable std::shared_ptr<const credential_view> view;
};

// Looks at what every replica would serve, every `every` of simulated time, as clients would.
struct served_ledger {
  int served = 0;
  int rejected = 0;  // served, but upstream would reject it
  int none = 0;      // nothing to serve at that moment
};

class engine_simulation : public ::testing::Test {
 protected:
  void SetUp() override {
    simulated_clock::reset();
    level_ = spdlog::get_level();
    spdlog::set_level(std::getenv("SIM_LOG") ? spdlog::level::debug : spdlog::level::off);
  }
  void TearDown() override {
    for (auto& each : replicas_) each->engine.stop();
    run_for(io_, 1s);
    spdlog::set_level(level_);
  }

  replica& add_replica(std::unique_ptr<token_store> store, simulated_wecom& wecom,
                       const refresh_config& policy, milliseconds wait_limit = 5000ms,
                       std::size_t slots = 16) {
    replicas_.push_back(
        std::make_unique<replica>(io_, std::move(store), wecom, policy, wait_limit, slots));
    return *replicas_.back();
  }

  // `count` replicas sharing `redis`, each serving `apps` (and their tickets if
  // `with_tickets`).
  void start_replicas(int count, simulated_redis& redis, simulated_wecom& wecom, int apps,
                      milliseconds wait_limit = 5000ms, bool with_tickets = false,
                      const refresh_config& policy = {}) {
    for (int i = 0; i < count; ++i) {
      add_replica(std::make_unique<simulated_store>(redis, "replica" + std::to_string(i)), wecom,
                  policy, wait_limit);
    }
    for (auto& each : replicas_) each->start(apps, with_tickets);
  }

  // The handlers the loop runs over `span` of simulated time: what idle credentials cost.
  std::size_t handlers_over(simulated_clock::duration span) {
    std::size_t handlers = 0;
    const auto end = simulated_clock::now() + span;
    while (simulated_clock::now() < end) {
      io_.restart();
      handlers += io_.poll();
      simulated_clock::current += 100ms;
    }
    return handlers;
  }

  // Runs `span`, checking every `every` what each replica serves for each of `apps`.
  served_ledger run_checking(simulated_wecom& wecom, int apps, simulated_clock::duration span,
                             simulated_clock::duration every = 1s) {
    served_ledger ledger;
    const auto end = simulated_clock::now() + span;
    while (simulated_clock::now() < end) {
      run_for(io_, every);
      for (const auto& each : replicas_) {
        for (int app = 0; app < apps; ++app) {
          const token* current = each->served(app);
          if (!current) {
            ++ledger.none;
          } else if (!wecom.valid(corpid_of(app), current->value)) {
            ++ledger.rejected;
          } else {
            ++ledger.served;
          }
        }
      }
    }
    return ledger;
  }

  asio::io_context io_;
  std::vector<std::unique_ptr<replica>> replicas_;
  spdlog::level::level_enum level_{};
};

class behaviours : public engine_simulation, public ::testing::WithParamInterface<behaviour> {};

// Six hours of two-hour tokens in each upstream behaviour: nothing served that upstream would
// reject, and calls at the policy's floor (c: one per lifetime; a, b: the same token comes back
// once before a new one can be had, so two).
TEST_P(behaviours, hours_of_tokens_are_served_valid_at_the_call_floor) {
  constexpr int apps = 10;
  simulated_wecom wecom(GetParam(), 7200s, 50ms);
  auto& broker = add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{});
  broker.start(apps);
  run_for(io_, 1s);

  const auto ledger = run_checking(wecom, apps, 6h);
  EXPECT_EQ(ledger.rejected, 0);
  // In (a) and (b) no new token exists before the old one expires: a second or two without.
  EXPECT_LE(ledger.none, GetParam() == behaviour::new_token_each_call ? 0 : apps * 2 * 3);
  EXPECT_GT(ledger.served, apps * 6 * 3600 * 99 / 100);
  const int per_lifetime = GetParam() == behaviour::new_token_each_call ? 1 : 2;
  for (int app = 0; app < apps; ++app) {
    EXPECT_LE(wecom.calls(corpid_of(app)), 1 + per_lifetime * 3) << corpid_of(app);
    EXPECT_GE(wecom.calls(corpid_of(app)), 1 + 3) << corpid_of(app);
  }
}

INSTANTIATE_TEST_SUITE_P(, behaviours,
                         ::testing::Values(behaviour::same_token_full_expires_in,
                                           behaviour::same_token_seconds_left,
                                           behaviour::new_token_each_call));

// Replicas on one store make one upstream call per refresh between them, never two at once.
TEST_F(engine_simulation, three_replicas_make_one_call_per_refresh_between_them) {
  constexpr int apps = 20;
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 200ms);
  simulated_redis redis(io_);
  start_replicas(3, redis, wecom, apps);

  const auto ledger = run_checking(wecom, apps, 6h);
  EXPECT_EQ(ledger.rejected, 0);
  EXPECT_LE(ledger.none, apps * 3) << "only the cold start";
  EXPECT_EQ(wecom.overlapping_calls(), 0);
  for (int app = 0; app < apps; ++app) EXPECT_LE(wecom.calls(corpid_of(app)), 4);
  EXPECT_GE(wecom.calls(), apps * 4);
}

// Issue 13, defect 2: the lock's lease was taken before the wait for an upstream slot; with a
// backlog longer than the lease, another replica called for the same credential too.
TEST_F(engine_simulation, a_backlog_longer_than_the_lease_still_makes_one_call_per_credential) {
  constexpr int apps = 48;
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 1500ms);
  simulated_redis redis(io_);
  start_replicas(3, redis, wecom, apps, 2500ms);
  run_for(io_, 30s);

  EXPECT_EQ(wecom.calls(), apps);
  EXPECT_EQ(wecom.overlapping_calls(), 0);
  for (const auto& each : replicas_) {
    for (int app = 0; app < apps; ++app) EXPECT_TRUE(each->served(app)) << corpid_of(app);
  }
}

// Behaviour (a) hands a token back with its full lifetime. A replica granted the call after
// another's lease ran out behind a slow upstream gets back the token the other fetched first,
// and takes it to live longer than it does; the store knows its earlier end, and the answer
// to the replica's save makes it adopt that, with no event needed (pub/sub loses those sent
// while a subscription is re-established).
TEST_F(engine_simulation, a_token_fetched_second_takes_the_earlier_end_the_store_knows) {
  simulated_wecom wecom(behaviour::same_token_full_expires_in, 7200s, 4000ms);
  simulated_redis redis(io_);
  add_replica(std::make_unique<simulated_store>(redis, "first"), wecom, {}, 1000ms);
  add_replica(std::make_unique<simulated_store>(redis, "deaf", /*hears_events=*/false), wecom, {},
              1000ms);
  for (auto& each : replicas_) each->start(1);
  run_for(io_, 10s);

  ASSERT_EQ(wecom.calls(), 2) << "the second replica was granted once the first's lease ran out";
  const token* first = replicas_[0]->served(0);
  const token* second = replicas_[1]->served(0);
  ASSERT_TRUE(first && second);
  ASSERT_EQ(first->value, second->value);
  EXPECT_EQ(second->expires_at, first->expires_at);
  EXPECT_EQ(redis.token({credential_kind::access_token, corpid_of(0)})->expires_at,
            first->expires_at);
}

// Redis down for half an hour across the refresh: every replica keeps serving valid tokens,
// refreshing alone, and Redis is caught up when it returns, though it lost everything.
TEST_F(engine_simulation, a_store_outage_across_a_refresh_is_served_through_and_caught_up) {
  constexpr int apps = 5;
  simulated_wecom wecom(behaviour::new_token_each_call, 3600s, 100ms);
  simulated_redis redis(io_);
  start_replicas(2, redis, wecom, apps);
  run_for(io_, 1h - 15min);
  redis.set_up(false);
  auto ledger = run_checking(wecom, apps, 30min);
  EXPECT_EQ(ledger.rejected, 0);
  EXPECT_EQ(ledger.none, 0);
  redis.set_up(true, /*lost_everything=*/true);
  ledger = run_checking(wecom, apps, 1min);
  EXPECT_EQ(ledger.rejected, 0);
  EXPECT_EQ(ledger.none, 0);
  for (int app = 0; app < apps; ++app) {
    const auto stored = redis.token({credential_kind::access_token, corpid_of(app)});
    ASSERT_TRUE(stored) << corpid_of(app);
    EXPECT_TRUE(wecom.valid(corpid_of(app), stored->value));
  }
}

// A caller reports a revoked token: concurrent reports share one refresh, and a report of a
// token already replaced costs nothing.
TEST_F(engine_simulation, concurrent_reports_of_a_revoked_token_share_one_refresh) {
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 100ms);
  auto& broker = add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{});
  broker.start(1);
  run_for(io_, 1s);
  const auto revoked = broker.served(0)->value;
  run_for(io_, 10s);  // the min_interval floor is behind
  wecom.revoke(corpid_of(0));

  std::vector<token_outcome> outcomes(6);
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    asio::co_spawn(io_, broker.tokens[0]->invalidate(revoked),
                   [&outcomes, i](std::exception_ptr, token_outcome outcome) {
                     outcomes[i] = std::move(outcome);
                   });
  }
  run_for(io_, 1s);
  EXPECT_EQ(wecom.calls(corpid_of(0)), 2);
  for (const auto& outcome : outcomes) {
    ASSERT_TRUE(outcome.view);
    EXPECT_NE(outcome.view->current->value, revoked);
    EXPECT_TRUE(wecom.valid(corpid_of(0), outcome.view->current->value));
  }
  token_outcome stale;
  asio::co_spawn(io_, broker.tokens[0]->invalidate(revoked),
                 [&stale](std::exception_ptr, token_outcome outcome) { stale = outcome; });
  run_for(io_, 1s);
  EXPECT_TRUE(stale.view);
  EXPECT_EQ(wecom.calls(corpid_of(0)), 2) << "a stale report calls nothing";
}

// A replica that has not heard of another's new value yet (its event on the way) is told that
// value is dead: it looks at the store before it answers, rather than hand back the older
// value it holds, and the report is compare-and-refresh against the store's value, as it would
// be at the replica that fetched it.
TEST_F(engine_simulation, a_report_of_a_value_not_held_looks_at_the_store_first) {
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 50ms);
  simulated_redis redis(io_);
  start_replicas(2, redis, wecom, 1);
  run_for(io_, 1s);
  auto& first = *replicas_[0];
  auto& second = *replicas_[1];
  const auto revoked = first.served(0)->value;
  wecom.revoke(corpid_of(0));

  token_outcome renewed;
  asio::co_spawn(io_, first.tokens[0]->invalidate(revoked),
                 [&renewed](std::exception_ptr, token_outcome outcome) { renewed = outcome; });
  // Until the first replica has its answer: the second has not compared with the store yet
  // (it gathers events for 10 ms).
  while (!renewed.view) run_for(io_, 1ms);
  const auto replacement = renewed.view->current->value;
  ASSERT_EQ(second.served(0)->value, revoked) << "the second replica is behind";

  token_outcome answered;
  asio::co_spawn(io_, second.tokens[0]->invalidate(replacement),
                 [&answered](std::exception_ptr, token_outcome outcome) { answered = outcome; });
  while (!answered.view) run_for(io_, 1ms);
  EXPECT_NE(answered.view->current->value, revoked) << "never the value reported dead first";
  EXPECT_NE(answered.view->current->value, replacement);
  EXPECT_TRUE(wecom.valid(corpid_of(0), answered.view->current->value));
  EXPECT_EQ(wecom.calls(corpid_of(0)), 3) << "one refresh per report of a current value";
}

// A suite_access_token needs a suite_ticket WeCom pushes, and nothing can fetch one: with no
// push, the held token is served to its end, then the answer is WeCom's reason (40085), and no
// call is made for want of a ticket; a push brings the token back at once (after the floor).
TEST_F(engine_simulation, a_suite_token_outlives_its_ticket_and_returns_with_the_next_push) {
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 100ms);
  auto& broker = add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{});
  broker.start(0);
  auto suite = std::make_shared<const suite_config>(
      suite_config{.id = "crm", .suite_id = "wwsuite", .suite_secret = "secret"});
  auto ticket = std::make_shared<simulated_refresher>(
      broker.engine, credential_id{credential_kind::suite_ticket, "crm"},
      std::make_unique<pushed_source>());
  auto token = std::make_shared<simulated_refresher>(
      broker.engine, credential_id{credential_kind::suite_token, "crm"},
      std::make_unique<suite_token_source>(suite));
  broker.engine.add(ticket);
  broker.engine.add(token);
  const auto outcome_of = [&](simulated_refresher& credential) {
    token_outcome outcome;
    asio::co_spawn(io_, credential.wait_for_token(),
                   [&outcome](std::exception_ptr, token_outcome got) { outcome = std::move(got); });
    run_for(io_, 10s);
    return outcome;
  };

  auto cold = outcome_of(*token);
  EXPECT_FALSE(cold.view);
  ASSERT_TRUE(cold.failure);
  EXPECT_EQ(cold.failure->errcode, 40085);
  EXPECT_EQ(wecom.calls("suite"), 0) << "no call without a ticket";

  wecom.accept_suite_ticket("ticket-1");
  asio::co_spawn(io_, ticket->accept_pushed("ticket-1", 1800s), asio::detached);
  run_for(io_, 10s);
  ASSERT_TRUE(token->view()->servable(simulated_clock::now()));
  const auto first = token->view()->current->value;
  EXPECT_EQ(wecom.calls("suite"), 1);

  // WeCom stops accepting that ticket after 30 minutes, and nothing is pushed again.
  run_for(io_, 30min);
  wecom.accept_suite_ticket("");
  const auto expiry = token->view()->current->expires_at;
  run_for(io_, expiry - simulated_clock::now() - 1min);
  ASSERT_TRUE(token->view()->servable(simulated_clock::now())) << "served to its end";
  EXPECT_EQ(token->view()->current->value, first);
  run_for(io_, 2min);
  const auto after = outcome_of(*token);
  EXPECT_FALSE(after.view);
  ASSERT_TRUE(after.failure);
  EXPECT_EQ(after.failure->errcode, 40085);
  EXPECT_EQ(wecom.calls("suite"), 1) << "an expired ticket is never sent";

  wecom.accept_suite_ticket("ticket-2");
  asio::co_spawn(io_, ticket->accept_pushed("ticket-2", 1800s), asio::detached);
  run_for(io_, 6s);  // the min_interval floor (5 s)
  ASSERT_TRUE(token->view()->servable(simulated_clock::now()));
  EXPECT_NE(token->view()->current->value, first);
  EXPECT_EQ(wecom.calls("suite"), 2);
}

// A credential fetched with another's value: when upstream rejects that value, it is reported
// (its refresher fetches a new one) and the call is made once more with the new one.
TEST_F(engine_simulation, a_dependent_credential_reports_a_rejected_token_and_retries_once) {
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 100ms);
  auto& broker = add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{});
  broker.start(1);
  auto ticket = jsapi_ticket_of(broker.engine, 0);
  broker.engine.add(ticket);
  run_for(io_, 1s);
  ASSERT_TRUE(ticket->view()->servable(simulated_clock::now()));
  EXPECT_EQ(wecom.calls("ticket:" + corpid_of(0)), 1);
  EXPECT_EQ(wecom.calls(corpid_of(0)), 1);

  run_for(io_, 10s);
  wecom.revoke(corpid_of(0));  // the token the broker holds is dead, and it does not know
  const auto old_ticket = ticket->view()->current->value;
  token_outcome renewed;
  asio::co_spawn(io_, ticket->invalidate(old_ticket),
                 [&renewed](std::exception_ptr, token_outcome outcome) { renewed = outcome; });
  run_for(io_, 2s);
  ASSERT_TRUE(renewed.view);
  EXPECT_NE(renewed.view->current->value, old_ticket);
  EXPECT_EQ(wecom.calls("ticket:" + corpid_of(0)), 3) << "rejected once, then once more";
  EXPECT_EQ(wecom.calls(corpid_of(0)), 2) << "the rejected token was replaced once";
  EXPECT_TRUE(wecom.valid(corpid_of(0), broker.served(0)->value));
}

// With one upstream slot (every slot busy, as in a backlog), a ticket whose call meets a revoked
// token gives its slot back while the token is refreshed: holding it would stall both until
// the wait limit.
TEST_F(engine_simulation,
       a_dependent_credential_never_holds_a_slot_while_its_dependency_refreshes) {
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 100ms);
  auto& broker =
      add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{}, 5000ms, 1);
  broker.start(1, /*with_tickets=*/true);
  run_for(io_, 1s);
  const auto& ticket = broker.tickets[0];
  ASSERT_TRUE(ticket->view()->servable(simulated_clock::now()));

  run_for(io_, 10s);
  wecom.revoke(corpid_of(0));
  token_outcome renewed;
  asio::co_spawn(io_, ticket->invalidate(ticket->view()->current->value),
                 [&renewed](std::exception_ptr, token_outcome outcome) { renewed = outcome; });
  run_for(io_, 1s);
  ASSERT_TRUE(renewed.view) << "answered within a second, not after the 5 s wait limit";
  EXPECT_EQ(wecom.calls("ticket:" + corpid_of(0)), 3);
  EXPECT_EQ(wecom.calls(corpid_of(0)), 2);
}

// A cold start with more credentials than tasks run at once (64), half of them tickets: a
// ticket that started before its token would hold a task while it waits for that token,
// and enough of them would hold every task, so no token could start. Tokens start first.
TEST_F(engine_simulation, a_cold_start_with_many_tickets_starts_the_tokens_first) {
  constexpr int apps = 300;
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 50ms);
  auto& broker = add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{});
  // The tickets made first: the engine must not start credentials in the order they came.
  for (int app = 0; app < apps; ++app)
    broker.tickets.push_back(jsapi_ticket_of(broker.engine, app));
  broker.start(apps);
  for (const auto& ticket : broker.tickets) broker.engine.add(ticket);
  run_for(io_, 3s);
  int served = 0;
  for (const auto& ticket : broker.tickets) {
    if (ticket->view()->servable(simulated_clock::now())) ++served;
  }
  EXPECT_EQ(served, apps) << "every ticket within 3 s (300 tokens and 300 tickets, 16 slots, "
                             "50 ms each: 2 s of calls)";
  EXPECT_EQ(wecom.calls(), 2 * apps) << "no ticket failed for want of its token";
}

// SPEC §3 refresh.ticket_calls_per_hour: however many replicas, restarts and reports, the fleet
// calls for a ticket at most that often in any hour. Once the budget is spent the held ticket
// is served (reports of it included) until it expires, then nothing until the budget allows.
TEST_F(engine_simulation, ticket_calls_stay_within_the_budget_across_replicas_and_restarts) {
  simulated_wecom wecom(behaviour::new_token_each_call, 1800s, 50ms);
  simulated_redis redis(io_);
  refresh_config policy;
  policy.ticket_calls_per_hour = 4;
  start_replicas(3, redis, wecom, 1, 5000ms, /*with_tickets=*/true, policy);
  run_for(io_, 1s);
  const std::string ticket_calls = "ticket:" + corpid_of(0);
  ASSERT_EQ(wecom.calls(ticket_calls), 1) << "one call for three replicas";

  // Twenty reports in a row, each of the ticket the reporter is served, to any replica.
  for (int report = 0; report < 20; ++report) {
    auto& replica = *replicas_[report % replicas_.size()];
    const auto view = replica.tickets[0]->view();
    ASSERT_TRUE(view->servable(simulated_clock::now())) << "report " << report;
    asio::co_spawn(io_, replica.tickets[0]->invalidate(view->current->value), asio::detached);
    run_for(io_, 6s);  // past the min_interval floor
  }
  EXPECT_EQ(wecom.calls(ticket_calls), 4);
  EXPECT_EQ(redis.calls_counted({credential_kind::jsapi_ticket, corpid_of(0)}), 4u);

  // A replica restarts: its own count is gone, the fleet's is not.
  replicas_[0]->engine.stop();
  add_replica(std::make_unique<simulated_store>(redis, "restarted"), wecom, policy)
      .start(1, /*with_tickets=*/true);
  run_for(io_, 1s);
  auto& restarted = *replicas_.back();
  ASSERT_TRUE(restarted.tickets[0]->view()->servable(simulated_clock::now()));
  asio::co_spawn(io_,
                 restarted.tickets[0]->invalidate(restarted.tickets[0]->view()->current->value),
                 asio::detached);
  run_for(io_, 1s);
  EXPECT_EQ(wecom.calls(ticket_calls), 4);
  EXPECT_TRUE(restarted.tickets[0]->view()->servable(simulated_clock::now()))
      << "the reported ticket is served: it cannot be replaced";

  // The last ticket expires 30 min after its call; the budget frees an hour after the first.
  run_for(io_, 35min);
  token_outcome expired;
  asio::co_spawn(io_, restarted.tickets[0]->wait_for_token(),
                 [&expired](std::exception_ptr, token_outcome outcome) { expired = outcome; });
  run_for(io_, 1s);
  EXPECT_FALSE(expired.view) << "nothing valid to serve";
  ASSERT_TRUE(expired.failure);
  EXPECT_EQ(expired.failure->kind, failure_class::rationed);
  EXPECT_GT(expired.retry_after, 60s) << "come back when the budget allows";
  run_for(io_, 30min);
  EXPECT_EQ(wecom.calls(ticket_calls), 5) << "the first call is an hour old: one more";
  for (std::size_t i = 1; i < replicas_.size(); ++i) {
    const token* served = replicas_[i]->tickets[0]->view()->servable(simulated_clock::now());
    ASSERT_TRUE(served) << "replica " << i;
  }
}

// Issue 13, defect 5: stopping answers every caller waiting for a value at once (503 on the
// HTTP side) and leaves nothing behind that could resume later.
TEST_F(engine_simulation, stop_answers_every_waiting_caller_at_once) {
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 60s);  // upstream hangs
  auto& broker = add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{});
  broker.start(1);
  std::vector<std::optional<token_outcome>> outcomes(5);
  for (auto& slot : outcomes) {
    asio::co_spawn(io_, broker.tokens[0]->wait_for_token(),
                   [&slot](std::exception_ptr, token_outcome outcome) { slot = outcome; });
  }
  run_for(io_, 1s);
  for (const auto& outcome : outcomes) EXPECT_FALSE(outcome) << "still waiting";

  broker.engine.stop();
  io_.restart();
  io_.poll();  // no time passes
  for (const auto& outcome : outcomes) {
    ASSERT_TRUE(outcome) << "answered at once";
    EXPECT_FALSE(outcome->view);
  }
}

// A reload removes a credential, or replaces it (new secret), while its refresh is under way:
// the old one is never planned again (no spinning, no use after it is gone), the new one
// serves.
TEST_F(engine_simulation, a_credential_removed_or_replaced_mid_refresh_is_never_planned_again) {
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 5s);
  auto& broker = add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{});
  broker.start(2);
  run_for(io_, 1s);  // both calls under way
  const credential_id removed{credential_kind::access_token, corpid_of(0)};
  broker.engine.remove(removed);
  broker.engine.add(std::make_shared<simulated_refresher>(
      broker.engine, credential_id{credential_kind::access_token, corpid_of(1)}, gettoken_for(1)));
  broker.tokens[0].reset();  // nothing but its own task holds the removed one now
  broker.tokens[1].reset();
  run_for(io_, 10s);

  const auto handlers = handlers_over(1h);
  EXPECT_LE(handlers, 3600 / 30 + 10) << "an ended credential is being planned again";
  EXPECT_EQ(wecom.calls(corpid_of(0)), 1);
  EXPECT_EQ(wecom.calls(corpid_of(1)), 2) << "the old one's call, then the new one's";
  EXPECT_FALSE(broker.engine.find(removed));
  const auto replaced = broker.engine.find({credential_kind::access_token, corpid_of(1)});
  ASSERT_TRUE(replaced);
  const auto view = replaced->view();
  ASSERT_TRUE(view->servable(simulated_clock::now()));
  EXPECT_TRUE(wecom.valid(corpid_of(1), view->current->value));
}

// As many credentials due at once as the engine runs tasks for (64), and their first calls
// fail: the retries, due a second later, are not held back to the scheduler's 30 s re-plan.
TEST_F(engine_simulation, retries_behind_a_full_set_of_tasks_start_when_due) {
  constexpr int apps = 64;  // every task slot taken at once, freed before the retries are due
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 100ms);
  wecom.fail_next(apps, -1);
  auto& broker =
      add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{}, 5000ms, 16);
  broker.start(apps);
  run_for(io_, 10s);
  for (int app = 0; app < apps; ++app) EXPECT_TRUE(broker.served(app)) << corpid_of(app);
  EXPECT_EQ(wecom.calls(), 2 * apps);
}

// The idle cost does not grow with the number of credentials: with 10,000 of them fresh, an
// hour without a refresh due runs a handful of scheduler wake-ups, not one per credential.
TEST_F(engine_simulation, idle_work_does_not_grow_with_the_number_of_credentials) {
  constexpr int apps = 10000;
  simulated_wecom wecom(behaviour::new_token_each_call, 7200s, 10ms);
  auto& broker = add_replica(std::make_unique<memory_token_store>(), wecom, refresh_config{});
  broker.start(apps);
  run_for(io_, 30s);
  ASSERT_EQ(wecom.calls(), apps);

  const auto handlers = handlers_over(1h);
  EXPECT_LE(handlers, 3600 / 30 + 10);
  EXPECT_EQ(wecom.calls(), apps);
}

}  // namespace
}  // namespace token_broker::simulation
