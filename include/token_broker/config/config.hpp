// The daemon's configuration, validated: once a `config` exists, every field is usable as is.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "token_broker/config/listen_address.hpp"

namespace token_broker {

struct upstream_config {
  std::string base_url = "https://qyapi.weixin.qq.com";
  // base_url split up: always https; path_prefix is "" or starts with '/' and has no trailing '/'.
  std::string host = "qyapi.weixin.qq.com";
  std::string port = "443";
  std::string path_prefix;
  std::optional<std::filesystem::path> ca_file;
  std::chrono::milliseconds timeout{5000};

  bool operator==(const upstream_config&) const = default;
};

struct refresh_config {
  std::chrono::seconds ahead{300};
  std::chrono::seconds jitter{30};
  std::chrono::milliseconds retry_min{500};
  std::chrono::milliseconds retry_max{60000};
  std::chrono::seconds min_interval{5};
  unsigned ticket_calls_per_hour = 60;  // per app and ticket kind, fleet-wide (1..100)

  bool operator==(const refresh_config&) const = default;
};

// The gateway's ceiling per corp and WeCom API path (SPEC §8); 0 = no cap.
struct api_budget_limits {
  std::uint32_t per_minute = 9000;
  std::uint32_t per_hour = 140000;
  std::uint32_t concurrency = 0;

  bool operator==(const api_budget_limits&) const = default;
};

struct gateway_config {
  bool enabled = false;
  std::chrono::milliseconds timeout{10000};  // connect, TLS and answer of one upstream call
  std::uint64_t max_body_bytes = 20 * 1024 * 1024;
  std::uint32_t max_connections = 64;  // kept-alive upstream connections, apart from refreshes
  api_budget_limits budget;

  bool operator==(const gateway_config&) const = default;
};

// rediss://: TLS to Redis. Without ca_file the system's CA store is trusted; cert_file and
// key_file (together) are the client certificate Redis asks for by default (tls-auth-clients).
struct redis_tls_config {
  std::optional<std::filesystem::path> ca_file;
  std::optional<std::filesystem::path> cert_file;
  std::optional<std::filesystem::path> key_file;
  std::string server_name;  // "" = the URL's host: sent as SNI and checked in the certificate

  bool operator==(const redis_tls_config&) const = default;
};

// Redis behind Sentinel: the sentinels are asked where the master named `master` is, on every
// connect (the redis.io sentinel-client algorithm). redis.url then gives only what the master
// wants: scheme, user, password and database; its host and port are not used.
struct redis_sentinel_config {
  std::string master;
  std::vector<std::pair<std::string, std::uint16_t>> nodes;  // host, port; asked in turn
  std::string username;  // the sentinels' own ACL user, if they want one
  std::string password;  // the sentinels' own password; "" = no AUTH. Never log it.
  bool tls = false;      // the sentinels speak TLS too, trusting redis.tls's files

  bool operator==(const redis_sentinel_config&) const = default;
};

struct redis_config {
  std::string url;  // never log it: it may hold the password
  std::string key_prefix = "wecom:";
  // url split up: either host and port, or unix_path.
  std::string host;
  std::uint16_t port = 6379;
  std::string unix_path;
  std::optional<redis_tls_config> tls;  // set for rediss://
  std::optional<redis_sentinel_config> sentinel;
  std::string username;  // "" = AUTH with the password alone (the default user)
  std::string password;  // "" = no AUTH. Never log it.
  unsigned database = 0;

  bool operator==(const redis_config&) const = default;
};

enum class secret_source { inline_value, environment, file };

struct app_config {
  std::string id;
  std::string corpid;
  std::optional<std::int64_t> agentid;
  bool jsapi_ticket = false;  // "tickets": ["jsapi"]: the corp's JS-SDK ticket
  bool agent_ticket = false;  // "tickets": ["agent_config"]: the app's agent ticket
  secret_source source = secret_source::inline_value;
  // The resolved secret. Never log it, never put it in an error or an answer.
  std::string secret;
};

// A service-provider (服务商) account: its provider_access_token (get_provider_token).
struct provider_config {
  std::string id;
  std::string corpid;  // the provider's own corpid
  secret_source source = secret_source::inline_value;
  // The resolved provider secret. Never log it, never put it in an error or an answer.
  std::string provider_secret;
};

// A corp that authorized a suite, written in the config (more arrive by callback).
struct suite_corp_config {
  std::string corpid;
  secret_source source = secret_source::inline_value;
  std::string permanent_code;  // never logged, never stored in plaintext
};

// The callback of a suite (SPEC §7): what WeCom signs and encrypts its events with.
struct suite_callback_config {
  std::string token;             // secret
  std::string encoding_aes_key;  // secret: 43 characters of base64
};

// A third-party app suite, or a 代开发 template (`"template": true`: its corps' tokens come from
// gettoken with the permanent code as the secret, not from get_corp_token).
struct suite_config {
  std::string id;
  std::string suite_id;
  bool is_template = false;
  secret_source source = secret_source::inline_value;
  std::string suite_secret;  // never logged
  std::optional<suite_callback_config> callback;
  // 32 bytes read from store_key_file: seals permanent codes at rest. Required with a
  // callback, through which corps (and their codes) arrive.
  std::string store_key;
  std::vector<suite_corp_config> corps;  // in the file's order
};

using sha256_digest = std::array<unsigned char, 32>;

// A listener's TLS (SPEC §3 "listen"): its certificate chain and key, and the CA its clients'
// certificates must chain to when it asks for them.
struct listener_tls_config {
  std::filesystem::path cert_file;
  std::filesystem::path key_file;
  std::optional<std::filesystem::path> client_ca_file;  // set: clients may present a certificate
  bool require_client_cert = false;                     // and must (needs client_ca_file)

  bool operator==(const listener_tls_config&) const = default;
};

struct listener_config {
  listen_address address;
  std::optional<listener_tls_config> tls;

  bool operator==(const listener_config&) const = default;
};

// How a client proves who it is: exactly one way each (SPEC §3 "clients").
enum class client_identity { bearer_key, certificate, unix_uid };

struct client_config {
  std::string name;
  client_identity identity = client_identity::bearer_key;
  sha256_digest key_sha256{};     // bearer_key: of the key
  sha256_digest cert_sha256{};    // certificate: of the certificate's DER
  std::uint32_t unix_uid = 0;     // unix_uid: the peer's uid on a unix-socket listener
  bool all_apps = false;          // "apps": ["*"]
  std::vector<std::string> apps;  // ids, each a configured app
  bool all_suites = false;        // "suites": ["*"]
  std::vector<std::string> suites;
  bool all_providers = false;  // "providers": ["*"]
  std::vector<std::string> providers;
};

struct config {
  std::vector<listener_config> listen;  // at least one; a string in the file is one plain one
  unsigned threads = 0;                 // resolved: never 0 after loading
  std::string log_level = "info";
  std::string log_format = "text";       // "text" | "json"
  std::optional<std::string> audit_log;  // "stderr" or a file path; none: no audit trail
  upstream_config upstream;
  refresh_config refresh;
  std::optional<redis_config> redis;
  gateway_config gateway;
  std::vector<app_config> apps;            // in the file's order
  std::vector<provider_config> providers;  // in the file's order
  std::vector<suite_config> suites;        // in the file's order
  std::vector<client_config> clients;      // empty: open API (loopback or unix socket only)

  const app_config* find_app(std::string_view id) const;
};

// A config that cannot be used. `field` is the JSON path of the offending value
// ("apps.hr.corpid"), or "" when the file as a whole is unusable (unreadable, not JSON).
// what() is "<field>: <reason>", or just the reason for "", safe to print (never holds a secret).
class config_error : public std::runtime_error {
 public:
  config_error(std::string field, const std::string& reason)
      : std::runtime_error(field.empty() ? reason : field + ": " + reason),
        field_(std::move(field)) {}
  const std::string& field() const noexcept { return field_; }

 private:
  std::string field_;
};

// Parses and validates a config document (JSON with // and /* */ comments) and resolves
// every secret source (environment variables, files). Throws config_error.
config parse_config(std::string_view text);

// Reads `path` and calls parse_config. An unreadable file is a config_error with field "".
config load_config(const std::filesystem::path& path);

// Throws config_error when the API would be open on a listener that is not loopback or a
// unix socket, or a client could never present its identity on any listener.
void check_listeners_fit_clients(const config& settings);

// A warning when the config file at `path` holds an inline secret and group or others may read
// it; nothing otherwise. Names the field, never the secret.
std::optional<std::string> inline_secret_exposure(const std::filesystem::path& path,
                                                  const config& settings);

}  // namespace token_broker
