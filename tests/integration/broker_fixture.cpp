#include "broker_fixture.hpp"

#include <signal.h>

#include <iostream>
#include <thread>

#include "token_broker/core/secret_digest.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// Key generation is cheap but not free; one PKI serves every test.
const fake::tls_material& shared_tls() {
  static const fake::tls_material material = fake::generate_tls_material();
  return material;
}

}  // namespace

std::string token_of(const http_answer& answer) {
  return json::parse(answer.body).at("access_token").get<std::string>();
}

std::int64_t expires_at_of(const http_answer& answer) {
  return json::parse(answer.body).at("expires_at").get<std::int64_t>();
}

std::string hex_sha256(const std::string& key) {
  std::string hex;
  for (const unsigned char byte : sha256(key)) {
    static constexpr char digits[] = "0123456789abcdef";
    hex += digits[byte >> 4];
    hex += digits[byte & 0xf];
  }
  return hex;
}

double metric_sample(const std::string& page, const std::string& series) {
  const auto at = page.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(page.substr(at + series.size() + 2));
}

bool log_shows(const broker_process& broker, const std::string& text,
               std::chrono::milliseconds limit) {
  const auto give_up_at = std::chrono::steady_clock::now() + limit;
  while (broker.log().find(text) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= give_up_at) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

void broker_fixture::SetUp() {
  fake_ = std::make_unique<fake::fake_wecom>(fake::fake_options{.tls = shared_tls()});
  ca_file_ = scratch_.write("ca.pem", shared_tls().ca_pem);
}

void broker_fixture::TearDown() {
  for (const auto& broker : brokers_) {
    // Every broker stops the way an operator stops it, cleanly, and its sanitizers (in the
    // asan preset) report at exit.
    if (broker->running()) {
      EXPECT_EQ(broker->stop(SIGTERM, 5s), 0);
    }
    const auto log = broker->log();
    for (const auto* alarm : {"AddressSanitizer", "LeakSanitizer", "runtime error:"}) {
      EXPECT_EQ(log.find(alarm), std::string::npos) << alarm;
    }
    // Whatever a test did, no secret may have reached the broker's output.
    for (const auto& app : apps_) {
      EXPECT_EQ(log.find(app.secret), std::string::npos) << "secret of " << app.id << " logged";
    }
    for (const auto& forbidden : forbidden_in_logs_) {
      EXPECT_EQ(log.find(forbidden.text), std::string::npos) << forbidden.what << " logged";
    }
    EXPECT_EQ(log.find("corpsecret"), std::string::npos) << "gettoken URL logged";
    if (HasFailure()) {
      constexpr std::size_t tail = 12000;
      std::cout << "--- broker log (last " << tail << " bytes) ---\n"
                << log.substr(log.size() > tail ? log.size() - tail : 0) << "---\n";
    }
  }
}

app_spec broker_fixture::add_app(const std::string& id) {
  app_spec app{id, "S3cret-" + id + "-" + std::to_string(free_port())};
  fake_->add_app(corpid, app.secret);
  apps_.push_back(app);
  return app;
}

void broker_fixture::forbid_in_logs(std::string text, std::string what) {
  forbidden_in_logs_.push_back({std::move(text), std::move(what)});
}

json broker_fixture::make_config(std::uint16_t port, const json& changes) const {
  json config = {
      {"listen", "127.0.0.1:" + std::to_string(port)},
      {"threads", 2},
      {"log_level", "trace"},
      {"upstream",
       {{"base_url", fake_->base_url()}, {"ca_file", ca_file_.string()}, {"timeout_ms", 2000}}},
      {"refresh",
       {{"ahead_s", 300},
        {"jitter_s", 0},
        {"retry_min_ms", 100},
        {"retry_max_ms", 1000},
        {"min_interval_s", 0}}},
      {"apps", json::object()},
  };
  for (const auto& app : apps_) {
    config["apps"][app.id] = {{"corpid", corpid}, {"secret", app.secret}};
  }
  config.merge_patch(changes);
  return config;
}

broker_process& broker_fixture::start_broker(const json& config, std::optional<unsigned> open_files,
                                             const std::vector<std::string>& environment) {
  // Readiness is checked over plain HTTP: on the first listener that is a "127.0.0.1:port".
  const auto& listen = config.at("listen");
  std::string plain;
  for (const auto& each : listen.is_array() ? listen : json::array({listen})) {
    if (each.is_string() && each.get<std::string>().starts_with("127.0.0.1:")) {
      plain = each.get<std::string>();
      break;
    }
  }
  if (plain.empty()) throw std::invalid_argument("the config needs a plain 127.0.0.1 listener");
  const auto port = static_cast<std::uint16_t>(std::stoi(plain.substr(10)));
  const auto path = scratch_.write("config-" + std::to_string(port) + ".json", config.dump(2));
  brokers_.push_back(std::make_unique<broker_process>(path, port, open_files, environment));
  return *brokers_.back();
}

broker_process& broker_fixture::start_broker() {
  return start_broker(make_config(free_port()));
}

void broker_fixture::reload_broker(broker_process& broker, const json& config) {
  const auto reloads_logged = [&] {
    const auto log = broker.log();
    std::size_t count = 0;
    for (auto at = log.find("reload: "); at != std::string::npos;
         at = log.find("reload: ", at + 1)) {
      ++count;
    }
    return count;
  };
  scratch_.write("config-" + std::to_string(broker.port()) + ".json", config.dump(2));
  const auto before = reloads_logged();
  broker.send(SIGHUP);
  const auto give_up_at = std::chrono::steady_clock::now() + 5s;
  while (reloads_logged() == before) {
    ASSERT_LT(std::chrono::steady_clock::now(), give_up_at) << "no reload logged";
    std::this_thread::sleep_for(20ms);
  }
}

http_answer broker_fixture::get_token(const broker_process& broker, const std::string& app) {
  return http_get(broker.port(), "/v1/apps/" + app + "/token");
}

http_answer broker_fixture::await_token(const broker_process& broker, const std::string& app,
                                        std::chrono::milliseconds limit) {
  const auto give_up_at = std::chrono::steady_clock::now() + limit;
  http_answer answer;
  while (std::chrono::steady_clock::now() < give_up_at) {
    answer = get_token(broker, app);
    if (answer.status == 200) break;
    std::this_thread::sleep_for(50ms);
  }
  return answer;
}

std::string behaviour_test_name(fake::expiry_behaviour behaviour, std::string_view issued) {
  const std::string what(issued);
  switch (behaviour) {
    case fake::expiry_behaviour::same_token_keeps_expiry:
      return "a_same_" + what + "_full_expires_in";
    case fake::expiry_behaviour::same_token_seconds_left:
      return "b_same_" + what + "_seconds_left";
    case fake::expiry_behaviour::new_token_each_call:
      break;
  }
  return "c_new_" + what + "_each_call";
}

}  // namespace token_broker::testing
