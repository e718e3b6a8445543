// A refresher's dealings with a shared store, against a scripted store (no Redis, no upstream
// call made).
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include "token_broker/credentials/engine.hpp"

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
  engine.start();
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

}  // namespace
}  // namespace token_broker
