// A broker test on the CTest fixture's redis-server, in a key prefix of its own: tests sharing
// that server never see each other's keys, and the keys are gone when the test ends.
#pragma once

#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>

#include "redis_test_client.hpp"

namespace token_broker::testing {

// Unique within the run (the pid) and within the process (the counter).
inline std::string unique_key_prefix() {
  static std::atomic<int> counter{0};
  // Appended, not added up: g++ 12 warns (falsely) about operator+ on these temporaries.
  std::string prefix = "t";
  prefix.append(std::to_string(getpid())).append("-").append(std::to_string(++counter));
  return prefix.append(":");
}

// `Fixture` (broker_fixture or one built on it) with a keyspace on the fixture's Redis.
template <class Fixture>
class with_redis_keyspace : public Fixture {
 protected:
  void SetUp() override {
    Fixture::SetUp();
    try {
      keys_.emplace(prefix_);
    } catch (const std::exception& failure) {
      FAIL() << failure.what();
    }
  }

  void TearDown() override {
    Fixture::TearDown();  // stops the brokers first: nothing writes our keys after this
    keys_.reset();
  }

  std::string prefix_ = unique_key_prefix();
  std::optional<fixture_keyspace> keys_;
};

}  // namespace token_broker::testing
