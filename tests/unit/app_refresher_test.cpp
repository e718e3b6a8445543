// The refresher's dealings with a shared store, against a scripted store (no Redis), and
// with upstream, the fake of WeCom over real TLS.
#include "token_broker/app_refresher.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "fake_wecom.hpp"

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
  asio::awaitable<refresh_permit_answer> request_refresh(const std::string&, bool,
                                                         std::chrono::milliseconds) override {
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
  shared_upstream upstream(std::make_shared<upstream_client>(upstream_config{}));
  cooling_down_store store;
  auto refresher = std::make_shared<app_refresher>(
      io.get_executor(), app_config{.id = "hr", .corpid = "ww0123456789abcdef", .secret = "s"},
      refresh_config{}, 1000ms, upstream, store);
  refresher->start();
  io.run_for(watched);
  refresher->stop();
  io.run_for(50ms);
  spdlog::set_level(level);

  // A pause of at least 1 ms per question: no more than one question per millisecond.
  EXPECT_LE(store.requests, watched.count() + 10);
  EXPECT_GE(store.requests, 2) << "the refresher stopped asking";
}

// Grants every lock, and records what the refreshers asked of it and when.
class granting_store final : public token_store {
 public:
  explicit granting_store(const shared_upstream& upstream) : upstream_(upstream) {}

  bool shared() const override { return true; }
  asio::awaitable<std::optional<stored_token>> load(const std::string&) override {
    co_return std::nullopt;
  }
  asio::awaitable<save_outcome> save(const std::string&, const stored_token&) override {
    ++saves;
    co_return save_outcome::written;
  }
  asio::awaitable<refresh_permit_answer> request_refresh(
      const std::string&, bool, std::chrono::milliseconds call_timeout) override {
    slots_in_use_when_asked.push_back(upstream_.load()->calls().in_use());
    leases_asked.push_back(call_timeout);
    co_return refresh_permit_answer{.permit = refresh_permit::granted};
  }
  asio::awaitable<void> release_refresh(const std::string&,
                                        std::chrono::milliseconds cool_down) override {
    releases.push_back(cool_down);
    co_return;
  }

  std::vector<std::size_t> slots_in_use_when_asked;
  std::vector<std::chrono::milliseconds> leases_asked;
  std::vector<std::chrono::milliseconds> releases;
  int saves = 0;

 private:
  const shared_upstream& upstream_;
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
  shared_upstream upstream(std::make_shared<upstream_client>(config_for(wecom, 2500ms), 1));
  granting_store store(upstream);
  std::vector<std::shared_ptr<app_refresher>> refreshers;
  for (int i = 0; i < app_count; ++i) {
    const auto secret = "secret-" + std::to_string(i);
    wecom.add_app("ww0123456789abcdef", secret);
    refreshers.push_back(std::make_shared<app_refresher>(
        io.get_executor(),
        app_config{
            .id = "app" + std::to_string(i), .corpid = "ww0123456789abcdef", .secret = secret},
        refresh_config{}, 2500ms, upstream, store));
    refreshers.back()->start();
  }
  ASSERT_TRUE(run_until(io, [&] { return store.saves == app_count; }));
  for (auto& refresher : refreshers) refresher->stop();
  io.run_for(50ms);

  EXPECT_EQ(wecom.gettoken_calls(), app_count);
  EXPECT_EQ(store.slots_in_use_when_asked, std::vector<std::size_t>(app_count, 1))
      << "each asked holding the one slot";
  EXPECT_EQ(store.leases_asked, std::vector<std::chrono::milliseconds>(app_count, 2500ms));
  EXPECT_EQ(upstream.load()->tls_handshakes(), 1u) << "the calls shared one connection";
}

TEST_F(refresher_upstream_test, a_refresher_stopped_during_its_call_releases_the_lock) {
  fake::fake_wecom wecom(fake::fake_options{.answer_delay = 300ms, .tls = *tls_});
  wecom.add_app("ww0123456789abcdef", "s");
  asio::io_context io;
  shared_upstream upstream(std::make_shared<upstream_client>(config_for(wecom, 2500ms)));
  granting_store store(upstream);
  auto refresher = std::make_shared<app_refresher>(
      io.get_executor(), app_config{.id = "hr", .corpid = "ww0123456789abcdef", .secret = "s"},
      refresh_config{}, 2500ms, upstream, store);
  refresher->start();
  ASSERT_TRUE(run_until(io, [&] { return wecom.gettoken_calls() == 1; })) << "no call made";
  ASSERT_TRUE(store.releases.empty());

  refresher->stop();  // while upstream takes its 300 ms
  ASSERT_TRUE(run_until(io, [&] { return !store.releases.empty(); }))
      << "the lock was left to its lease";
  EXPECT_EQ(store.releases, std::vector<std::chrono::milliseconds>{0ms})
      << "no cool-down: another replica may call at once";
  EXPECT_EQ(store.saves, 0) << "a stopped refresher's token goes unused";
}

}  // namespace
}  // namespace token_broker
