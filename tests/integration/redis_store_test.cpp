// The save script's decisions on the fixture's real redis-server (SPEC §5): a different value
// replaces only one that ends sooner, and the same value's end only ever moves earlier. A
// writer that offers the same value with a later end is told that the store knows better, so
// that it adopts the earlier end: in upstream behaviour (a) a token comes back with its full
// lifetime, and only the replica that fetched it first knows when it really ends.
#include <gtest/gtest.h>

#include <future>

#include "redis_keyspace_fixture.hpp"
#include "token_broker/core/clock.hpp"
#include "token_broker/core/supervisor.hpp"
#include "token_broker/store/redis_token_store.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

const credential_id hr{credential_kind::access_token, "hr"};

class redis_store_test : public testing::with_redis_keyspace<::testing::Test> {
 protected:
  void SetUp() override {
    with_redis_keyspace::SetUp();
    if (HasFatalFailure()) return;
    redis_config settings;
    settings.host = "127.0.0.1";
    settings.port = keys_->port();
    settings.url = "redis://127.0.0.1:" + std::to_string(settings.port) + "/0";
    settings.key_prefix = prefix_;
    store_.emplace(io_.get_executor(), settings);
    store_->start(tasks_, [](const std::optional<credential_id>&) {});
    const auto give_up_at = std::chrono::steady_clock::now() + 5s;
    while (!store_->up().value_or(false) && std::chrono::steady_clock::now() < give_up_at) {
      io_.run_for(5ms);
    }
    ASSERT_TRUE(store_->up().value_or(false)) << "no connection to the fixture's Redis";
  }

  void TearDown() override {
    if (store_) store_->stop();
    io_.run_for(100ms);
    with_redis_keyspace::TearDown();
  }

  save_outcome save(const std::string& value, milliseconds left) {
    // Named: the coroutine holds a reference to it until the future is ready.
    const stored_token offered{value, clock::now() + left};
    auto saved = asio::co_spawn(io_, store_->save(hr, offered), asio::use_future);
    const auto give_up_at = std::chrono::steady_clock::now() + 5s;
    while (saved.wait_for(0s) != std::future_status::ready &&
           std::chrono::steady_clock::now() < give_up_at) {
      io_.run_for(5ms);
    }
    if (saved.wait_for(0s) != std::future_status::ready) {
      throw std::runtime_error("the save did not answer within 5 s");
    }
    return saved.get();
  }

  // What Redis holds: the value and its time left.
  testing::redis_client::expiring_value stored() {
    return keys_->client().get_with_pttl(prefix_ + "access_token:hr");
  }

  asio::io_context io_;
  supervisor tasks_;
  std::optional<redis_token_store> store_;
};

TEST_F(redis_store_test, the_same_token_offered_a_later_end_is_told_the_store_knows_better) {
  ASSERT_EQ(save("T1", 60s), save_outcome::written);
  EXPECT_EQ(save("T1", 90s), save_outcome::store_knows_better);
  auto held = stored();
  EXPECT_EQ(held.value, "T1");
  EXPECT_LE(held.pttl, 60'000) << "the end moved later";

  // An earlier end is taken; the same end again (within the rounding) changes nothing.
  EXPECT_EQ(save("T1", 30s), save_outcome::written);
  EXPECT_EQ(save("T1", 30s), save_outcome::written);
  held = stored();
  EXPECT_LE(held.pttl, 30'000);
  EXPECT_GT(held.pttl, 25'000);
}

TEST_F(redis_store_test, a_different_token_replaces_only_one_that_ends_sooner) {
  ASSERT_EQ(save("T1", 60s), save_outcome::written);
  EXPECT_EQ(save("T0", 30s), save_outcome::store_knows_better);
  EXPECT_EQ(stored().value, "T1");
  EXPECT_EQ(save("T2", 90s), save_outcome::written);
  const auto held = stored();
  EXPECT_EQ(held.value, "T2");
  EXPECT_GT(held.pttl, 60'000);
}

}  // namespace
}  // namespace token_broker
