// The refresher's dealings with a store, against scripted stores (no Redis, no upstream
// call made).
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "token_broker/broker.hpp"
#include "token_broker/credentials/engine.hpp"
#include "token_broker/request_handler.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;

// Always: another replica's cool-down is on, with 0 ms left. Redis's PTTL says exactly that
// in a cool-down key's last millisecond, while EXISTS still finds the key.
class cooling_down_store final : public token_store {
 public:
  bool shared() const override { return true; }
  asio::awaitable<std::optional<stored_token>> load(const std::string&) override {
    co_return std::nullopt;
  }
  asio::awaitable<save_outcome> save(const std::string&, const stored_token&) override {
    co_return save_outcome::written;
  }
  asio::awaitable<refresh_permit_answer> request_refresh(const std::string&, bool) override {
    ++requests;
    // Answered from the io loop, as a round trip to Redis is.
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    co_return refresh_permit_answer{.permit = refresh_permit::cooling_down, .wait = 0ms};
  }
  asio::awaitable<void> release_refresh(const std::string&, std::chrono::milliseconds) override {
    co_return;
  }

  std::atomic<int> requests{0};
};

// Found by the fault soak: up to 14 questions to Redis (and log lines) in one millisecond.
TEST(app_refresher_test, a_cool_down_in_its_last_millisecond_is_waited_out_not_spun_on) {
  constexpr auto watched = 200ms;
  const auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::off);  // one line per question otherwise
  asio::io_context io;
  cooling_down_store store;
  credential_engine engine(io.get_executor(), refresh_config{}, 1000ms,
                           std::make_shared<upstream_client>(upstream_config{}), store);
  supervisor tasks;
  engine.start(tasks);
  const app_config app{.id = "hr", .corpid = "ww0123456789abcdef", .secret = "s"};
  engine.add(std::make_shared<credential_refresher>(
      engine, credential_id{credential_kind::access_token, app.id}, app.id,
      std::make_unique<gettoken_source>(app.corpid, app.secret)));
  io.run_for(watched);
  engine.stop();
  io.run_for(50ms);
  spdlog::set_level(level);

  // A pause of at least 1 ms per question: no more than one question per millisecond.
  EXPECT_LE(store.requests, watched.count() + 10);
  EXPECT_GE(store.requests, 2) << "the refresher stopped asking";
}

// A store whose first load throws, as an unexpected exception anywhere in a credential's
// dealings with it would (issue 13, defect 4); it holds a token with hours left.
class store_failing_once final : public token_store {
 public:
  bool shared() const override { return false; }
  asio::awaitable<std::optional<stored_token>> load(const std::string&) override {
    if (++loads == 1) throw std::runtime_error("broken invariant in the store");
    co_return held;
  }
  asio::awaitable<save_outcome> save(const std::string&, const stored_token&) override {
    co_return save_outcome::written;
  }
  asio::awaitable<refresh_permit_answer> request_refresh(const std::string&, bool) override {
    co_return refresh_permit_answer{.permit = refresh_permit::granted, .stored = held};
  }
  asio::awaitable<void> release_refresh(const std::string&, std::chrono::milliseconds) override {
    co_return;
  }

  const stored_token held{"TOKEN-FROM-THE-STORE", wall_clock::now() + std::chrono::hours{2}};
  int loads = 0;  // on the io thread only
};

// Before the engine, the exception ended the app's refresher for good while /healthz
// answered 200: the app never got a token again. Now a credential has no task of its own to
// lose: the failed look at the store is logged, the refresh still happens, and /healthz has
// nothing to report (the scheduler itself is supervised: supervisor_test).
TEST(app_refresher_test, a_store_that_throws_does_not_end_a_credentials_refreshing) {
  const auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::off);
  asio::io_context io;
  config settings;
  settings.apps.push_back(app_config{.id = "hr", .corpid = "ww0123456789abcdef", .secret = "s"});
  auto store = std::make_unique<store_failing_once>();
  const auto& loads = store->loads;
  broker apps(io.get_executor(), settings, std::move(store));
  request_handler handler(apps, {});
  const auto ask = [&handler](std::string target) {
    const request incoming{http::verb::get, target, 11};
    auto decided = handler.answer_or_wait(incoming);
    return std::move(std::get<answer>(decided));  // these answer without waiting
  };
  const auto run_until = [&io](auto done) {
    const auto give_up_at = std::chrono::steady_clock::now() + 2s;
    while (!done() && std::chrono::steady_clock::now() < give_up_at) io.run_one_for(10ms);
    return done();
  };

  apps.start();
  ASSERT_TRUE(run_until([&] { return apps.apps()->find("hr")->view()->current.has_value(); }));
  EXPECT_EQ(loads, 1);
  const auto served = ask("/v1/apps/hr/token");
  ASSERT_EQ(status_of(served), 200u);
  EXPECT_EQ(std::get<token_answer>(served).view->current->value, "TOKEN-FROM-THE-STORE");
  EXPECT_EQ(status_of(ask("/healthz")), 200u);

  apps.stop();
  io.run_for(50ms);
  spdlog::set_level(level);
}

}  // namespace
}  // namespace token_broker
