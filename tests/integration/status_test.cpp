// `token-broker status` through the real binary against a real broker (and the fake of
// WeCom): what it shows, whose credentials it shows, and its exit codes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "broker_fixture.hpp"
#include "scoped_env.hpp"
#include "tls_material.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using fake::fault;
using fake::fault_kind;
using nlohmann::json;

class status_test : public broker_fixture {
 protected:
  command_result status(const broker_process& broker, std::vector<std::string> extra = {}) {
    std::vector<std::string> arguments{"status", "--url",
                                       "http://127.0.0.1:" + std::to_string(broker.port())};
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    return run_broker_command(arguments);
  }

  // Until /readyz says every credential holds a value.
  static bool ready(const broker_process& broker) {
    return eventually([&] { return http_get(broker.port(), "/readyz").status == 200; }, 5s);
  }

  // The table row of `credential` and `kind`, or "" when the output has none.
  static std::string row_of(const std::string& output, const std::string& credential,
                            const std::string& kind) {
    const std::regex row("(^|\n)(" + credential + " +" + kind + " [^\n]*)");
    std::smatch found;
    return std::regex_search(output, found, row) ? found[2].str() : std::string();
  }
};

TEST_F(status_test, shows_each_app_fresh_with_the_brokers_expires_in_and_exits_0) {
  add_app("hr");
  const auto& broker =
      start_broker(make_config(free_port(), {{"apps", {{"hr", {{"tickets", {"jsapi"}}}}}}}));
  ASSERT_TRUE(ready(broker));
  const auto token = token_of(get_token(broker, "hr"));

  // The listing carries what status shows: seconds left on the broker's clock, and the outcome
  // of the last refresh.
  const auto listing = json::parse(http_get(broker.port(), "/v1/apps").body);
  ASSERT_EQ(listing.size(), 1u) << listing;
  EXPECT_GT(listing[0]["expires_in"].get<std::int64_t>(), 7000) << listing;
  EXPECT_EQ(listing[0]["last_refresh"]["outcome"], "ok") << listing;
  EXPECT_GE(listing[0]["last_refresh"]["seconds_ago"].get<std::int64_t>(), 0) << listing;
  EXPECT_EQ(listing[0]["tickets"]["jsapi_ticket"]["last_refresh"]["outcome"], "ok") << listing;

  const auto shown = status(broker);
  EXPECT_EQ(shown.exit_code, 0) << shown.output;
  EXPECT_NE(shown.output.find("Version:     " TOKEN_BROKER_VERSION), std::string::npos)
      << shown.output;
  EXPECT_NE(shown.output.find("Health:      ok"), std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find("Ready:       ready"), std::string::npos) << shown.output;
  const auto row = row_of(shown.output, "hr", "access_token");
  ASSERT_FALSE(row.empty()) << shown.output;
  EXPECT_TRUE(std::regex_search(row, std::regex(" fresh +1h 5\\dm \\d+s +ok \\d+s ago$"))) << row;
  EXPECT_TRUE(std::regex_search(row_of(shown.output, "hr", "jsapi_ticket"),
                                std::regex(" fresh +1h 5\\dm \\d+s +ok ")))
      << shown.output;
  EXPECT_EQ(shown.output.find(token), std::string::npos) << "status never prints a credential";
}

TEST_F(status_test, with_clients_a_key_is_needed_and_only_that_clients_apps_are_shown) {
  add_app("hr");
  add_app("crm");
  const std::string billing_key = "billing-key-0123456789abcdef0123456789";
  const std::string admin_key = "admin-key-0123456789abcdef0123456789ab";
  forbid_in_logs(billing_key, "a client key");
  const auto& broker = start_broker(make_config(
      free_port(), {{"clients",
                     {{"billing", {{"key_sha256", hex_sha256(billing_key)}, {"apps", {"hr"}}}},
                      {"admin", {{"key_sha256", hex_sha256(admin_key)}, {"apps", {"*"}}}}}}}));
  ASSERT_TRUE(ready(broker));

  {
    const scoped_env no_key("TOKEN_BROKER_KEY", nullptr);
    const auto refused = status(broker);
    EXPECT_EQ(refused.exit_code, 2) << refused.output;
    EXPECT_NE(refused.output.find("401 unauthorized"), std::string::npos) << refused.output;
    EXPECT_NE(refused.output.find("TOKEN_BROKER_KEY"), std::string::npos) << refused.output;
    EXPECT_EQ(std::count(refused.output.begin(), refused.output.end(), '\n'), 1)
        << "one line: " << refused.output;
  }
  {
    const scoped_env wrong_key("TOKEN_BROKER_KEY", "not-a-key-of-any-client");
    const auto refused = status(broker);
    EXPECT_EQ(refused.exit_code, 2) << refused.output;
    EXPECT_NE(refused.output.find("401"), std::string::npos) << refused.output;
    EXPECT_EQ(refused.output.find("not-a-key-of-any-client"), std::string::npos)
        << "the key is never printed";
  }
  {
    const scoped_env key("TOKEN_BROKER_KEY", billing_key.c_str());
    const auto shown = status(broker);
    EXPECT_EQ(shown.exit_code, 0) << shown.output;
    EXPECT_FALSE(row_of(shown.output, "hr", "access_token").empty()) << shown.output;
    EXPECT_TRUE(row_of(shown.output, "crm", "access_token").empty()) << shown.output;
    EXPECT_EQ(shown.output.find(billing_key), std::string::npos) << "the key is never printed";
  }
  // A key file (with its trailing newline, as `echo` writes it) in place of the environment.
  const scoped_env no_key("TOKEN_BROKER_KEY", nullptr);
  const auto key_file = scratch_.write("admin.key", admin_key + "\n");
  const auto shown = status(broker, {"--key-file", key_file.string()});
  EXPECT_EQ(shown.exit_code, 0) << shown.output;
  EXPECT_FALSE(row_of(shown.output, "hr", "access_token").empty()) << shown.output;
  EXPECT_FALSE(row_of(shown.output, "crm", "access_token").empty()) << shown.output;
}

TEST_F(status_test, a_failing_credential_exits_1_and_shows_wecoms_reason) {
  add_app("hr");
  const auto broken = add_app("broken");
  fake_->script_faults(broken.secret, std::vector<fault>(50, fault{.kind = fault_kind::errcode,
                                                                   .errcode = 40091,
                                                                   .errmsg = "secret invalid"}));
  const auto& broker = start_broker();
  const auto failing = [&] {
    const auto listing = json::parse(http_get(broker.port(), "/v1/apps").body, nullptr, false);
    if (!listing.is_array()) return false;
    for (const auto& app : listing) {
      if (app["app"] == "broken" && app["state"] == "failing") return true;
    }
    return false;
  };
  ASSERT_TRUE(eventually(failing, 5s));
  ASSERT_TRUE(eventually([&] { return get_token(broker, "hr").status == 200; }, 5s));

  const auto shown = status(broker);
  EXPECT_EQ(shown.exit_code, 1) << shown.output;
  EXPECT_NE(shown.output.find("Ready:       not ready (/readyz 503): no valid value for broken"),
            std::string::npos)
      << shown.output;
  EXPECT_TRUE(std::regex_search(row_of(shown.output, "broken", "access_token"),
                                std::regex(" failing +- +failed \\d+s ago: errcode 40091 "
                                           "secret invalid$")))
      << shown.output;
  EXPECT_TRUE(std::regex_search(row_of(shown.output, "hr", "access_token"), std::regex(" fresh ")))
      << shown.output;
}

TEST_F(status_test, over_https_and_a_unix_socket) {
  add_app("hr");
  const auto material = fake::generate_tls_material();
  const auto ca = scratch_.write("listener-ca.pem", material.ca_pem);
  const auto certificate = scratch_.write("listener.pem", material.certificate_pem);
  const auto key = scratch_.write("listener.key", material.private_key_pem);
  const auto socket_path = scratch_.path() / "api.sock";
  const auto tls_port = free_port();
  auto config = make_config(0);
  config["listen"] =
      json::array({"127.0.0.1:" + std::to_string(free_port()),
                   {{"address", "127.0.0.1:" + std::to_string(tls_port)},
                    {"tls", {{"cert_file", certificate.string()}, {"key_file", key.string()}}}},
                   "unix:" + socket_path.string()});
  const auto& broker = start_broker(config);
  ASSERT_TRUE(ready(broker));

  const auto over_tls =
      run_broker_command({"status", "--url", "https://localhost:" + std::to_string(tls_port),
                          "--ca-file", ca.string()});
  EXPECT_EQ(over_tls.exit_code, 0) << over_tls.output;
  EXPECT_FALSE(row_of(over_tls.output, "hr", "access_token").empty()) << over_tls.output;
  // Without the CA the system store does not trust the test's certificate.
  const auto untrusted =
      run_broker_command({"status", "--url", "https://127.0.0.1:" + std::to_string(tls_port)});
  EXPECT_EQ(untrusted.exit_code, 2) << untrusted.output;
  EXPECT_NE(untrusted.output.find("certificate verify failed"), std::string::npos)
      << untrusted.output;

  const auto over_socket = run_broker_command({"status", "--url", "unix:" + socket_path.string()});
  EXPECT_EQ(over_socket.exit_code, 0) << over_socket.output;
  EXPECT_FALSE(row_of(over_socket.output, "hr", "access_token").empty()) << over_socket.output;
}

TEST_F(status_test, bad_usage_or_no_broker_exits_2_and_help_exits_0) {
  const auto help = run_broker_command({"--help"});
  EXPECT_EQ(help.exit_code, 0) << help.output;
  for (const char* option :
       {"--config", "--check", "--hash-key", "--version", "--help", "status", "--url", "--key-file",
        "--ca-file", "--cert-file", "--cert-key-file", "exit status"}) {
    EXPECT_NE(help.output.find(option), std::string::npos) << option;
  }
  EXPECT_EQ(run_broker_command({"status", "--help"}).output, help.output);

  EXPECT_EQ(run_broker_command({"status", "--bogus"}).exit_code, 2);
  EXPECT_EQ(run_broker_command({"status", "--url", "ftp://127.0.0.1:1"}).exit_code, 2);
  EXPECT_EQ(run_broker_command({"status", "--url"}).exit_code, 2);
  EXPECT_EQ(run_broker_command({"status", "--ca-file", "/etc/hostname"}).exit_code, 2)
      << "--ca-file needs https";

  const auto unreachable =
      run_broker_command({"status", "--url", "http://127.0.0.1:" + std::to_string(free_port())});
  EXPECT_EQ(unreachable.exit_code, 2) << unreachable.output;
  EXPECT_NE(unreachable.output.find("Connection refused"), std::string::npos) << unreachable.output;
}

}  // namespace
}  // namespace token_broker::testing
