// Config loading to SPEC §3: every field read, defaults applied, and every bad value refused
// with its JSON path and a reason that never holds a secret.
#include "token_broker/config/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "scoped_env.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;
using testing::scoped_env;

// Every secret-like value in these tests contains this marker; no error message may.
constexpr std::string_view secret_marker = "hunter2";

constexpr std::string_view minimal = R"({
  "listen": "127.0.0.1:8080",
  "apps": {"hr": {"corpid": "ww1", "secret": "hunter2-hr"}}
})";

const std::string key_a(64, 'a');
const std::string key_b(64, 'b');

// `document` with the value at JSON pointer `pointer` set to `value` (JSON text).
std::string with(const std::string& pointer, std::string_view value,
                 std::string_view document = minimal) {
  auto parsed = nlohmann::ordered_json::parse(document);
  parsed[nlohmann::ordered_json::json_pointer(pointer)] = nlohmann::ordered_json::parse(value);
  return parsed.dump();
}

std::string without(const std::string& pointer, std::string_view document = minimal) {
  auto parsed = nlohmann::ordered_json::parse(document);
  const nlohmann::ordered_json::json_pointer location(pointer);
  parsed[location.parent_pointer()].erase(location.back());
  return parsed.dump();
}

std::string json_string(std::string_view text) {
  return nlohmann::json(text).dump();
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// A directory of its own under the system temp directory, removed with what it holds.
class temp_directory {
 public:
  temp_directory() {
    static int created = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("token_broker_config_test_" + std::to_string(::getpid()) + "_" +
             std::to_string(created++));
    std::filesystem::create_directories(path_);
  }
  ~temp_directory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  temp_directory(const temp_directory&) = delete;
  temp_directory& operator=(const temp_directory&) = delete;

  std::filesystem::path write(const std::string& name, std::string_view contents) const {
    const auto file = path_ / name;
    std::ofstream(file, std::ios::binary) << contents;
    return file;
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

config_error error_of(std::string_view text) {
  try {
    parse_config(text);
  } catch (const config_error& error) {
    return error;
  }
  ADD_FAILURE() << "accepted: " << text;
  return config_error("(accepted)", "");
}

TEST(config, reads_every_field_keeps_app_order_and_accepts_comments) {
  const temp_directory files;
  const auto ca_file = files.write("ca.pem", "not checked here: the TLS context parses it");
  const auto secret_file = files.write("alpha", "hunter2-alpha\n");
  const scoped_env env("TOKEN_BROKER_TEST_ZETA_SECRET", "hunter2-zeta");

  auto document = std::string(R"(// a leading comment
{
  "listen": "[::1]:9090",  // a trailing comment
  "threads": 3,
  "log_level": "debug",
  "upstream": {
    "base_url": "https://wecom.example.com:8443/proxy/",
    "ca_file": @ca_file@,
    "timeout_ms": 2500
  },
  /* a block
     comment */
  "refresh": {"ahead_s": 600, "jitter_s": 10, "retry_min_ms": 250, "retry_max_ms": 30000,
              "min_interval_s": 2},
  "redis": {"url": "redis://:hunter2@127.0.0.1:6379/1", "key_prefix": "test:"},
  "apps": {
    "zeta": {"corpid": "wwzeta", "agentid": 1000002, "secret_env": "TOKEN_BROKER_TEST_ZETA_SECRET"},
    "alpha": {"corpid": "wwalpha", "secret_file": @secret_file@},
    "mid.app-1": {"corpid": "wwalpha", "secret": "hunter2-mid"}
  },
  "clients": {
    "billing": {"key_sha256": "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff",
                "apps": ["zeta", "alpha"]},
    "admin": {"key_sha256": "@key_a@", "apps": ["*"]}
  }
})");
  document = replace_all(document, "@ca_file@", json_string(ca_file.string()));
  document = replace_all(document, "@secret_file@", json_string(secret_file.string()));
  document = replace_all(document, "@key_a@", key_a);
  const auto settings = parse_config(document);

  ASSERT_EQ(settings.listen.size(), 1u);
  EXPECT_EQ(settings.listen[0].address.to_string(), "[::1]:9090");
  EXPECT_FALSE(settings.listen[0].tls);
  EXPECT_EQ(settings.threads, 3u);
  EXPECT_EQ(settings.log_level, "debug");
  EXPECT_EQ(settings.upstream.host, "wecom.example.com");
  EXPECT_EQ(settings.upstream.port, "8443");
  EXPECT_EQ(settings.upstream.path_prefix, "/proxy");
  EXPECT_EQ(settings.upstream.ca_file, ca_file);
  EXPECT_EQ(settings.upstream.timeout, 2500ms);
  EXPECT_EQ(settings.refresh.ahead, 600s);
  EXPECT_EQ(settings.refresh.jitter, 10s);
  EXPECT_EQ(settings.refresh.retry_min, 250ms);
  EXPECT_EQ(settings.refresh.retry_max, 30000ms);
  EXPECT_EQ(settings.refresh.min_interval, 2s);
  ASSERT_TRUE(settings.redis);
  EXPECT_EQ(settings.redis->url, "redis://:hunter2@127.0.0.1:6379/1");
  EXPECT_EQ(settings.redis->key_prefix, "test:");

  ASSERT_EQ(settings.apps.size(), 3u);
  EXPECT_EQ(settings.apps[0].id, "zeta");
  EXPECT_EQ(settings.apps[0].corpid, "wwzeta");
  EXPECT_EQ(settings.apps[0].agentid, 1000002);
  EXPECT_EQ(settings.apps[0].source, secret_source::environment);
  EXPECT_EQ(settings.apps[0].secret, "hunter2-zeta");
  EXPECT_EQ(settings.apps[1].id, "alpha");
  EXPECT_EQ(settings.apps[1].agentid, std::nullopt);
  EXPECT_EQ(settings.apps[1].source, secret_source::file);
  EXPECT_EQ(settings.apps[1].secret, "hunter2-alpha");
  EXPECT_EQ(settings.apps[2].id, "mid.app-1");
  EXPECT_EQ(settings.apps[2].source, secret_source::inline_value);
  EXPECT_EQ(settings.apps[2].secret, "hunter2-mid");

  ASSERT_EQ(settings.clients.size(), 2u);
  EXPECT_EQ(settings.clients[0].name, "billing");
  const sha256_digest expected_key = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                      0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
                                      0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                      0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
  EXPECT_EQ(settings.clients[0].key_sha256, expected_key);
  EXPECT_FALSE(settings.clients[0].all_apps);
  EXPECT_EQ(settings.clients[0].apps, (std::vector<std::string>{"zeta", "alpha"}));
  EXPECT_EQ(settings.clients[1].name, "admin");
  EXPECT_TRUE(settings.clients[1].all_apps);
  EXPECT_TRUE(settings.clients[1].apps.empty());

  ASSERT_NE(settings.find_app("alpha"), nullptr);
  EXPECT_EQ(settings.find_app("alpha")->corpid, "wwalpha");
  EXPECT_EQ(settings.find_app("payroll"), nullptr);
}

TEST(config, applies_defaults) {
  const auto settings = parse_config(minimal);
  EXPECT_GE(settings.threads, 1u);
  EXPECT_LE(settings.threads, 256u);
  if (std::thread::hardware_concurrency() > 0 && std::thread::hardware_concurrency() <= 256) {
    EXPECT_EQ(settings.threads, std::thread::hardware_concurrency());
  }
  EXPECT_EQ(settings.log_level, "info");
  EXPECT_EQ(settings.upstream.base_url, "https://qyapi.weixin.qq.com");
  EXPECT_EQ(settings.upstream.host, "qyapi.weixin.qq.com");
  EXPECT_EQ(settings.upstream.port, "443");
  EXPECT_EQ(settings.upstream.path_prefix, "");
  EXPECT_EQ(settings.upstream.ca_file, std::nullopt);
  EXPECT_EQ(settings.upstream.timeout, 5000ms);
  EXPECT_EQ(settings.refresh.ahead, 300s);
  EXPECT_EQ(settings.refresh.jitter, 30s);
  EXPECT_EQ(settings.refresh.retry_min, 500ms);
  EXPECT_EQ(settings.refresh.retry_max, 60000ms);
  EXPECT_EQ(settings.refresh.min_interval, 5s);
  EXPECT_EQ(settings.refresh.ticket_calls_per_hour, 60u);
  EXPECT_FALSE(settings.apps[0].jsapi_ticket) << "only configured tickets are fetched";
  EXPECT_FALSE(settings.apps[0].agent_ticket);
  EXPECT_EQ(settings.redis, std::nullopt);
  EXPECT_TRUE(settings.clients.empty());
  EXPECT_EQ(settings.log_format, "text");
  EXPECT_EQ(settings.audit_log, std::nullopt);

  EXPECT_EQ(parse_config(with("/redis", "null")).redis, std::nullopt);
  EXPECT_EQ(parse_config(with("/redis", R"({"url": "redis://h:6379"})")).redis->key_prefix,
            "wecom:");
}

TEST(config, reads_listeners_and_every_kind_of_client_identity) {
  const auto settings = parse_config(R"({
    "listen": ["127.0.0.1:8080",
               {"address": "0.0.0.0:8443",
                "tls": {"cert_file": "/etc/hostname", "key_file": "/etc/hostname",
                        "client_ca_file": "/etc/hostname", "require_client_cert": true}},
               {"address": "[::]:8444", "tls": {"cert_file": "/etc/hostname", "key_file": "/etc/hostname"}},
               {"address": "unix:/run/token-broker/api.sock"}],
    "log_format": "json",
    "audit_log": "/var/log/token-broker/audit.log",
    "apps": {"hr": {"corpid": "ww1", "secret": "hunter2-hr"}},
    "clients": {
      "billing": {"key_sha256": ")" + key_a +
                                     R"(", "apps": ["hr"]},
      "web": {"cert_sha256": ")" + key_b +
                                     R"(", "apps": ["hr"]},
      "local": {"unix_uid": 1001, "apps": ["*"]}
    }
  })");
  ASSERT_EQ(settings.listen.size(), 4u);
  EXPECT_EQ(settings.listen[0], (listener_config{.address = {.host = "127.0.0.1", .port = 8080}}));
  ASSERT_TRUE(settings.listen[1].tls);
  EXPECT_EQ(settings.listen[1].address.to_string(), "0.0.0.0:8443");
  EXPECT_EQ(*settings.listen[1].tls, (listener_tls_config{.cert_file = "/etc/hostname",
                                                          .key_file = "/etc/hostname",
                                                          .client_ca_file = "/etc/hostname",
                                                          .require_client_cert = true}));
  ASSERT_TRUE(settings.listen[2].tls);
  EXPECT_EQ(settings.listen[2].tls->client_ca_file, std::nullopt);
  EXPECT_FALSE(settings.listen[2].tls->require_client_cert);
  EXPECT_EQ(settings.listen[3].address.type, listen_address::kind::unix_socket);
  EXPECT_FALSE(settings.listen[3].tls);
  EXPECT_EQ(settings.log_format, "json");
  EXPECT_EQ(settings.audit_log, "/var/log/token-broker/audit.log");

  ASSERT_EQ(settings.clients.size(), 3u);
  EXPECT_EQ(settings.clients[0].identity, client_identity::bearer_key);
  EXPECT_EQ(settings.clients[1].identity, client_identity::certificate);
  sha256_digest all_b{};
  all_b.fill(0xbb);
  EXPECT_EQ(settings.clients[1].cert_sha256, all_b);
  EXPECT_EQ(settings.clients[2].identity, client_identity::unix_uid);
  EXPECT_EQ(settings.clients[2].unix_uid, 1001u);
}

TEST(config, reads_tickets) {
  const auto settings = parse_config(with(
      "/refresh/ticket_calls_per_hour", "20",
      with("/apps/hr/tickets", R"(["agent_config", "jsapi"])", with("/apps/hr/agentid", "7"))));
  EXPECT_TRUE(settings.apps[0].jsapi_ticket);
  EXPECT_TRUE(settings.apps[0].agent_ticket);
  EXPECT_EQ(settings.refresh.ticket_calls_per_hour, 20u);
  const auto jsapi_only = parse_config(with("/apps/hr/tickets", R"(["jsapi"])"));
  EXPECT_TRUE(jsapi_only.apps[0].jsapi_ticket) << "the corp ticket needs no agentid";
  EXPECT_FALSE(jsapi_only.apps[0].agent_ticket);
  EXPECT_FALSE(parse_config(with("/apps/hr/tickets", "[]")).apps[0].jsapi_ticket);
}

TEST(config, reads_the_gateway) {
  const auto off = parse_config(with("/refresh/jitter_s", "1"));
  EXPECT_FALSE(off.gateway.enabled);
  EXPECT_EQ(off.gateway.timeout, 10000ms);
  EXPECT_EQ(off.gateway.max_body_bytes, 20u * 1024 * 1024);
  EXPECT_EQ(off.gateway.max_connections, 64u);
  EXPECT_EQ(off.gateway.budget, (api_budget_limits{9000, 140000, 0}));
  const auto on = parse_config(
      with("/gateway",
           R"({"enabled": true, "timeout_ms": 2500, "max_body_bytes": 1024, "max_connections": 8,
          "budget": {"per_minute": 30, "per_hour": 0, "concurrency": 4}})"));
  EXPECT_TRUE(on.gateway.enabled);
  EXPECT_EQ(on.gateway.timeout, 2500ms);
  EXPECT_EQ(on.gateway.max_body_bytes, 1024u);
  EXPECT_EQ(on.gateway.max_connections, 8u);
  EXPECT_EQ(on.gateway.budget, (api_budget_limits{30, 0, 4})) << "0: no cap";
}

TEST(config, reads_providers_each_secret_from_one_source) {
  const temp_directory files;
  const auto secret_file = files.write("isv-b", "hunter2-isv-b\n");
  const scoped_env env("TOKEN_BROKER_TEST_PROVIDER_SECRET", "hunter2-isv-a");
  const auto settings =
      parse_config(with("/providers", R"({
    "isv-a": {"corpid": "wwprovider0000001", "provider_secret_env": "TOKEN_BROKER_TEST_PROVIDER_SECRET"},
    "isv-b": {"corpid": "wwprovider0000002", "provider_secret_file": )" +
                                          json_string(secret_file.string()) + R"(},
    "isv-c": {"corpid": "wwprovider0000003", "provider_secret": "hunter2-isv-c"}})"));
  ASSERT_EQ(settings.providers.size(), 3u);
  EXPECT_EQ(settings.providers[0].id, "isv-a");
  EXPECT_EQ(settings.providers[0].corpid, "wwprovider0000001");
  EXPECT_EQ(settings.providers[0].source, secret_source::environment);
  EXPECT_EQ(settings.providers[0].provider_secret, "hunter2-isv-a");
  EXPECT_EQ(settings.providers[1].source, secret_source::file);
  EXPECT_EQ(settings.providers[1].provider_secret, "hunter2-isv-b");
  EXPECT_EQ(settings.providers[2].source, secret_source::inline_value);
  EXPECT_EQ(settings.providers[2].provider_secret, "hunter2-isv-c");
  EXPECT_EQ(settings.apps.size(), 1u);

  // A provider alone is a config: not every broker serves apps.
  const auto provider_only = parse_config(
      with("/providers", R"({"isv": {"corpid": "wwp", "provider_secret": "hunter2-p"}})",
           without("/apps")));
  EXPECT_TRUE(provider_only.apps.empty());
  EXPECT_EQ(provider_only.providers.size(), 1u);
}

// A freshly installed package starts before its operator has named any credential: it then
// listens and serves nothing, rather than failing or calling WeCom with placeholders.
TEST(config, a_config_without_credentials_loads) {
  for (const auto& document : {without("/apps"), with("/apps", "{}")}) {
    const auto settings = parse_config(document);
    EXPECT_TRUE(settings.apps.empty());
    EXPECT_TRUE(settings.providers.empty());
    EXPECT_TRUE(settings.suites.empty());
  }
}

TEST(config, reads_suites_their_callback_store_key_and_static_corps) {
  const temp_directory files;
  const auto key_file = files.write("suite-key", std::string(32, '\x07'));
  const scoped_env env("TOKEN_BROKER_TEST_SUITE_SECRET", "hunter2-suite");
  const auto settings = parse_config(with("/suites", R"({
    "crm-suite": {
      "suite_id": "wwsuite00000000001", "suite_secret_env": "TOKEN_BROKER_TEST_SUITE_SECRET",
      "callback": {"token": "hunter2-token",
                   "encoding_aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"},
      "store_key_file": )" + json_string(key_file.string()) +
                                                         R"(,
      "corps": {"wwcorpA000000001": {"permanent_code": "hunter2-code-a"}}},
    "dev": {"suite_id": "wwtemplate0000001", "template": true, "suite_secret": "hunter2-dev"}})"));
  ASSERT_EQ(settings.suites.size(), 2u);
  const auto& crm = settings.suites[0];
  EXPECT_EQ(crm.id, "crm-suite");
  EXPECT_EQ(crm.suite_id, "wwsuite00000000001");
  EXPECT_FALSE(crm.is_template);
  EXPECT_EQ(crm.source, secret_source::environment);
  EXPECT_EQ(crm.suite_secret, "hunter2-suite");
  ASSERT_TRUE(crm.callback);
  EXPECT_EQ(crm.callback->token, "hunter2-token");
  EXPECT_EQ(crm.callback->encoding_aes_key, "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C");
  EXPECT_EQ(crm.store_key, std::string(32, '\x07'));
  ASSERT_EQ(crm.corps.size(), 1u);
  EXPECT_EQ(crm.corps[0].corpid, "wwcorpA000000001");
  EXPECT_EQ(crm.corps[0].permanent_code, "hunter2-code-a");
  const auto& dev = settings.suites[1];
  EXPECT_TRUE(dev.is_template);
  EXPECT_FALSE(dev.callback);
  EXPECT_TRUE(dev.store_key.empty()) << "no callback, no key needed";
  EXPECT_TRUE(dev.corps.empty());
}

TEST(config, a_store_key_file_must_hold_32_bytes_and_is_required_with_a_callback) {
  const temp_directory files;
  const std::string callback =
      R"("callback": {"token": "hunter2-t", "encoding_aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"})";
  const auto without_key = error_of(
      with("/suites/s", R"({"suite_id": "wws", "suite_secret": "hunter2-s", )" + callback + "}"));
  EXPECT_EQ(without_key.field(), "suites.s.store_key_file");
  for (const std::size_t size : {0, 31, 33}) {
    const auto key_file = files.write("key", std::string(size, 'k'));
    const auto error = error_of(
        with("/suites/s", R"({"suite_id": "wws", "suite_secret": "hunter2-s", "store_key_file": )" +
                              json_string(key_file.string()) + "}"));
    EXPECT_EQ(error.field(), "suites.s.store_key_file");
    EXPECT_NE(std::string(error.what()).find("exactly 32 bytes"), std::string::npos);
    EXPECT_EQ(std::string(error.what()).find("kkkk"), std::string::npos) << "the key is secret";
  }
}

TEST(config, a_client_may_be_allowed_suites_and_providers_as_well_as_apps) {
  const auto document =
      with("/clients",
           R"({"isv-svc": {"key_sha256": ")" + key_a +
               R"(", "suites": ["crm-suite"], "providers": ["*"]},
                      "both": {"key_sha256": ")" +
               key_b + R"(", "apps": ["hr"], "suites": ["*"]}})",
           with("/providers", R"({"isv": {"corpid": "wwp", "provider_secret": "hunter2-p"}})",
                with("/suites/crm-suite", R"({"suite_id": "wws", "suite_secret": "hunter2-s"})")));
  const auto settings = parse_config(document);
  ASSERT_EQ(settings.clients.size(), 2u);
  const auto& isv = settings.clients[0];
  EXPECT_TRUE(isv.apps.empty());
  EXPECT_FALSE(isv.all_apps);
  EXPECT_EQ(isv.suites, std::vector<std::string>{"crm-suite"});
  EXPECT_TRUE(isv.all_providers);
  const auto& both = settings.clients[1];
  EXPECT_EQ(both.apps, std::vector<std::string>{"hr"});
  EXPECT_TRUE(both.all_suites);
  EXPECT_TRUE(both.providers.empty());
}

TEST(config, an_inline_provider_secret_in_a_file_others_can_read_is_warned_about) {
  const temp_directory files;
  const auto document =
      with("/providers", R"({"isv": {"corpid": "wwp", "provider_secret": "hunter2-p"}})",
           without("/apps"));
  const auto file = files.write("config.json", document);
  std::filesystem::permissions(file, std::filesystem::perms(0644));
  const auto warning = inline_secret_exposure(file, parse_config(document));
  ASSERT_TRUE(warning);
  EXPECT_NE(warning->find("(providers.isv.provider_secret)"), std::string::npos) << *warning;
  EXPECT_EQ(warning->find(secret_marker), std::string::npos) << *warning;
  std::filesystem::permissions(file, std::filesystem::perms(0600));
  EXPECT_FALSE(inline_secret_exposure(file, parse_config(document)));
}

// The shipped example stays loadable: only its placeholders need real values.
TEST(config, example_file_loads_once_placeholders_are_filled) {
  const auto example_path =
      std::filesystem::path(__FILE__).parent_path() / "../../../config/token-broker.example.json";
  std::ifstream example_file(example_path);
  ASSERT_TRUE(example_file) << example_path;
  std::stringstream read;
  read << example_file.rdbuf();
  auto text = read.str();

  const temp_directory files;
  const auto crm_secret = files.write("crm", "hunter2-crm\n");
  const auto suite_key = files.write("suite-key", std::string(32, 'k'));
  const scoped_env env("WECOM_HR_SECRET", "hunter2-hr");
  const scoped_env provider("WECOM_PROVIDER_SECRET", "hunter2-provider");
  const scoped_env suite("WECOM_SUITE_SECRET", "hunter2-suite");
  const scoped_env callback_token("WECOM_CALLBACK_TOKEN", "QDG6eK");
  const scoped_env callback_key("WECOM_CALLBACK_AES_KEY",
                                "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C");
  const scoped_env corp_code("WECOM_CORP_A_CODE", "hunter2-code");
  text = replace_all(text, "<your corpid>", "ww0123456789abcdef");
  text = replace_all(text, "<the ops app secret>", "hunter2-ops");
  text = replace_all(text, "/run/credentials/token-broker.service/crm", crm_secret.string());
  text = replace_all(text, "<hex sha256 of billing's bearer key>", key_a);
  text = replace_all(text, "<hex sha256 of admin's bearer key>", key_b);
  text = replace_all(text, "<hex sha256 of isv-svc's bearer key>", std::string(64, 'c'));
  text = replace_all(text, "<your provider corpid>", "wwprovider0000001");
  text = replace_all(text, "<your suite_id>", "wwsuite0000000001");
  text = replace_all(text, "<an authorized corpid>", "wwcorpA000000001");
  text = replace_all(text, "/run/credentials/token-broker.service/suite-key", suite_key.string());
  text = replace_all(text, "<hex sha256 of web's client certificate>", std::string(64, 'd'));
  for (const auto* tls_file : {"server.pem", "server.key", "clients-ca.pem"}) {
    text = replace_all(text, std::string("/etc/token-broker/tls/") + tls_file,
                       files.write(tls_file, "PEM").string());
  }

  const auto settings = parse_config(text);
  ASSERT_EQ(settings.apps.size(), 3u);
  EXPECT_EQ(settings.apps[0].id, "hr");
  EXPECT_EQ(settings.apps[1].id, "crm");
  EXPECT_EQ(settings.apps[1].secret, "hunter2-crm");
  EXPECT_EQ(settings.apps[2].id, "ops");
  ASSERT_EQ(settings.listen.size(), 3u);
  EXPECT_TRUE(settings.listen[1].tls);
  EXPECT_EQ(settings.audit_log, "/var/log/token-broker/audit.log");
  ASSERT_EQ(settings.clients.size(), 5u);
  EXPECT_TRUE(settings.redis);
  ASSERT_EQ(settings.providers.size(), 1u);
  EXPECT_EQ(settings.providers[0].provider_secret, "hunter2-provider");
  ASSERT_EQ(settings.suites.size(), 1u);
  EXPECT_EQ(settings.suites[0].suite_secret, "hunter2-suite");
  ASSERT_TRUE(settings.suites[0].callback);
  EXPECT_EQ(settings.suites[0].store_key.size(), 32u);
  ASSERT_EQ(settings.suites[0].corps.size(), 1u);
  EXPECT_EQ(settings.suites[0].corps[0].permanent_code, "hunter2-code");
  EXPECT_EQ(settings.clients[4].suites, std::vector<std::string>{"crm-suite"});
}

TEST(config, load_config_reads_the_file_and_reports_an_unreadable_one_without_a_field) {
  const temp_directory files;
  const auto path = files.write("broker.json", minimal);
  EXPECT_EQ(load_config(path).apps.at(0).id, "hr");

  const auto missing = files.path() / "missing.json";
  try {
    load_config(missing);
    FAIL() << "loaded a missing file";
  } catch (const config_error& error) {
    EXPECT_EQ(error.field(), "");
    EXPECT_EQ(std::string(error.what()),
              "cannot read " + missing.string() + ": No such file or directory");
  }
}

struct listen_case {
  const char* text;
  const char* canonical;
  bool local;
};

class listen_test : public ::testing::TestWithParam<listen_case> {};

TEST_P(listen_test, parses_to_canonical_form_and_knows_whether_it_is_local) {
  std::string reason;
  const auto address = parse_listen_address(GetParam().text, reason);
  ASSERT_TRUE(address) << reason;
  EXPECT_EQ(address->to_string(), GetParam().canonical);
  EXPECT_EQ(address->is_local(), GetParam().local);
}

INSTANTIATE_TEST_SUITE_P(
    config, listen_test,
    ::testing::Values(listen_case{"127.0.0.1:8080", "127.0.0.1:8080", true},
                      listen_case{"127.1.2.3:1", "127.1.2.3:1", true},
                      listen_case{"localhost:9000", "127.0.0.1:9000", true},
                      listen_case{"[::1]:8080", "[::1]:8080", true},
                      listen_case{"[0:0:0:0:0:0:0:1]:65535", "[::1]:65535", true},
                      listen_case{"unix:/run/token-broker/api.sock",
                                  "unix:/run/token-broker/api.sock", true},
                      listen_case{"0.0.0.0:8080", "0.0.0.0:8080", false},
                      listen_case{"10.1.2.3:80", "10.1.2.3:80", false},
                      listen_case{"[::]:8080", "[::]:8080", false},
                      listen_case{"[2001:db8::1]:443", "[2001:db8::1]:443", false}));

TEST(config, splits_base_url) {
  struct split {
    const char* url;
    const char* host;
    const char* port;
    const char* path_prefix;
  };
  for (const auto& [url, host, port, path_prefix] : {
           split{"https://qyapi.weixin.qq.com", "qyapi.weixin.qq.com", "443", ""},
           split{"https://qyapi.weixin.qq.com/", "qyapi.weixin.qq.com", "443", ""},
           split{"https://wecom.example.com:8443/a/b/", "wecom.example.com", "8443", "/a/b"},
           split{"https://10.0.0.5/wecom", "10.0.0.5", "443", "/wecom"},
           split{"https://[::1]:9443", "::1", "9443", ""},
       }) {
    const auto settings =
        parse_config(with("/upstream", R"({"base_url": ")" + std::string(url) + R"("})"));
    EXPECT_EQ(settings.upstream.base_url, url);
    EXPECT_EQ(settings.upstream.host, host) << url;
    EXPECT_EQ(settings.upstream.port, port) << url;
    EXPECT_EQ(settings.upstream.path_prefix, path_prefix) << url;
  }
}

TEST(config, splits_redis_url_shapes) {
  struct expected {
    const char* url;
    const char* host;
    std::uint16_t port;
    const char* unix_path;
    const char* username;
    const char* password;
    unsigned database;
    bool tls = false;
  };
  for (const auto& shape : std::vector<expected>{
           {"redis://127.0.0.1:6379", "127.0.0.1", 6379, "", "", "", 0},
           {"redis://redis.internal:6380/", "redis.internal", 6380, "", "", "", 0},
           {"redis://redis.internal/2", "redis.internal", 6379, "", "", "", 2},
           {"redis://[::1]:6379/15", "::1", 6379, "", "", "", 15},
           {"redis://:hunter2@h:6379/0", "h", 6379, "", "", "hunter2", 0},
           {"redis://:p@ss:w/rd@h:6379", "h", 6379, "", "", "p@ss:w/rd", 0},
           {"redis://broker:hunter2@h:6379/1", "h", 6379, "", "broker", "hunter2", 1},
           {"rediss://broker:hunter2@redis.internal:6380/3", "redis.internal", 6380, "", "broker",
            "hunter2", 3, true},
           {"unix:///run/redis/redis.sock", "", 6379, "/run/redis/redis.sock", "", "", 0},
           {"unix:///run/redis@main/redis.sock", "", 6379, "/run/redis@main/redis.sock", "", "", 0},
           {"unix://broker:hunter2@/run/redis.sock", "", 6379, "/run/redis.sock", "broker",
            "hunter2", 0}}) {
    const auto redis = parse_config(with("/redis/url", json_string(shape.url))).redis.value();
    EXPECT_EQ(redis.host, shape.host) << shape.url;
    EXPECT_EQ(redis.port, shape.port) << shape.url;
    EXPECT_EQ(redis.unix_path, shape.unix_path) << shape.url;
    EXPECT_EQ(redis.username, shape.username) << shape.url;
    EXPECT_EQ(redis.password, shape.password) << shape.url;
    EXPECT_EQ(redis.database, shape.database) << shape.url;
    EXPECT_EQ(redis.tls.has_value(), shape.tls) << shape.url;
  }
}

TEST(config, redis_password_comes_from_the_environment_or_a_file) {
  const scoped_env env("TOKEN_BROKER_TEST_REDIS_PASSWORD", "hunter2-env");
  const auto from_env = parse_config(with(
      "/redis",
      R"({"url": "redis://broker@h:6379", "password_env": "TOKEN_BROKER_TEST_REDIS_PASSWORD"})"));
  EXPECT_EQ(from_env.redis->username, "broker");
  EXPECT_EQ(from_env.redis->password, "hunter2-env");

  const temp_directory credentials;
  credentials.write("redis-password", "hunter2-file\n");
  const scoped_env directory("CREDENTIALS_DIRECTORY", credentials.path().c_str());
  const auto from_file = parse_config(
      with("/redis", R"({"url": "redis://h:6379", "password_file": "redis-password"})"));
  EXPECT_EQ(from_file.redis->password, "hunter2-file");
}

TEST(config, redis_tls_reads_its_files) {
  const temp_directory files;
  const auto ca = files.write("ca.pem", "not checked here");
  const auto cert = files.write("client.pem", "not checked here");
  const auto key = files.write("client.key", "not checked here");
  const auto settings = parse_config(
      with("/redis", R"({"url": "rediss://redis.internal:6380", "tls": {"ca_file": )" +
                         json_string(ca.string()) + R"(, "cert_file": )" +
                         json_string(cert.string()) + R"(, "key_file": )" +
                         json_string(key.string()) + R"(, "server_name": "redis.example"}})"));
  const auto& tls = settings.redis->tls.value();
  EXPECT_EQ(tls.ca_file, ca);
  EXPECT_EQ(tls.cert_file, cert);
  EXPECT_EQ(tls.key_file, key);
  EXPECT_EQ(tls.server_name, "redis.example");
  // Without a tls block, rediss:// trusts the system's CA store.
  const auto plain = parse_config(with("/redis/url", R"("rediss://redis.internal:6380")"));
  EXPECT_EQ(plain.redis->tls, redis_tls_config{});
}

TEST(config, redis_sentinel_names_the_master_and_its_sentinels) {
  const scoped_env env("TOKEN_BROKER_TEST_SENTINEL_PASSWORD", "hunter2-sentinel");
  const auto settings =
      parse_config(with("/redis", R"({"url": "redis://token-broker:hunter2@tokens/0", "sentinel": {
        "master": "tokens", "nodes": ["10.0.0.1:26379", "[::1]:26380"], "username": "watcher",
        "password_env": "TOKEN_BROKER_TEST_SENTINEL_PASSWORD"}})"));
  const auto& sentinel = settings.redis->sentinel.value();
  EXPECT_EQ(sentinel.master, "tokens");
  ASSERT_EQ(sentinel.nodes.size(), 2u);
  EXPECT_EQ(sentinel.nodes[0], (std::pair<std::string, std::uint16_t>{"10.0.0.1", 26379}));
  EXPECT_EQ(sentinel.nodes[1], (std::pair<std::string, std::uint16_t>{"::1", 26380}));
  EXPECT_EQ(sentinel.username, "watcher");
  EXPECT_EQ(sentinel.password, "hunter2-sentinel");
  EXPECT_FALSE(sentinel.tls);
}

TEST(config, secret_file_loses_exactly_one_trailing_newline) {
  const temp_directory files;
  for (const auto& [contents, secret] : std::vector<std::pair<std::string, std::string>>{
           {"hunter2", "hunter2"}, {"hunter2\n", "hunter2"}, {"hunter2\r\n", "hunter2"}}) {
    const auto file = files.write("secret", contents);
    const auto settings = parse_config(with(
        "/apps/hr", R"({"corpid": "ww1", "secret_file": )" + json_string(file.string()) + "}"));
    EXPECT_EQ(settings.apps[0].secret, secret);
  }
  for (const std::string contents : {"hunter2\n\n", "hunter2 x\n", "\n", ""}) {
    const auto file = files.write("secret", contents);
    const auto error = error_of(with(
        "/apps/hr", R"({"corpid": "ww1", "secret_file": )" + json_string(file.string()) + "}"));
    EXPECT_EQ(error.field(), "apps.hr.secret_file");
    EXPECT_EQ(std::string(error.what()).find(secret_marker), std::string::npos) << error.what();
  }
}

TEST(config, relative_secret_file_is_found_in_credentials_directory) {
  const temp_directory credentials;
  credentials.write("hr", "hunter2-from-systemd\n");
  const scoped_env env("CREDENTIALS_DIRECTORY", credentials.path().c_str());
  const auto settings = parse_config(with("/apps/hr", R"({"corpid": "ww1", "secret_file": "hr"})"));
  EXPECT_EQ(settings.apps[0].secret, "hunter2-from-systemd");

  const auto error = error_of(with("/apps/hr", R"({"corpid": "ww1", "secret_file": "nope"})"));
  EXPECT_EQ(error.field(), "apps.hr.secret_file");
  EXPECT_NE(std::string(error.what()).find((credentials.path() / "nope").string()),
            std::string::npos)
      << error.what();
}

TEST(config, secret_env_set_but_empty_is_refused) {
  const scoped_env env("TOKEN_BROKER_TEST_EMPTY_SECRET", "");
  const auto error = error_of(
      with("/apps/hr", R"({"corpid": "ww1", "secret_env": "TOKEN_BROKER_TEST_EMPTY_SECRET"})"));
  EXPECT_EQ(error.field(), "apps.hr.secret_env");
  EXPECT_STREQ(error.what(),
               "apps.hr.secret_env: environment variable TOKEN_BROKER_TEST_EMPTY_SECRET is empty");
}

TEST(config, secret_env_value_is_never_quoted) {
  const scoped_env env("TOKEN_BROKER_TEST_SPACED_SECRET", "hunter2 with spaces");
  const auto error = error_of(
      with("/apps/hr", R"({"corpid": "ww1", "secret_env": "TOKEN_BROKER_TEST_SPACED_SECRET"})"));
  EXPECT_EQ(error.field(), "apps.hr.secret_env");
  EXPECT_EQ(std::string(error.what()).find(secret_marker), std::string::npos) << error.what();
}

struct error_case {
  const char* name;
  std::string document;
  std::string field;
  std::string reason;  // a part of the reason
};

class config_error_test : public ::testing::TestWithParam<error_case> {};

TEST_P(config_error_test, names_the_field_and_hides_secrets) {
  const auto error = error_of(GetParam().document);
  const std::string message = error.what();
  EXPECT_EQ(error.field(), GetParam().field) << message;
  EXPECT_NE(message.find(GetParam().reason), std::string::npos) << message;
  EXPECT_EQ(message.find(secret_marker), std::string::npos) << message;
}

const std::string two_apps = R"({"listen": "127.0.0.1:8080", "apps": {
  "hr": {"corpid": "ww1", "secret": "hunter2-hr"},
  "payroll": {"corpid": "ww2", "secret": "hunter2-payroll"}}})";

std::string with_client(std::string_view client) {
  return with("/clients/billing", client);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(config, config_error_test, ::testing::Values(
  error_case{"syntax_error", R"({"listen": "127.0.0.1:8080",, "apps": {}})", "", "invalid JSON at line 1, column 29"},
  error_case{"syntax_error_quotes_no_text", R"({"apps": {"hr": {"secret": "hunter2\q"}}})", "", "invalid JSON at line 1"},
  error_case{"number_too_large", R"({"listen": "127.0.0.1:8080", "threads": 1e999})", "", "invalid JSON: a number is too large"},
  error_case{"not_an_object", "[1, 2]", "", "the config must be a JSON object"},
  error_case{"unknown_top_level_key", with("/lsiten", "1"), "lsiten", "unknown key"},
  error_case{"unknown_app_key", with("/apps/hr/secrett", R"("hunter2")"), "apps.hr.secrett", "unknown key"},
  error_case{"unknown_upstream_key", with("/upstream/timeout", "5"), "upstream.timeout", "unknown key"},
  error_case{"unknown_refresh_key", with("/refresh/ahead", "5"), "refresh.ahead", "unknown key"},
  error_case{"unknown_redis_key", with("/redis", R"({"url": "redis://h:6379", "password": "hunter2"})"), "redis.password", "unknown key"},
  error_case{"unknown_client_key", with_client(R"({"key_sha256": ")" + key_a + R"(", "apps": ["hr"], "app": []})"), "clients.billing.app", "unknown key"},
  error_case{"duplicate_app", R"({"listen": "127.0.0.1:8080", "apps": {"hr": {"corpid": "ww1", "secret": "hunter2-a"}, "hr": {"corpid": "ww2", "secret": "hunter2-b"}}})", "apps.hr", "duplicate key"},
  error_case{"duplicate_nested_key", R"({"listen": "127.0.0.1:8080", "apps": {"hr": {"corpid": "ww1", "secret": "hunter2-a", "secret": "hunter2-b"}}})", "apps.hr.secret", "duplicate key"},
  error_case{"threads_as_string", with("/threads", R"("2")"), "threads", "must be an integer from 1 to 256"},
  error_case{"threads_as_float", with("/threads", "2.0"), "threads", "must be an integer from 1 to 256"},
  error_case{"threads_zero", with("/threads", "0"), "threads", "must be an integer from 1 to 256"},
  error_case{"threads_too_many", with("/threads", "257"), "threads", "must be an integer from 1 to 256"},
  error_case{"threads_huge", with("/threads", "18446744073709551615"), "threads", "must be an integer from 1 to 256"},
  error_case{"log_level_unknown", with("/log_level", R"("verbose")"), "log_level", "must be one of trace, debug"},
  error_case{"upstream_not_object", with("/upstream", "[]"), "upstream", "must be an object"},
  error_case{"timeout_too_short", with("/upstream/timeout_ms", "99"), "upstream.timeout_ms", "from 100 to 120000"},
  error_case{"timeout_too_long", with("/upstream/timeout_ms", "120001"), "upstream.timeout_ms", "from 100 to 120000"},
  error_case{"ahead_negative", with("/refresh/ahead_s", "-1"), "refresh.ahead_s", "from 0 to 86400"},
  error_case{"jitter_too_long", with("/refresh/jitter_s", "3601"), "refresh.jitter_s", "from 0 to 3600"},
  error_case{"retry_min_zero", with("/refresh/retry_min_ms", "0"), "refresh.retry_min_ms", "from 1 to 3600000"},
  error_case{"retry_max_too_long", with("/refresh/retry_max_ms", "3600001"), "refresh.retry_max_ms", "from 1 to 3600000"},
  error_case{"min_interval_too_long", with("/refresh/min_interval_s", "3601"), "refresh.min_interval_s", "from 0 to 3600"},
  error_case{"retry_max_below_min", with("/refresh", R"({"retry_min_ms": 1000, "retry_max_ms": 999})"), "refresh.retry_max_ms", "must not be smaller than refresh.retry_min_ms"},
  error_case{"retry_min_above_default_max", with("/refresh/retry_min_ms", "120000"), "refresh.retry_max_ms", "must not be smaller than refresh.retry_min_ms"},
  error_case{"listen_missing", without("/listen"), "listen", "is required"},
  error_case{"listen_not_string", with("/listen", "8080"), "listen", "must be an address or a non-empty array"},
  error_case{"listen_empty_list", with("/listen", "[]"), "listen", "must be an address or a non-empty array"},
  error_case{"listen_entry_number", with("/listen", "[8080]"), "listen[0]", "must be an object"},
  error_case{"listen_entry_bad", with("/listen", R"(["127.0.0.1:8080", {"address": "127.0.0.1"}])"), "listen[1].address", "missing port"},
  error_case{"listen_twice", with("/listen", R"(["127.0.0.1:8080", {"address": "127.0.0.1:8080"}])"), "listen[1]", "listens on 127.0.0.1:8080 twice"},
  error_case{"listen_unknown_key", with("/listen", R"([{"address": "127.0.0.1:8080", "tsl": {}}])"), "listen[0].tsl", "unknown key"},
  error_case{"listen_tls_on_unix", with("/listen", R"([{"address": "unix:/run/api.sock", "tls": {"cert_file": "/etc/hostname", "key_file": "/etc/hostname"}}])"), "listen[0].tls", "is for TCP listeners"},
  error_case{"listen_tls_without_key", with("/listen", R"([{"address": "127.0.0.1:8443", "tls": {"cert_file": "/etc/hostname"}}])"), "listen[0].tls.key_file", "is required"},
  error_case{"listen_tls_cert_unreadable", with("/listen", R"([{"address": "127.0.0.1:8443", "tls": {"cert_file": "/nonexistent/cert.pem", "key_file": "/etc/hostname"}}])"), "listen[0].tls.cert_file", "cannot read /nonexistent/cert.pem"},
  error_case{"listen_tls_unknown_key", with("/listen", R"([{"address": "127.0.0.1:8443", "tls": {"cert_file": "/etc/hostname", "key_file": "/etc/hostname", "ciphers": "ALL"}}])"), "listen[0].tls.ciphers", "unknown key"},
  error_case{"listen_tls_require_without_ca", with("/listen", R"([{"address": "127.0.0.1:8443", "tls": {"cert_file": "/etc/hostname", "key_file": "/etc/hostname", "require_client_cert": true}}])"), "listen[0].tls.require_client_cert", "needs client_ca_file"},
  error_case{"listen_tls_require_not_bool", with("/listen", R"([{"address": "127.0.0.1:8443", "tls": {"cert_file": "/etc/hostname", "key_file": "/etc/hostname", "client_ca_file": "/etc/hostname", "require_client_cert": "yes"}}])"), "listen[0].tls.require_client_cert", "must be true or false"},
  error_case{"listen_open_on_a_network", with("/listen", R"(["127.0.0.1:8080", "0.0.0.0:8081"])"), "clients", "required while listening on 0.0.0.0:8081"},
  error_case{"log_format_unknown", with("/log_format", R"("xml")"), "log_format", "must be \"text\" or \"json\""},
  error_case{"audit_log_not_a_path", with("/audit_log", "5"), "audit_log", "must be null, \"stderr\" or a file path"},
  error_case{"listen_missing_port", with("/listen", R"("127.0.0.1")"), "listen", "missing port"},
  error_case{"listen_hostname", with("/listen", R"("broker.internal:8080")"), "listen", "must be an IP address or localhost"},
  error_case{"listen_missing_host", with("/listen", R"(":8080")"), "listen", "missing host"},
  error_case{"listen_port_zero", with("/listen", R"("127.0.0.1:0")"), "listen", "port must be from 1 to 65535"},
  error_case{"listen_port_too_big", with("/listen", R"("127.0.0.1:65536")"), "listen", "port must be from 1 to 65535"},
  error_case{"listen_port_named", with("/listen", R"("127.0.0.1:http")"), "listen", "port must be from 1 to 65535"},
  error_case{"listen_ipv6_without_brackets", with("/listen", R"("::1:8080")"), "listen", "brackets"},
  error_case{"listen_relative_unix_path", with("/listen", R"("unix:run/api.sock")"), "listen", "must be absolute"},
  error_case{"open_api_on_all_interfaces", with("/listen", R"("0.0.0.0:8080")"), "clients", "required while listening on 0.0.0.0:8080 (the API would be open to the network)"},
  error_case{"open_api_on_lan_with_empty_clients", with("/clients", "{}", with("/listen", R"("10.1.2.3:8080")")), "clients", "required while listening on 10.1.2.3:8080"},
  error_case{"base_url_http", with("/upstream/base_url", R"("http://qyapi.weixin.qq.com")"), "upstream.base_url", "must start with https://"},
  error_case{"base_url_query", with("/upstream/base_url", R"("https://qyapi.weixin.qq.com/?a=1")"), "upstream.base_url", "query"},
  error_case{"base_url_fragment", with("/upstream/base_url", R"("https://qyapi.weixin.qq.com#x")"), "upstream.base_url", "fragment"},
  error_case{"base_url_userinfo", with("/upstream/base_url", R"("https://user:hunter2@qyapi.weixin.qq.com")"), "upstream.base_url", "user name or password"},
  error_case{"base_url_bad_port", with("/upstream/base_url", R"("https://qyapi.weixin.qq.com:99999")"), "upstream.base_url", "valid host and port"},
  error_case{"base_url_no_host", with("/upstream/base_url", R"("https:///cgi")"), "upstream.base_url", "valid host and port"},
  error_case{"ca_file_unreadable", with("/upstream/ca_file", R"("/nonexistent/token-broker-ca.pem")"), "upstream.ca_file", "cannot read /nonexistent/token-broker-ca.pem: No such file or directory"},
  error_case{"ca_file_empty", with("/upstream/ca_file", R"("")"), "upstream.ca_file", "must be a file path or null"},
  error_case{"providers_not_object", with("/providers", "[]"), "providers", "must be an object"},
  error_case{"suites_not_object", with("/suites", "[]"), "suites", "must be an object"},
  error_case{"client_unknown_suite", with("/clients/isv", R"({"key_sha256": ")" + key_a + R"(", "suites": ["nope"]})"), "clients.isv.suites[0]", "unknown suite \"nope\""},
  error_case{"client_unknown_provider", with("/clients/isv", R"({"key_sha256": ")" + key_a + R"(", "providers": ["nope"]})"), "clients.isv.providers[0]", "unknown provider \"nope\""},
  error_case{"client_no_scope", with("/clients/isv", R"({"key_sha256": ")" + key_a + R"("})"), "clients.isv.apps", "is required (or suites, or providers)"},
  error_case{"client_empty_suites", with("/clients/isv", R"({"key_sha256": ")" + key_a + R"(", "suites": []})"), "clients.isv.suites", "non-empty array of suite ids"},
  error_case{"suite_id_missing", with("/suites/s", R"({"suite_secret": "hunter2-s"})"), "suites.s.suite_id", "is required"},
  error_case{"suite_no_secret", with("/suites/s", R"({"suite_id": "wws"})"), "suites.s", "needs exactly one of suite_secret, suite_secret_env, suite_secret_file"},
  error_case{"suite_template_not_bool", with("/suites/s", R"({"suite_id": "wws", "suite_secret": "hunter2-s", "template": "yes"})"), "suites.s.template", "must be true or false"},
  error_case{"suite_unknown_key", with("/suites/s", R"({"suite_id": "wws", "suite_secret": "hunter2-s", "secret": "hunter2-x"})"), "suites.s.secret", "unknown key"},
  error_case{"suite_callback_bad_aes_key", with("/suites/s", R"({"suite_id": "wws", "suite_secret": "hunter2-s", "callback": {"token": "hunter2-t", "encoding_aes_key": "hunter2-too-short"}})"), "suites.s.callback.encoding_aes_key", "43 characters"},
  error_case{"suite_callback_no_token", with("/suites/s", R"({"suite_id": "wws", "suite_secret": "hunter2-s", "callback": {"encoding_aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"}})"), "suites.s.callback", "needs exactly one of token, token_env, token_file"},
  error_case{"suite_corp_no_code", with("/suites/s", R"({"suite_id": "wws", "suite_secret": "hunter2-s", "corps": {"wwA": {}}})"), "suites.s.corps.wwA", "needs exactly one of permanent_code"},
  error_case{"suite_corp_bad_corpid", with("/suites/s", R"({"suite_id": "wws", "suite_secret": "hunter2-s", "corps": {"w A": {"permanent_code": "hunter2-c"}}})"), "suites.s.corps.w A", "corpid must be"},
  error_case{"provider_id_with_space", with("/providers/i sv", R"({"corpid": "wwp", "provider_secret": "hunter2-p"})"), "providers.i sv", "provider id must match"},
  error_case{"provider_unknown_key", with("/providers/isv", R"({"corpid": "wwp", "provider_secret": "hunter2-p", "secret": "hunter2-q"})"), "providers.isv.secret", "unknown key"},
  error_case{"provider_corpid_missing", with("/providers/isv", R"({"provider_secret": "hunter2-p"})"), "providers.isv.corpid", "is required"},
  error_case{"provider_no_secret", with("/providers/isv", R"({"corpid": "wwp"})"), "providers.isv", "needs exactly one of provider_secret, provider_secret_env, provider_secret_file"},
  error_case{"provider_two_secrets", with("/providers/isv", R"({"corpid": "wwp", "provider_secret": "hunter2-p", "provider_secret_env": "X"})"), "providers.isv", "has more than one of provider_secret"},
  error_case{"provider_secret_with_space", with("/providers/isv", R"({"corpid": "wwp", "provider_secret": "hunter2 p"})"), "providers.isv.provider_secret", "printable ASCII without spaces"},
  error_case{"apps_not_object", with("/apps", "[]"), "apps", "must be an object"},
  error_case{"app_id_with_space", with("/apps/h r", R"({"corpid": "ww2", "secret": "hunter2-x"})"), "apps.h r", "app id must match [A-Za-z0-9_.-]{1,64}"},
  error_case{"app_id_too_long", with("/apps/" + std::string(65, 'a'), R"({"corpid": "ww2", "secret": "hunter2-x"})"), "apps." + std::string(65, 'a'), "app id must match"},
  error_case{"app_not_object", with("/apps/hr", R"("hunter2")"), "apps.hr", "must be an object"},
  error_case{"corpid_missing", without("/apps/hr/corpid"), "apps.hr.corpid", "is required"},
  error_case{"corpid_empty", with("/apps/hr/corpid", R"("")"), "apps.hr.corpid", "must be a non-empty string"},
  error_case{"corpid_with_space", with("/apps/hr/corpid", R"("ww 1")"), "apps.hr.corpid", "without spaces"},
  error_case{"corpid_too_long", with("/apps/hr/corpid", json_string(std::string(65, 'w'))), "apps.hr.corpid", "at most 64"},
  error_case{"agentid_negative", with("/apps/hr/agentid", "-1"), "apps.hr.agentid", "must be an integer from 0"},
  error_case{"agentid_as_string", with("/apps/hr/agentid", R"("1000002")"), "apps.hr.agentid", "must be an integer from 0"},
  error_case{"tickets_not_array", with("/apps/hr/tickets", R"("jsapi")"), "apps.hr.tickets", R"(must be an array of "jsapi" and "agent_config")"},
  error_case{"ticket_unknown", with("/apps/hr/tickets", R"(["jsapi", "suite"])"), "apps.hr.tickets[1]", R"(unknown ticket "suite")"},
  error_case{"ticket_not_string", with("/apps/hr/tickets", "[1]"), "apps.hr.tickets[0]", "must be an array"},
  error_case{"ticket_twice", with("/apps/hr/tickets", R"(["jsapi", "jsapi"])"), "apps.hr.tickets[1]", "listed twice"},
  error_case{"agent_ticket_without_agentid", with("/apps/hr/tickets", R"(["agent_config"])"), "apps.hr.agentid", R"(is required with the "agent_config" ticket)"},
  error_case{"ticket_calls_zero", with("/refresh/ticket_calls_per_hour", "0"), "refresh.ticket_calls_per_hour", "from 1 to 100"},
  error_case{"ticket_calls_above_wecoms", with("/refresh/ticket_calls_per_hour", "101"), "refresh.ticket_calls_per_hour", "from 1 to 100"},
  error_case{"gateway_not_object", with("/gateway", "true"), "gateway", "must be an object"},
  error_case{"gateway_unknown_key", with("/gateway/retries", "2"), "gateway.retries", "unknown key"},
  error_case{"gateway_enabled_not_bool", with("/gateway/enabled", R"("yes")"), "gateway.enabled", "must be true or false"},
  error_case{"gateway_timeout_too_short", with("/gateway/timeout_ms", "10"), "gateway.timeout_ms", "from 100 to 600000"},
  error_case{"gateway_body_zero", with("/gateway/max_body_bytes", "0"), "gateway.max_body_bytes", "from 1 to"},
  error_case{"gateway_connections_zero", with("/gateway/max_connections", "0"), "gateway.max_connections", "from 1 to 4096"},
  error_case{"gateway_budget_unknown", with("/gateway/budget/per_day", "5"), "gateway.budget.per_day", "unknown key"},
  error_case{"gateway_budget_negative", with("/gateway/budget/per_minute", "-1"), "gateway.budget.per_minute", "from 0 to"},
  error_case{"no_secret_source", without("/apps/hr/secret"), "apps.hr", "needs exactly one of secret, secret_env, secret_file"},
  error_case{"two_secret_sources", with("/apps/hr/secret_file", R"("/etc/hostname")"), "apps.hr", "has more than one of secret, secret_env, secret_file"},
  error_case{"secret_empty", with("/apps/hr/secret", R"("")"), "apps.hr.secret", "must be a non-empty string"},
  error_case{"secret_with_space", with("/apps/hr/secret", R"("hunter2 with a space")"), "apps.hr.secret", "must be a non-empty string"},
  error_case{"secret_with_newline", with("/apps/hr/secret", R"("hunter2\n")"), "apps.hr.secret", "must be a non-empty string"},
  error_case{"secret_not_string", with("/apps/hr/secret", "12345"), "apps.hr.secret", "must be a non-empty string"},
  error_case{"secret_env_unset", with("/apps/hr", R"({"corpid": "ww1", "secret_env": "TOKEN_BROKER_TEST_NEVER_SET"})"), "apps.hr.secret_env", "environment variable TOKEN_BROKER_TEST_NEVER_SET is not set"},
  error_case{"secret_env_not_a_name", with("/apps/hr", R"({"corpid": "ww1", "secret_env": "hunter2-pasted-here"})"), "apps.hr.secret_env", "must be the name of an environment variable"},
  error_case{"secret_file_unreadable", with("/apps/hr", R"({"corpid": "ww1", "secret_file": "/nonexistent/token-broker-secret"})"), "apps.hr.secret_file", "cannot read /nonexistent/token-broker-secret: No such file or directory"},
  error_case{"secret_file_empty_path", with("/apps/hr", R"({"corpid": "ww1", "secret_file": ""})"), "apps.hr.secret_file", "must be a file path"},
  error_case{"same_corpid_and_secret", with("/apps/hr2", R"({"corpid": "ww1", "secret": "hunter2-hr"})"), "apps.hr2", "same corpid and secret as apps.hr"},
  error_case{"clients_not_object", with("/clients", "[]"), "clients", "must be an object"},
  error_case{"client_bad_name", with("/clients/bill ing", R"({"key_sha256": ")" + key_a + R"(", "apps": ["hr"]})"), "clients.bill ing", "client name must match"},
  error_case{"client_key_missing", with_client(R"({"apps": ["hr"]})"), "clients.billing.key_sha256", "is required (or cert_sha256, or unix_uid)"},
  error_case{"client_two_identities", with_client(R"({"key_sha256": ")" + key_a + R"(", "unix_uid": 1000, "apps": ["hr"]})"), "clients.billing.key_sha256", "exactly one of key_sha256, cert_sha256 and unix_uid"},
  error_case{"client_cert_not_hex", with_client(R"({"cert_sha256": "ab:cd", "apps": ["hr"]})"), "clients.billing.cert_sha256", "SHA-256 of the client certificate (DER)"},
  error_case{"client_cert_without_a_listener_for_it", with_client(R"({"cert_sha256": ")" + key_a + R"(", "apps": ["hr"]})"), "clients.billing.cert_sha256", "needs a TLS listener with client_ca_file"},
  error_case{"client_uid_negative", with_client(R"({"unix_uid": -1, "apps": ["hr"]})"), "clients.billing.unix_uid", "from 0"},
  error_case{"client_uid_without_unix_listener", with_client(R"({"unix_uid": 1000, "apps": ["hr"]})"), "clients.billing.unix_uid", "needs a unix-socket listener"},
  error_case{"client_same_uid", with("/clients", R"({"a": {"unix_uid": 7, "apps": ["hr"]}, "b": {"unix_uid": 7, "apps": ["hr"]}})", with("/listen", R"(["unix:/run/api.sock"])")), "clients.b.unix_uid", "same uid as clients.a"},
  error_case{"client_key_not_hex", with_client(R"({"key_sha256": ")" + std::string(64, 'g') + R"(", "apps": ["hr"]})"), "clients.billing.key_sha256", "must be 64 hex digits"},
  error_case{"client_key_too_short", with_client(R"({"key_sha256": ")" + std::string(63, 'a') + R"(", "apps": ["hr"]})"), "clients.billing.key_sha256", "must be 64 hex digits"},
  error_case{"client_key_with_sign", with_client(R"({"key_sha256": "+a)" + std::string(62, 'a') + R"(", "apps": ["hr"]})"), "clients.billing.key_sha256", "must be 64 hex digits"},
  error_case{"client_apps_missing", with_client(R"({"key_sha256": ")" + key_a + R"("})"), "clients.billing.apps", "is required"},
  error_case{"client_apps_empty", with_client(R"({"key_sha256": ")" + key_a + R"(", "apps": []})"), "clients.billing.apps", "must be a non-empty array"},
  error_case{"client_apps_not_array", with_client(R"({"key_sha256": ")" + key_a + R"(", "apps": "hr"})"), "clients.billing.apps", "must be a non-empty array"},
  error_case{"client_app_not_string", with_client(R"({"key_sha256": ")" + key_a + R"(", "apps": ["hr", 1]})"), "clients.billing.apps[1]", "must be an app id"},
  error_case{"client_unknown_app", with("/clients/billing", R"({"key_sha256": ")" + key_a + R"(", "apps": ["payroll", "hr"]})"), "clients.billing.apps[0]", "unknown app \"payroll\""},
  error_case{"client_star_not_alone", with("/clients/billing", R"({"key_sha256": ")" + key_a + R"(", "apps": ["hr", "*"]})", two_apps), "clients.billing.apps[1]", "\"*\" must be the only entry"},
  error_case{"clients_share_a_key", with("/clients", R"({"billing": {"key_sha256": ")" + key_a + R"(", "apps": ["hr"]}, "admin": {"key_sha256": ")" + std::string(64, 'A') + R"(", "apps": ["*"]}})"), "clients.admin.key_sha256", "same key as clients.billing"},
  error_case{"redis_not_object", with("/redis", R"("redis://h:6379")"), "redis", "must be an object"},
  error_case{"redis_url_missing", with("/redis", "{}"), "redis.url", "is required"},
  error_case{"redis_url_wrong_scheme", with("/redis/url", R"("http://:hunter2@h:6379")"), "redis.url", "must look like redis://"},
  error_case{"redis_user_without_password", with("/redis/url", R"("redis://broker@h:6379")"), "redis.url", "names a user but no password"},
  error_case{"redis_url_empty_user_information", with("/redis/url", R"("redis://@h:6379")"), "redis.url", "must look like redis://"},
  error_case{"redis_url_bad_port", with("/redis/url", R"("redis://:hunter2@h:99999")"), "redis.url", "must look like redis://"},
  error_case{"redis_password_twice", with("/redis", R"({"url": "redis://:hunter2@h:6379", "password_env": "REDIS_PASSWORD"})"), "redis.password_env", "cannot go with a password in redis.url"},
  error_case{"redis_password_env_and_file", with("/redis", R"({"url": "redis://h:6379", "password_env": "A", "password_file": "b"})"), "redis", "has both password_env and password_file"},
  error_case{"redis_password_env_unset", with("/redis", R"({"url": "redis://h:6379", "password_env": "TOKEN_BROKER_TEST_UNSET"})"), "redis.password_env", "is not set"},
  error_case{"redis_password_file_missing", with("/redis", R"({"url": "redis://h:6379", "password_file": "/nonexistent/redis-password"})"), "redis.password_file", "/nonexistent/redis-password"},
  error_case{"redis_sentinel_no_nodes", with("/redis", R"({"url": "redis://tokens", "sentinel": {"master": "tokens", "nodes": []}})"), "redis.sentinel.nodes", "non-empty array"},
  error_case{"redis_sentinel_node_without_port", with("/redis", R"({"url": "redis://tokens", "sentinel": {"master": "tokens", "nodes": ["10.0.0.1"]}})"), "redis.sentinel.nodes[0]", "host:port"},
  error_case{"redis_sentinel_no_master", with("/redis", R"({"url": "redis://tokens", "sentinel": {"nodes": ["10.0.0.1:26379"]}})"), "redis.sentinel.master", "is required"},
  error_case{"redis_sentinel_tls_without_rediss", with("/redis", R"({"url": "redis://tokens", "sentinel": {"master": "tokens", "nodes": ["h:26379"], "tls": true}})"), "redis.sentinel.tls", "needs a rediss://"},
  error_case{"redis_tls_without_rediss", with("/redis", R"({"url": "redis://:hunter2@h:6379", "tls": {}})"), "redis.tls", "needs a rediss:// redis.url"},
  error_case{"redis_tls_unknown_key", with("/redis", R"({"url": "rediss://h:6379", "tls": {"verify": false}})"), "redis.tls.verify", "unknown key"},
  error_case{"redis_tls_ca_file_missing", with("/redis", R"({"url": "rediss://h:6379", "tls": {"ca_file": "/nonexistent/ca.pem"}})"), "redis.tls.ca_file", "/nonexistent/ca.pem"},
  error_case{"redis_tls_cert_without_key", with("/redis", R"({"url": "rediss://h:6379", "tls": {"cert_file": "/etc/hostname"}})"), "redis.tls.key_file", "go together"},
  error_case{"redis_tls_bad_server_name", with("/redis", R"({"url": "rediss://h:6379", "tls": {"server_name": "a b"}})"), "redis.tls.server_name", "must be a host name"},
  error_case{"redis_url_empty_password", with("/redis/url", R"("redis://:@h:6379")"), "redis.url", "must look like redis://"},
  error_case{"redis_url_bad_database", with("/redis/url", R"("redis://:hunter2@h:6379/zero")"), "redis.url", "must look like redis://"},
  error_case{"redis_url_relative_socket", with("/redis/url", R"("unix://hunter2/redis.sock")"), "redis.url", "must look like redis://"},
  error_case{"redis_key_prefix_too_long", with("/redis", R"({"url": "redis://h:6379", "key_prefix": ")" + std::string(129, 'k') + R"("})"), "redis.key_prefix", "at most 128 characters"}
), [](const auto& test) { return std::string(test.param.name); });
// clang-format on

}  // namespace
}  // namespace token_broker
