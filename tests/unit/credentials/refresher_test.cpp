// The refresher's dealings with a store, against scripted stores (no Redis), and with
// upstream, the fake of WeCom over real TLS.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "fake_wecom.hpp"
#include "token_broker/broker.hpp"
#include "token_broker/credentials/engine.hpp"
#include "token_broker/http/request_handler.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<credential_refresher> make_refresher(credential_engine& engine, std::string id,
                                                     std::string secret) {
  return std::make_shared<credential_refresher>(
      engine, credential_id{credential_kind::access_token, id},
      std::make_unique<gettoken_source>("ww0123456789abcdef", secret));
}

// Always: another replica's cool-down is on, with 0 ms left. Redis's PTTL says exactly that
// in a cool-down key's last millisecond, while EXISTS still finds the key.
class cooling_down_store final : public token_store {
 public:
  bool shared() const override { return true; }
  asio::awaitable<std::optional<stored_token>> load(const credential_id&) override {
    co_return std::nullopt;
  }
  asio::awaitable<save_outcome> save(const credential_id&, const stored_token&) override {
    co_return save_outcome::written;
  }
  asio::awaitable<refresh_permit_answer> request_refresh(const credential_id&, bool,
                                                         std::chrono::milliseconds) override {
    ++requests;
    // Answered from the io loop, as a round trip to Redis is.
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    co_return refresh_permit_answer{.permit = refresh_permit::cooling_down, .wait = 0ms};
  }
  asio::awaitable<void> release_refresh(const credential_id&, std::chrono::milliseconds) override {
    co_return;
  }

  std::atomic<int> requests{0};
};

// Found by the fault soak: up to 14 questions to Redis (and log lines) in one millisecond.
TEST(refresher_test, a_cool_down_in_its_last_millisecond_is_waited_out_not_spun_on) {
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
      engine, credential_id{credential_kind::access_token, app.id},
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
  asio::awaitable<std::optional<stored_token>> load(const credential_id&) override {
    if (++loads == 1) throw std::runtime_error("broken invariant in the store");
    co_return held;
  }
  asio::awaitable<save_outcome> save(const credential_id&, const stored_token&) override {
    co_return save_outcome::written;
  }
  asio::awaitable<refresh_permit_answer> request_refresh(const credential_id&, bool,
                                                         std::chrono::milliseconds) override {
    co_return refresh_permit_answer{.permit = refresh_permit::granted, .stored = held};
  }
  asio::awaitable<void> release_refresh(const credential_id&, std::chrono::milliseconds) override {
    co_return;
  }

  const stored_token held{"TOKEN-FROM-THE-STORE", clock::now() + std::chrono::hours{2}};
  int loads = 0;  // on the io thread only
};

// Before the engine, the exception ended the app's refresher for good while /healthz
// answered 200: the app never got a token again. Now a credential has no task of its own to
// lose: the failed look at the store is logged, the refresh still happens, and /healthz has
// nothing to report (the scheduler itself is supervised: supervisor_test).
TEST(refresher_test, a_store_that_throws_does_not_end_a_credentials_refreshing) {
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
    request incoming{http::verb::get, target, 11};
    auto decided = handler.answer_or_wait(incoming, peer_identity{});
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

// Grants every lock, and records what the refreshers asked of it and when.
class granting_store final : public token_store {
 public:
  explicit granting_store(const upstream_client& upstream) : upstream_(upstream) {}

  bool shared() const override { return true; }
  asio::awaitable<std::optional<stored_token>> load(const credential_id&) override {
    co_return std::nullopt;
  }
  asio::awaitable<save_outcome> save(const credential_id&, const stored_token&) override {
    ++saves;
    co_return save_outcome::written;
  }
  asio::awaitable<refresh_permit_answer> request_refresh(
      const credential_id&, bool, std::chrono::milliseconds call_timeout) override {
    slots_in_use_when_asked.push_back(upstream_.calls().in_use());
    leases_asked.push_back(call_timeout);
    co_return refresh_permit_answer{.permit = refresh_permit::granted};
  }
  asio::awaitable<void> release_refresh(const credential_id&,
                                        std::chrono::milliseconds cool_down) override {
    releases.push_back(cool_down);
    co_return;
  }

  std::vector<std::size_t> slots_in_use_when_asked;
  std::vector<std::chrono::milliseconds> leases_asked;
  std::vector<std::chrono::milliseconds> releases;
  int saves = 0;

 private:
  const upstream_client& upstream_;
};

class refresher_upstream_test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tls_ = new fake::tls_material(fake::generate_tls_material()); }
  static void TearDownTestSuite() { delete tls_; }

  void SetUp() override {
    ca_path_ = std::filesystem::temp_directory_path() /
               ("app-refresher-test-ca-" + std::to_string(getpid()) + ".pem");
    std::ofstream(ca_path_) << tls_->ca_pem;
    level_ = spdlog::get_level();
    spdlog::set_level(spdlog::level::off);
  }
  void TearDown() override {
    spdlog::set_level(level_);
    std::filesystem::remove(ca_path_);
  }

  upstream_config config_for(const fake::fake_wecom& wecom,
                             std::chrono::milliseconds timeout) const {
    upstream_config config;
    config.base_url = wecom.base_url();
    config.host = "localhost";
    config.port = std::to_string(wecom.port());
    config.ca_file = ca_path_;
    config.timeout = timeout;
    return config;
  }

  // Runs `io` until `done` or 10 s (a hang fails rather than blocks).
  static bool run_until(asio::io_context& io, const std::function<bool()>& done) {
    const auto give_up_at = std::chrono::steady_clock::now() + 10s;
    while (!done() && std::chrono::steady_clock::now() < give_up_at) io.run_for(5ms);
    return done();
  }

  static fake::tls_material* tls_;
  std::filesystem::path ca_path_;
  spdlog::level::level_enum level_{};
};

fake::tls_material* refresher_upstream_test::tls_ = nullptr;

// Issue 13, defect 2: the lock was asked for before the line for an upstream slot, and its
// lease could run out in that line. Now each refresher asks holding a slot, so the lease
// covers the call alone, and sizes it by the client's timeout in force.
TEST_F(refresher_upstream_test, the_lock_is_asked_for_only_while_holding_an_upstream_slot) {
  constexpr int app_count = 3;
  fake::fake_wecom wecom(fake::fake_options{.answer_delay = 50ms, .tls = *tls_});
  asio::io_context io;
  // One slot for three cold apps: two of them wait in line.
  const auto upstream = std::make_shared<upstream_client>(config_for(wecom, 2500ms), 1);
  granting_store store(*upstream);
  credential_engine engine(io.get_executor(), refresh_config{}, 2500ms, upstream, store);
  supervisor tasks;
  engine.start(tasks);
  for (int i = 0; i < app_count; ++i) {
    const auto secret = "secret-" + std::to_string(i);
    wecom.add_app("ww0123456789abcdef", secret);
    engine.add(make_refresher(engine, "app" + std::to_string(i), secret));
  }
  ASSERT_TRUE(run_until(io, [&] { return store.saves == app_count; }));
  engine.stop();
  io.run_for(50ms);

  EXPECT_EQ(wecom.gettoken_calls(), app_count);
  EXPECT_EQ(store.slots_in_use_when_asked, std::vector<std::size_t>(app_count, 1))
      << "each asked holding the one slot";
  EXPECT_EQ(store.leases_asked, std::vector<std::chrono::milliseconds>(app_count, 2500ms));
  EXPECT_EQ(upstream->tls_handshakes(), 1u) << "the calls shared one connection";
}

TEST_F(refresher_upstream_test, a_refresher_stopped_during_its_call_releases_the_lock) {
  fake::fake_wecom wecom(fake::fake_options{.answer_delay = 300ms, .tls = *tls_});
  wecom.add_app("ww0123456789abcdef", "s");
  asio::io_context io;
  const auto upstream = std::make_shared<upstream_client>(config_for(wecom, 2500ms));
  granting_store store(*upstream);
  credential_engine engine(io.get_executor(), refresh_config{}, 2500ms, upstream, store);
  supervisor tasks;
  engine.start(tasks);
  engine.add(make_refresher(engine, "hr", "s"));
  ASSERT_TRUE(run_until(io, [&] { return wecom.gettoken_calls() == 1; })) << "no call made";
  ASSERT_TRUE(store.releases.empty());

  engine.stop();  // while upstream takes its 300 ms
  ASSERT_TRUE(run_until(io, [&] { return !store.releases.empty(); }))
      << "the lock was left to its lease";
  EXPECT_EQ(store.releases, std::vector<std::chrono::milliseconds>{0ms})
      << "no cool-down: another replica may call at once";
  EXPECT_EQ(store.saves, 0) << "a stopped refresher's token goes unused";
}

}  // namespace
}  // namespace token_broker
