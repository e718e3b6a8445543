// Redis as production runs it (SPEC §3 redis, §5): TLS only, with the client certificate Redis
// asks for by default; an ACL user allowed the broker's key prefix and events channel and
// nothing else (the README's ACL); its password from a file. Each test runs a redis-server of
// its own; the tokens are read back with redis-cli, as an operator would.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "broker_fixture.hpp"
#include "redis_process.hpp"
#include "redis_test_client.hpp"
#include "tls_material.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

const std::string prefix = "acl:";

// The README's ACL for the broker's user: its keys and its events channel; the commands it
// sends and those its scripts call.
std::vector<std::string> broker_acl(const std::string& password) {
  return {"on",
          ">" + password,
          "resetkeys",
          "~" + prefix + "*",
          "resetchannels",
          "&" + prefix + "events",
          "-@all",
          "+ping",
          "+select",
          "+subscribe",
          "+evalsha",
          "+eval",
          "+get",
          "+set",
          "+del",
          "+exists",
          "+pttl",
          "+pexpire",
          "+publish",
          "+time",
          "+hget",
          "+hgetall",
          "+hset",
          "+hdel",
          "+hincrby",
          "+zadd",
          "+zcard",
          "+zrange",
          "+zrem",
          "+zremrangebyscore",
          "+script|load"};
}

// What `command` prints, run by the shell; its exit status must be 0.
std::string output_of(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), &pclose);
  if (!pipe) throw std::runtime_error("popen failed");
  std::string output;
  std::array<char, 512> chunk;
  while (const auto read = std::fread(chunk.data(), 1, chunk.size(), pipe.get())) {
    output.append(chunk.data(), read);
  }
  while (!output.empty() && output.back() == '\n') output.pop_back();
  return output;
}

// Polls until `probe` answers `expected` or `limit` passes; the last answer.
template <class Probe>
auto await_answer(Probe probe, const decltype(probe())& expected, milliseconds limit) {
  const auto give_up_at = steady_clock::now() + limit;
  auto answer = probe();
  while (answer != expected && steady_clock::now() < give_up_at) {
    std::this_thread::sleep_for(50ms);
    answer = probe();
  }
  return answer;
}

double redis_up(const broker_process& broker) {
  return metric_sample(http_get(broker.port(), "/metrics").body, "token_broker_redis_up");
}

class redis_security_test : public broker_fixture {
 protected:
  void SetUp() override {
    broker_fixture::SetUp();
    redis_ca_ = scratch_.write("redis-ca.pem", pki_.ca_pem);
    server_files_ = {scratch_.write("redis-server.pem", pki_.certificate_pem),
                     scratch_.write("redis-server.key", pki_.private_key_pem), redis_ca_};
    client_certificate_ = scratch_.write("client.pem", pki_.client_certificate_pem);
    client_key_ = scratch_.write("client.key", pki_.client_private_key_pem);
  }

  json config_for(const json& redis) const {
    auto config = make_config(free_port());
    config["redis"] = redis;
    config["redis"]["key_prefix"] = prefix;
    return config;
  }

  std::string redis_cli_tls(std::uint16_t port, const std::string& arguments) const {
    return output_of("redis-cli --tls --cacert " + redis_ca_.string() + " --cert " +
                     client_certificate_.string() + " --key " + client_key_.string() + " -p " +
                     std::to_string(port) + " " + arguments + " 2>&1");
  }

  const fake::tls_material pki_ = fake::generate_tls_material();
  std::filesystem::path redis_ca_, client_certificate_, client_key_;
  redis_tls_files server_files_;
};

TEST_F(redis_security_test, a_tls_only_redis_that_wants_client_certificates_holds_the_tokens) {
  add_app("hr");
  const redis_process redis(free_port(), scratch_.path(), {}, server_files_);
  const auto& broker = start_broker(config_for(
      {{"url", "rediss://127.0.0.1:" + std::to_string(redis.port())},
       {"tls",
        {{"ca_file", redis_ca_}, {"cert_file", client_certificate_}, {"key_file", client_key_}}}}));

  const auto token = token_of(await_token(broker, "hr", 5s));
  ASSERT_FALSE(token.empty());
  EXPECT_EQ(
      await_answer([&] { return redis_cli_tls(redis.port(), "GET " + prefix + "access_token:hr"); },
                   token, 5s),
      token);
  EXPECT_TRUE(log_shows(
      broker, "redis commands connected to 127.0.0.1:" + std::to_string(redis.port()) + "/0 (TLS)",
      1s));
  EXPECT_EQ(redis_up(broker), 1);
}

// A certificate that does not chain to redis.tls.ca_file is refused, with a log line that
// says so; Redis is down to the broker, and tokens are served from memory all the same.
TEST_F(redis_security_test, a_redis_certificate_from_another_ca_is_refused_clearly) {
  add_app("hr");
  const redis_process redis(free_port(), scratch_.path(), {}, server_files_);
  const auto other_ca = scratch_.write("other-ca.pem", fake::generate_tls_material().ca_pem);
  const auto& broker = start_broker(config_for(
      {{"url", "rediss://127.0.0.1:" + std::to_string(redis.port())},
       {"tls",
        {{"ca_file", other_ca}, {"cert_file", client_certificate_}, {"key_file", client_key_}}}}));

  const auto answer = await_token(broker, "hr", 5s);
  EXPECT_EQ(answer.status, 200u) << answer.error << answer.body;
  EXPECT_TRUE(log_shows(broker,
                        "unreachable at 127.0.0.1:" + std::to_string(redis.port()) +
                            ": TLS: Redis's certificate was rejected: ",
                        5s))
      << broker.log();
  EXPECT_EQ(redis_up(broker), 0);
  EXPECT_EQ(redis_cli_tls(redis.port(), "DBSIZE"), "0");
}

// redis.tls.server_name, not the URL's host, is the name the certificate must carry: one the
// certificate names connects to 127.0.0.1, one it does not is refused and says why.
TEST_F(redis_security_test, redis_tls_server_name_is_the_name_checked) {
  add_app("hr");
  const redis_process redis(free_port(), scratch_.path(), {}, server_files_);
  const auto redis_with_name = [&](const std::string& name) {
    return config_for({{"url", "rediss://127.0.0.1:" + std::to_string(redis.port())},
                       {"tls",
                        {{"ca_file", redis_ca_},
                         {"cert_file", client_certificate_},
                         {"key_file", client_key_},
                         {"server_name", name}}}});
  };
  const auto& named = start_broker(redis_with_name("localhost"));
  const auto& misnamed = start_broker(redis_with_name("redis.internal"));

  EXPECT_TRUE(log_shows(
      named, "redis commands connected to 127.0.0.1:" + std::to_string(redis.port()) + "/0 (TLS)",
      5s))
      << named.log();
  EXPECT_TRUE(log_shows(misnamed, "Redis's certificate was rejected: hostname mismatch", 5s))
      << misnamed.log();
  EXPECT_EQ(redis_up(named), 1);
  EXPECT_EQ(redis_up(misnamed), 0);
}

// The README's ACL is all the broker needs: two replicas share one token through it (scripts,
// locks, events), with the password read from a file.
TEST_F(redis_security_test, an_acl_user_limited_to_its_prefix_and_channel_runs_the_fleet) {
  const auto hr = add_app("hr");
  const std::string password = "acl-" + hr.secret;
  forbid_in_logs(password, "the Redis password");
  std::vector<std::string> arguments{"--requirepass", "admin-" + hr.secret, "--user",
                                     "token-broker"};
  for (auto& rule : broker_acl(password)) arguments.push_back(std::move(rule));
  const redis_process redis(free_port(), scratch_.path(), arguments);
  const auto password_file = scratch_.write("redis-password", password + "\n");
  const json redis_settings = {
      {"url", "redis://token-broker@127.0.0.1:" + std::to_string(redis.port()) + "/0"},
      {"password_file", password_file}};
  const auto& first = start_broker(config_for(redis_settings));
  const auto token = token_of(await_token(first, "hr", 5s));
  ASSERT_FALSE(token.empty());
  const auto& second = start_broker(config_for(redis_settings));
  EXPECT_EQ(token_of(await_token(second, "hr", 5s)), token);
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1) << "the second replica called upstream";

  redis_client admin(redis.port(), "admin-" + hr.secret);
  EXPECT_EQ(admin.get(prefix + "access_token:hr"), token);
  EXPECT_EQ(redis_up(first), 1);
  EXPECT_EQ(redis_up(second), 1);
  for (const auto* broker : {&first, &second}) {
    EXPECT_EQ(broker->log().find("NOPERM"), std::string::npos) << broker->log();
    EXPECT_EQ(broker->log().find("refused"), std::string::npos) << broker->log();
  }
}

TEST_F(redis_security_test, a_wrong_redis_password_is_logged_clearly_and_tokens_are_served) {
  const auto hr = add_app("hr");
  const std::string wrong = "wrong-" + hr.secret;
  forbid_in_logs(wrong, "the Redis password");
  std::vector<std::string> arguments{"--user", "token-broker"};
  for (auto& rule : broker_acl("right-" + hr.secret)) arguments.push_back(std::move(rule));
  const redis_process redis(free_port(), scratch_.path(), arguments);
  const auto& broker = start_broker(config_for(
      {{"url", "redis://token-broker:" + wrong + "@127.0.0.1:" + std::to_string(redis.port())}}));

  const auto answer = await_token(broker, "hr", 5s);
  EXPECT_EQ(answer.status, 200u) << answer.error << answer.body;
  EXPECT_TRUE(log_shows(broker, "AUTH failed: WRONGPASS", 5s)) << broker.log();
  EXPECT_EQ(redis_up(broker), 0);
}

}  // namespace
}  // namespace token_broker::testing
