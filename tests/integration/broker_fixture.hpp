// The fixture every test of the real binary builds on: a fake WeCom over real TLS, apps
// registered with it, brokers started on generated configs, and the checks every broker's
// output must pass when its test ends.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "broker_process.hpp"
#include "fake_wecom.hpp"
#include "http_test_client.hpp"

namespace token_broker::testing {

inline constexpr const char* corpid = "ww0123456789abcdef";

struct app_spec {
  std::string id;
  std::string secret;
};

std::string token_of(const http_answer& answer);
std::int64_t expires_at_of(const http_answer& answer);  // Unix seconds
// What a client entry's key_sha256 holds for `key`.
std::string hex_sha256(const std::string& key);
// The value of one sample on a /metrics page, or -1 when the series is not there.
double metric_sample(const std::string& page, const std::string& series);
// Whether the broker's log shows `text` within `limit`.
bool log_shows(const broker_process& broker, const std::string& text,
               std::chrono::milliseconds limit);

// Polls `condition` every 20 ms until it holds or `limit` passes; whether it held.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit) {
  const auto give_up_at = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < give_up_at) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return condition();
}

// A parameterized test's name for an expiry behaviour, naming what the fake issues ("token",
// "ticket"): "a_same_token_full_expires_in", "b_…_seconds_left", "c_new_…_each_call".
std::string behaviour_test_name(fake::expiry_behaviour behaviour, std::string_view issued);

class broker_fixture : public ::testing::Test {
 protected:
  void SetUp() override;
  // Stops every broker still running with SIGTERM (expecting exit 0) and checks its log.
  void TearDown() override;

  // Registers an app with the fake and returns its spec; the secret is unique per test.
  app_spec add_app(const std::string& id);

  // Text that must never reach a broker's output, like the apps' secrets (checked at the end).
  void forbid_in_logs(std::string text, std::string what);

  // A config for the broker on `port` with every registered app; `changes` is merged in.
  nlohmann::json make_config(std::uint16_t port,
                             const nlohmann::json& changes = nlohmann::json::object()) const;

  // `environment`: "NAME=value" entries added to the broker's environment.
  broker_process& start_broker(const nlohmann::json& config,
                               std::optional<unsigned> open_files = std::nullopt,
                               const std::vector<std::string>& environment = {});
  broker_process& start_broker();

  http_answer get_token(const broker_process& broker, const std::string& app);
  // Rewrites the broker's config file and sends SIGHUP; returns once the reload is logged
  // (applied or refused).
  void reload_broker(broker_process& broker, const nlohmann::json& config);

  // Polls until the app's token is served or `limit` passes.
  http_answer await_token(const broker_process& broker, const std::string& app,
                          std::chrono::milliseconds limit);

  scratch_directory scratch_;
  std::unique_ptr<fake::fake_wecom> fake_;
  std::filesystem::path ca_file_;
  std::vector<app_spec> apps_;
  std::vector<std::unique_ptr<broker_process>> brokers_;

 private:
  struct forbidden_text {
    std::string text;
    std::string what;
  };
  std::vector<forbidden_text> forbidden_in_logs_;
};

}  // namespace token_broker::testing
