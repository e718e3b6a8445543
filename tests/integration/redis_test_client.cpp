#include "redis_test_client.hpp"

#include <hiredis/hiredis.h>
#include <poll.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;

// Long enough for a loaded CI machine, short enough that a stuck server fails the test soon.
constexpr auto connect_timeout = 2s;
constexpr auto command_timeout = 5s;

struct reply_deleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using owned_reply = std::unique_ptr<redisReply, reply_deleter>;

timeval to_timeval(std::chrono::microseconds duration) {
  return timeval{.tv_sec = static_cast<time_t>(duration.count() / 1'000'000),
                 .tv_usec = static_cast<suseconds_t>(duration.count() % 1'000'000)};
}

std::string describe_failure(const redisContext* context) {
  return context == nullptr ? "out of memory" : std::string(context->errstr);
}

redis_reply convert(const redisReply& reply) {
  redis_reply converted;
  switch (reply.type) {
    case REDIS_REPLY_STRING:
      converted.type = redis_reply::kind::string;
      converted.string.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_STATUS:
      converted.type = redis_reply::kind::status;
      converted.string.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_ERROR:
      converted.type = redis_reply::kind::error;
      converted.string.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_INTEGER:
      converted.type = redis_reply::kind::integer;
      converted.integer = reply.integer;
      break;
    case REDIS_REPLY_ARRAY:
      converted.type = redis_reply::kind::array;
      for (std::size_t i = 0; i < reply.elements; ++i) {
        converted.elements.push_back(convert(*reply.element[i]));
      }
      break;
    default:
      converted.type = redis_reply::kind::nil;
  }
  return converted;
}

redis_connection connect(std::uint16_t port) {
  redis_connection connection(redisConnectWithTimeout(
      "127.0.0.1", port,
      to_timeval(std::chrono::duration_cast<std::chrono::microseconds>(connect_timeout))));
  if (!connection || connection->err) {
    throw std::runtime_error("cannot connect to Redis on port " + std::to_string(port) + ": " +
                             describe_failure(connection.get()));
  }
  redisSetTimeout(connection.get(), to_timeval(command_timeout));
  return connection;
}

redis_reply run(redisContext& context, const std::vector<std::string>& arguments) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& argument : arguments) {
    argv.push_back(argument.data());
    lengths.push_back(argument.size());
  }
  const owned_reply reply(static_cast<redisReply*>(
      redisCommandArgv(&context, static_cast<int>(argv.size()), argv.data(), lengths.data())));
  if (!reply) throw std::runtime_error("Redis connection failed: " + describe_failure(&context));
  return convert(*reply);
}

redis_reply expect_success(redis_reply reply, const std::string& what) {
  if (reply.type == redis_reply::kind::error) {
    throw std::runtime_error(what + " failed: " + reply.string);
  }
  return reply;
}

// A prefix as a SCAN MATCH pattern that matches it literally.
std::string literal_pattern(const std::string& prefix) {
  std::string pattern;
  for (const char c : prefix) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') pattern += '\\';
    pattern += c;
  }
  return pattern + "*";
}

}  // namespace

void redis_connection_deleter::operator()(redisContext* context) const {
  redisFree(context);
}

std::uint16_t fixture_redis_port() {
  const char* directory = std::getenv("TOKEN_BROKER_TEST_REDIS_DIR");
  if (directory == nullptr || *directory == '\0') {
    throw std::runtime_error(
        "TOKEN_BROKER_TEST_REDIS_DIR is not set: run these tests through ctest (its redis_server "
        "fixture starts the server), or start one with tests/redis/redis-fixture.sh start DIR "
        "and set TOKEN_BROKER_TEST_REDIS_DIR=DIR");
  }
  std::ifstream file(std::string(directory) + "/port");
  int port = 0;
  if (!(file >> port) || port <= 0 || port > 65535) {
    throw std::runtime_error(std::string("no redis-server port in ") + directory + "/port");
  }
  return static_cast<std::uint16_t>(port);
}

redis_client::redis_client(std::uint16_t port, const std::string& password, int database)
    : connection_(connect(port)) {
  if (!password.empty()) expect_success(command({"AUTH", password}), "AUTH");
  if (database != 0) expect_success(command({"SELECT", std::to_string(database)}), "SELECT");
}

redis_reply redis_client::command(const std::vector<std::string>& arguments) {
  return run(*connection_, arguments);
}

std::optional<std::string> redis_client::get(const std::string& key) {
  const auto reply = expect_success(command({"GET", key}), "GET " + key);
  if (reply.type == redis_reply::kind::nil) return std::nullopt;
  return reply.string;
}

long long redis_client::pttl(const std::string& key) {
  return expect_success(command({"PTTL", key}), "PTTL " + key).integer;
}

redis_client::expiring_value redis_client::get_with_pttl(const std::string& key) {
  expect_success(command({"MULTI"}), "MULTI");
  expect_success(command({"GET", key}), "GET " + key);
  expect_success(command({"PTTL", key}), "PTTL " + key);
  const auto results = expect_success(command({"EXEC"}), "EXEC");
  if (results.elements.size() != 2) throw std::runtime_error("EXEC: GET and PTTL not answered");
  expiring_value answer{.pttl = results.elements[1].integer};
  if (results.elements[0].type == redis_reply::kind::string) {
    answer.value = results.elements[0].string;
  }
  return answer;
}

void redis_client::flush_prefix(const std::string& prefix) {
  std::string cursor = "0";
  do {
    const auto page = expect_success(
        command({"SCAN", cursor, "MATCH", literal_pattern(prefix), "COUNT", "1000"}), "SCAN");
    cursor = page.elements.at(0).string;
    std::vector<std::string> del{"DEL"};
    for (const auto& key : page.elements.at(1).elements) del.push_back(key.string);
    if (del.size() > 1) expect_success(command(del), "DEL");
  } while (cursor != "0");
}

redis_subscriber::redis_subscriber(std::uint16_t port, const std::string& channel)
    : connection_(connect(port)) {
  // The confirmation comes back only once the server has registered the subscription.
  const auto confirmation = run(*connection_, {"SUBSCRIBE", channel});
  if (confirmation.type != redis_reply::kind::array || confirmation.elements.empty() ||
      confirmation.elements[0].string != "subscribe") {
    throw std::runtime_error("SUBSCRIBE " + channel + " was not confirmed");
  }
}

std::optional<std::string> redis_subscriber::next_message(std::chrono::milliseconds timeout) {
  // Waits with poll() rather than the socket timeout: a read that times out leaves a hiredis
  // context in its error state for good, and the subscription would be lost with it.
  const auto give_up_at = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    void* parsed = nullptr;
    if (redisGetReplyFromReader(connection_.get(), &parsed) != REDIS_OK) {
      throw std::runtime_error("Redis subscription broken: " + describe_failure(connection_.get()));
    }
    if (parsed != nullptr) {
      const owned_reply reply(static_cast<redisReply*>(parsed));
      const auto message = convert(*reply);
      // ["message", channel, payload]; anything else (a later confirmation) is not a message.
      if (message.type == redis_reply::kind::array && message.elements.size() == 3 &&
          message.elements[0].string == "message") {
        return message.elements[2].string;
      }
      continue;
    }

    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(give_up_at - std::chrono::steady_clock::now());
    if (left <= 0ms) return std::nullopt;
    pollfd readable{.fd = connection_->fd, .events = POLLIN, .revents = 0};
    const int ready = poll(&readable, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw std::runtime_error("poll on the Redis subscription failed");
    if (ready == 0) return std::nullopt;
    if (redisBufferRead(connection_.get()) != REDIS_OK) {
      throw std::runtime_error("Redis subscription broken: " + describe_failure(connection_.get()));
    }
  }
}

fixture_keyspace::fixture_keyspace(std::string prefix)
    : prefix_(std::move(prefix)), port_(fixture_redis_port()), client_(port_) {
  client_.flush_prefix(prefix_);
}

fixture_keyspace::~fixture_keyspace() {
  try {
    client_.flush_prefix(prefix_);
  } catch (const std::exception&) {
    // The fixture server is gone; it took the keys with it.
  }
}

}  // namespace token_broker::testing
