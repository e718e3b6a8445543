// A small synchronous Redis client for assertions: what a reader that goes straight to Redis
// (SPEC §5) sees. Every call is bounded, so a stuck server fails the test instead of hanging it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct redisContext;

namespace token_broker::testing {

// The port of the redis-server the CTest fixture started (read from
// $TOKEN_BROKER_TEST_REDIS_DIR/port). Throws std::runtime_error, saying how to run the tests,
// without one.
std::uint16_t fixture_redis_port();

struct redis_reply {
  enum class kind { nil, string, integer, array, status, error };
  kind type = kind::nil;
  std::string string;  // for string, status and error
  long long integer = 0;
  std::vector<redis_reply> elements;
};

struct redis_connection_deleter {
  void operator()(redisContext* context) const;
};
using redis_connection = std::unique_ptr<redisContext, redis_connection_deleter>;

class redis_client {
 public:
  // Connects to 127.0.0.1:`port`, authenticates if `password` is not empty and selects
  // `database`. Throws std::runtime_error if any of it fails.
  explicit redis_client(std::uint16_t port, const std::string& password = {}, int database = 0);

  // Throws std::runtime_error when the connection fails (a Redis error is a reply).
  redis_reply command(const std::vector<std::string>& arguments);

  std::optional<std::string> get(const std::string& key);
  // Milliseconds to live: -2 if the key does not exist, -1 if it has no expiry.
  long long pttl(const std::string& key);

  struct expiring_value {
    std::optional<std::string> value;
    long long pttl = -2;
  };
  // GET and PTTL in one transaction, so the expiry belongs to the value even while a writer
  // replaces the key.
  expiring_value get_with_pttl(const std::string& key);
  // Deletes every key starting with `prefix`.
  void flush_prefix(const std::string& prefix);

 private:
  redis_connection connection_;
};

// A test's keys on the CTest fixture's redis-server, kept apart from other tests' by their
// prefix: a client on the server, and the keys flushed when the test begins (left over from an
// earlier run that had the same pid) and when it ends. Throws as fixture_redis_port() does.
class fixture_keyspace {
 public:
  explicit fixture_keyspace(std::string prefix);
  ~fixture_keyspace();  // a server that is gone took the keys with it
  fixture_keyspace(const fixture_keyspace&) = delete;
  fixture_keyspace& operator=(const fixture_keyspace&) = delete;

  std::uint16_t port() const { return port_; }
  redis_client& client() { return client_; }

 private:
  std::string prefix_;
  std::uint16_t port_;
  redis_client client_;
};

// A connection subscribed to one channel. Subscribed once constructed: every message
// published after that is kept for next_message.
class redis_subscriber {
 public:
  redis_subscriber(std::uint16_t port, const std::string& channel);

  // The payload of the next message, or nothing if none arrives within `timeout`.
  std::optional<std::string> next_message(std::chrono::milliseconds timeout);

 private:
  redis_connection connection_;
};

}  // namespace token_broker::testing
