// How store_sync tells, from a digest and a time left, whether this replica or the store is
// behind (store_sync.hpp).
#include "token_broker/credentials/store_sync.hpp"

#include <gtest/gtest.h>

namespace token_broker {
namespace {

using namespace std::chrono_literals;

const time_point t0 = time_point{} + std::chrono::hours{1000};
const wall_time_point wall_t0 = wall_time_point{} + std::chrono::hours{24 * 365 * 56};

token held_token(const std::string& value, time_point expires_at) {
  return token_from_expiry(value, expires_at, t0, wall_t0);
}

stored_digest stored(const std::string& value, time_point expires_at) {
  return stored_digest{.present = true, .expires_at = expires_at, .digest = token_digest(value)};
}

TEST(store_sync, a_digest_is_what_redis_gives_for_the_value) {
  // redis-cli EVAL "return redis.sha1hex('TOKEN-abc'):sub(1, 16)" 0
  EXPECT_EQ(token_digest("TOKEN-abc"), sha1_hex("TOKEN-abc").substr(0, 16));
  EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");  // FIPS 180 vector
}

TEST(store_sync, nothing_held_loads_what_is_stored) {
  EXPECT_EQ(compare_with_store(nullptr, stored("T", t0 + 7200s)), store_difference::store_is_newer);
  EXPECT_EQ(compare_with_store(nullptr, stored_digest{}), store_difference::none);
}

TEST(store_sync, a_held_token_the_store_lacks_is_written_back) {
  const auto held = held_token("T", t0 + 7200s);
  EXPECT_EQ(compare_with_store(&held, stored_digest{}), store_difference::store_is_behind);
}

TEST(store_sync, of_two_tokens_the_longer_lived_wins) {
  const auto held = held_token("T1", t0 + 7200s);
  EXPECT_EQ(compare_with_store(&held, stored("T2", t0 + 7300s)), store_difference::store_is_newer);
  EXPECT_EQ(compare_with_store(&held, stored("T0", t0 + 3600s)), store_difference::store_is_behind);
}

TEST(store_sync, the_same_token_agrees_within_the_rounding_and_only_ends_sooner) {
  const auto held = held_token("T", t0 + 7200s);
  // A round trip's worth of difference either way is agreement: no load, no write, no event.
  EXPECT_EQ(compare_with_store(&held, stored("T", t0 + 7200s - 30ms)), store_difference::none);
  EXPECT_EQ(compare_with_store(&held, stored("T", t0 + 7200s + 30ms)), store_difference::none);
  // Whoever knows it ends sooner is right: the store, or this replica.
  EXPECT_EQ(compare_with_store(&held, stored("T", t0 + 7000s)), store_difference::store_is_newer);
  EXPECT_EQ(compare_with_store(&held, stored("T", t0 + 7400s)), store_difference::store_is_behind);
}

}  // namespace
}  // namespace token_broker
