#include "token_broker/config/config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <thread>

namespace token_broker {
namespace {

// Keeps objects in the file's order, so config.apps lists the apps as the operator wrote them.
using json = nlohmann::ordered_json;

// Config files, CA bundles and secrets are small; the cap only stops a wrong path such as
// /dev/zero from eating memory.
constexpr std::size_t mebibyte = 1024 * 1024;
constexpr std::size_t max_file_bytes = 16 * mebibyte;
constexpr unsigned max_threads = 256;
constexpr std::size_t max_id_length = 64;
constexpr std::size_t max_corpid_length = 64;
constexpr std::size_t max_key_prefix_length = 128;
constexpr std::int64_t max_agentid = std::numeric_limits<std::int32_t>::max();

constexpr std::string_view id_rule = "must match [A-Za-z0-9_.-]{1,64}";
constexpr std::string_view secret_rule =
    "must be a non-empty string of printable ASCII without spaces";
constexpr std::string_view redis_url_rule =
    "must look like redis://[user[:password]@]host[:port][/db], rediss://… (TLS) or "
    "unix://[user[:password]@]/path/to/redis.sock";
constexpr std::array log_levels = {"trace", "debug", "info", "warn", "error", "critical", "off"};

// A control character in a key would garble the operator's terminal; keys are never secrets.
std::string printable(std::string_view key) {
  std::string shown(key);
  std::replace_if(
      shown.begin(), shown.end(),
      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == '\x7f'; }, '?');
  return shown;
}

std::string member(std::string_view path, std::string_view key) {
  return path.empty() ? printable(key) : std::string(path) + "." + printable(key);
}

std::string element(std::string_view path, std::size_t index) {
  return std::string(path) + "[" + std::to_string(index) + "]";
}

// nlohmann keeps the last of two equal keys without a word, which would silently drop an app
// or a secret; this parser callback refuses them, naming the key's JSON path.
class duplicate_key_guard {
 public:
  bool operator()(int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        open_.emplace_back(start_value(), event == json::parse_event_t::array_start);
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        open_.pop_back();
        break;
      case json::parse_event_t::key: {
        auto& object = open_.back();
        object.last_key = parsed.get<std::string>();
        if (!object.keys.insert(object.last_key).second) {
          throw config_error(member(object.path, object.last_key), "duplicate key");
        }
        break;
      }
      case json::parse_event_t::value:
        start_value();
        break;
    }
    return true;
  }

 private:
  struct container {
    container(std::string at, bool array) : path(std::move(at)), is_array(array) {}

    std::string path;
    bool is_array;
    std::size_t elements = 0;
    std::string last_key;
    std::set<std::string> keys;
  };

  // The path of the value that starts now; inside an array it also counts the element.
  std::string start_value() {
    if (open_.empty()) return "";
    auto& parent = open_.back();
    return parent.is_array ? element(parent.path, parent.elements++)
                           : member(parent.path, parent.last_key);
  }

  std::vector<container> open_;
};

// nlohmann's message ends with "; last read: '<text>'", which may be a piece of a secret;
// what comes before it is only the position and the grammar rule that failed.
std::string describe(const json::parse_error& error) {
  const std::string_view message = error.what();
  const auto position = message.find("at line ");
  if (position == std::string_view::npos) return "at byte " + std::to_string(error.byte);
  const auto snippet = message.find("; last read:", position);
  return std::string(message.substr(position, snippet - position));
}

json parse_document(std::string_view text) {
  try {
    return json::parse(text, duplicate_key_guard{}, /*allow_exceptions=*/true,
                       /*ignore_comments=*/true);
  } catch (const json::parse_error& error) {
    throw config_error("", "invalid JSON " + describe(error));
  } catch (const json::out_of_range&) {
    // Its message quotes the number's text, so it is not passed on.
    throw config_error("", "invalid JSON: a number is too large");
  }
}

// The file's contents; a failure names the path and the system's reason, never the contents.
std::string read_file(const std::filesystem::path& path, const std::string& field) {
  const auto cannot_read = [&](int error) {
    return config_error(
        field, "cannot read " + path.string() + ": " + std::generic_category().message(error));
  };
  struct file_descriptor {
    int value;
    ~file_descriptor() {
      if (value >= 0) ::close(value);
    }
  };
  const file_descriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.value < 0) throw cannot_read(errno);
  std::string contents;
  std::array<char, 4096> buffer{};
  for (;;) {
    const auto count = ::read(file.value, buffer.data(), buffer.size());
    if (count < 0 && errno == EINTR) continue;
    if (count < 0) throw cannot_read(errno);
    if (count == 0) return contents;
    contents.append(buffer.data(), static_cast<std::size_t>(count));
    if (contents.size() > max_file_bytes) {
      throw config_error(field, path.string() + " is larger than " +
                                    std::to_string(max_file_bytes / mebibyte) + " MiB");
    }
  }
}

const json* find_member(const json& object, std::string_view key) {
  const auto found = object.find(key);
  return found == object.end() ? nullptr : &*found;
}

const json& required_member(const json& object, std::string_view path, std::string_view key) {
  const auto* found = find_member(object, key);
  if (!found) throw config_error(member(path, key), "is required");
  return *found;
}

void require_object(const json& value, const std::string& path) {
  if (!value.is_object()) throw config_error(path, "must be an object");
}

// Checked before the values, so a misspelt key is reported as such rather than as a
// missing required one.
void reject_unknown_keys(const json& object, std::string_view path,
                         std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      throw config_error(member(path, key), "unknown key");
    }
  }
}

std::string read_string(const json& value, const std::string& field, std::string_view reason) {
  if (!value.is_string()) throw config_error(field, std::string(reason));
  return value.get<std::string>();
}

std::int64_t read_integer(const json& value, const std::string& field, std::int64_t min,
                          std::int64_t max) {
  const config_error wrong(
      field, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
  if (!value.is_number_integer()) throw wrong;
  // Above INT64_MAX the number is stored unsigned and get<std::int64_t>() would wrap.
  if (value.is_number_unsigned() && value.get<std::uint64_t>() > static_cast<std::uint64_t>(max)) {
    throw wrong;
  }
  const auto number = value.get<std::int64_t>();
  if (number < min || number > max) throw wrong;
  return number;
}

// Reads an optional duration given in the unit of `target`; absent keeps the default.
template <typename Duration>
void read_duration(const json& object, std::string_view path, std::string_view key,
                   std::int64_t min, std::int64_t max, Duration& target) {
  if (const auto* value = find_member(object, key)) {
    target = Duration(read_integer(*value, member(path, key), min, max));
  }
}

std::string read_path(const json& value, const std::string& field, std::string_view reason) {
  auto path = read_string(value, field, reason);
  // A NUL would make open() read a different, shorter path than the one written.
  if (path.empty() || path.find('\0') != std::string::npos) {
    throw config_error(field, std::string(reason));
  }
  return path;
}

bool is_id(std::string_view id) {
  return !id.empty() && id.size() <= max_id_length && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

// Corpids and secrets go into a query string and are compared byte for byte: nothing that
// could be invisible or ambiguous.
bool is_printable_word(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < '\x7f'; });
}

bool is_env_name(std::string_view name) {
  return !name.empty() && !std::isdigit(static_cast<unsigned char>(name.front())) &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
         });
}

bool is_hostname(std::string_view host) {
  return !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
  });
}

bool is_ipv6(std::string_view text) {
  // inet_pton reads a C string: after a NUL ("[::1\u0000evil]") the rest would go unchecked
  // into the host.
  if (text.find('\0') != std::string_view::npos) return false;
  in6_addr address{};
  return inet_pton(AF_INET6, std::string(text).c_str(), &address) == 1;
}

struct host_and_port {
  std::string host;  // without brackets
  std::optional<std::uint16_t> port;
};

// "host", "host:port", "[v6]" or "[v6]:port" from a URL; nullopt when malformed.
std::optional<host_and_port> parse_authority(std::string_view authority) {
  std::string_view host = authority;
  std::optional<std::string_view> port_text;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos || !is_ipv6(authority.substr(1, close - 1))) {
      return std::nullopt;
    }
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) return std::nullopt;
    if (!after.empty()) port_text = after.substr(1);
  } else {
    const auto colon = authority.find(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port_text = authority.substr(colon + 1);
    }
    if (!is_hostname(host)) return std::nullopt;
  }
  std::optional<std::uint16_t> port;
  if (port_text) {
    port = parse_port(*port_text);
    if (!port) return std::nullopt;
  }
  return host_and_port{std::string(host), port};
}

// Splits "https://host[:port][/prefix]" into what the upstream client connects to and
// prefixes its request target with.
void split_base_url(upstream_config& upstream) {
  const std::string field = "upstream.base_url";
  constexpr std::string_view scheme = "https://";
  std::string_view rest = upstream.base_url;
  if (!rest.starts_with(scheme)) {
    throw config_error(field, "must start with https:// (the app secrets travel in the request)");
  }
  rest.remove_prefix(scheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    throw config_error(field, "must not have a query or a fragment");
  }
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  if (authority.find('@') != std::string_view::npos) {
    throw config_error(field, "must not hold a user name or password");
  }
  const auto endpoint = parse_authority(authority);
  if (!endpoint) {
    throw config_error(field, "must be https://host[:port][/path] with a valid host and port");
  }
  std::string_view prefix = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (!prefix.empty() && !is_printable_word(prefix)) {
    throw config_error(field, "the path must be printable ASCII without spaces");
  }
  while (prefix.ends_with('/')) prefix.remove_suffix(1);

  upstream.host = endpoint->host;
  upstream.port = std::to_string(endpoint->port.value_or(443));
  upstream.path_prefix = std::string(prefix);
}

upstream_config read_upstream(const json& value) {
  require_object(value, "upstream");
  reject_unknown_keys(value, "upstream", {"base_url", "ca_file", "timeout_ms"});
  upstream_config upstream;
  if (const auto* base_url = find_member(value, "base_url")) {
    upstream.base_url = read_string(*base_url, "upstream.base_url",
                                    "must be a string such as \"https://qyapi.weixin.qq.com\"");
    split_base_url(upstream);
  }
  if (const auto* ca_file = find_member(value, "ca_file"); ca_file && !ca_file->is_null()) {
    const std::string field = "upstream.ca_file";
    upstream.ca_file = read_path(*ca_file, field, "must be a file path or null");
    // Checked now so --check catches it; whether it is valid PEM is the TLS context's call.
    read_file(*upstream.ca_file, field);
  }
  read_duration(value, "upstream", "timeout_ms", 100, 120000, upstream.timeout);
  return upstream;
}

refresh_config read_refresh(const json& value) {
  require_object(value, "refresh");
  reject_unknown_keys(value, "refresh",
                      {"ahead_s", "jitter_s", "retry_min_ms", "retry_max_ms", "min_interval_s",
                       "ticket_calls_per_hour"});
  refresh_config refresh;
  read_duration(value, "refresh", "ahead_s", 0, 86400, refresh.ahead);
  read_duration(value, "refresh", "jitter_s", 0, 3600, refresh.jitter);
  read_duration(value, "refresh", "retry_min_ms", 1, 3600000, refresh.retry_min);
  read_duration(value, "refresh", "retry_max_ms", 1, 3600000, refresh.retry_max);
  read_duration(value, "refresh", "min_interval_s", 0, 3600, refresh.min_interval);
  if (const auto* calls = find_member(value, "ticket_calls_per_hour")) {
    // WeCom allows 100 an hour per app; more would only be refused upstream.
    refresh.ticket_calls_per_hour =
        static_cast<unsigned>(read_integer(*calls, "refresh.ticket_calls_per_hour", 1, 100));
  }
  if (refresh.retry_max < refresh.retry_min) {
    throw config_error("refresh.retry_max_ms", "must not be smaller than refresh.retry_min_ms (" +
                                                   std::to_string(refresh.retry_min.count()) + ")");
  }
  return refresh;
}

// systemd's LoadCredential= hands secrets over in $CREDENTIALS_DIRECTORY and a unit names
// them relative to it; elsewhere a relative path is relative to the working directory.
std::filesystem::path resolve_secret_path(const std::string& written) {
  std::filesystem::path path(written);
  const char* credentials = std::getenv("CREDENTIALS_DIRECTORY");
  if (path.is_relative() && credentials && *credentials) {
    return std::filesystem::path(credentials) / path;
  }
  return path;
}

std::string secret_from_env(const json& value, const std::string& field) {
  const auto name = read_string(value, field, "must be the name of an environment variable");
  if (!is_env_name(name)) throw config_error(field, "must be the name of an environment variable");
  const char* secret = std::getenv(name.c_str());
  if (!secret) throw config_error(field, "environment variable " + name + " is not set");
  if (*secret == '\0') throw config_error(field, "environment variable " + name + " is empty");
  if (!is_printable_word(secret)) {
    throw config_error(
        field, "environment variable " + name + " must hold only printable ASCII without spaces");
  }
  return secret;
}

std::string secret_from_file(const json& value, const std::string& field) {
  const auto path = resolve_secret_path(read_path(value, field, "must be a file path"));
  auto secret = read_file(path, field);
  // Editors and `echo` add a newline; anything more is a mistake worth reporting.
  if (secret.ends_with("\r\n")) {
    secret.resize(secret.size() - 2);
  } else if (secret.ends_with('\n')) {
    secret.pop_back();
  }
  if (secret.empty()) throw config_error(field, path.string() + " is empty");
  if (!is_printable_word(secret)) {
    throw config_error(field, path.string() +
                                  " must hold only the secret: printable ASCII without spaces and "
                                  "at most one trailing newline");
  }
  return secret;
}

listen_address read_listen_address(const json& value, const std::string& field) {
  const auto text =
      read_string(value, field, "must be \"host:port\", \"[v6]:port\" or \"unix:/path\"");
  std::string reason;
  auto address = parse_listen_address(text, reason);
  if (!address) throw config_error(field, reason);
  return *address;
}

std::filesystem::path read_tls_file(const json& tls, const std::string& path,
                                    std::string_view key) {
  const auto field = member(path, key);
  std::filesystem::path file =
      resolve_secret_path(read_path(required_member(tls, path, key), field, "must be a file path"));
  // Checked now so --check catches it; whether it is valid PEM is the TLS context's call.
  read_file(file, field);
  return file;
}

listener_tls_config read_listener_tls(const json& value, const std::string& path) {
  require_object(value, path);
  reject_unknown_keys(value, path,
                      {"cert_file", "key_file", "client_ca_file", "require_client_cert"});
  listener_tls_config tls;
  tls.cert_file = read_tls_file(value, path, "cert_file");
  tls.key_file = read_tls_file(value, path, "key_file");
  if (const auto* ca = find_member(value, "client_ca_file"); ca && !ca->is_null()) {
    tls.client_ca_file = read_tls_file(value, path, "client_ca_file");
  }
  if (const auto* require = find_member(value, "require_client_cert")) {
    const auto field = member(path, "require_client_cert");
    if (!require->is_boolean()) throw config_error(field, "must be true or false");
    tls.require_client_cert = require->get<bool>();
    if (tls.require_client_cert && !tls.client_ca_file) {
      throw config_error(field, "needs client_ca_file: the CA client certificates must chain to");
    }
  }
  return tls;
}

// "listen": one address, or a list of listeners, each an address or {"address", "tls"?}.
std::vector<listener_config> read_listen(const json& document) {
  const auto& value = required_member(document, "", "listen");
  if (value.is_string()) return {listener_config{.address = read_listen_address(value, "listen")}};
  if (!value.is_array() || value.empty()) {
    throw config_error("listen", "must be an address or a non-empty array of listeners");
  }
  std::vector<listener_config> listeners;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto path = element("listen", i);
    const auto& each = value[i];
    listener_config listener;
    if (each.is_string()) {
      listener.address = read_listen_address(each, path);
    } else {
      require_object(each, path);
      reject_unknown_keys(each, path, {"address", "tls"});
      listener.address =
          read_listen_address(required_member(each, path, "address"), member(path, "address"));
      if (const auto* tls = find_member(each, "tls"); tls && !tls->is_null()) {
        if (listener.address.type == listen_address::kind::unix_socket) {
          throw config_error(member(path, "tls"),
                             "is for TCP listeners; a unix socket's clients are known by uid");
        }
        listener.tls = read_listener_tls(*tls, member(path, "tls"));
      }
    }
    for (const auto& earlier : listeners) {
      if (earlier.address == listener.address) {
        throw config_error(path, "listens on " + listener.address.to_string() + " twice");
      }
    }
    listeners.push_back(std::move(listener));
  }
  return listeners;
}

// Never quotes the URL back: it may hold the Redis password.
void split_redis_url(redis_config& redis) {
  const config_error malformed("redis.url", std::string(redis_url_rule));
  std::string_view rest = redis.url;
  const bool unix_socket = rest.starts_with("unix://");
  if (unix_socket) {
    rest.remove_prefix(std::string_view("unix://").size());
  } else if (rest.starts_with("rediss://")) {
    rest.remove_prefix(std::string_view("rediss://").size());
    redis.tls.emplace();
  } else if (rest.starts_with("redis://")) {
    rest.remove_prefix(std::string_view("redis://").size());
  } else {
    throw malformed;
  }
  // The last '@' ends the user information: a password may itself hold '@', ':' or '/'. A
  // socket's path may hold '@' too: there the user information ends at the first "@/", and
  // there is none when the path comes at once. A user name ends at the first ':'.
  const auto at = !unix_socket            ? rest.rfind('@')
                  : rest.starts_with('/') ? std::string_view::npos
                                          : rest.find("@/");
  if (at != std::string_view::npos) {
    const auto user_information = rest.substr(0, at);
    const auto colon = user_information.find(':');
    redis.username = std::string(user_information.substr(0, colon));
    if (colon != std::string_view::npos) {
      redis.password = std::string(user_information.substr(colon + 1));
      if (redis.password.empty()) throw malformed;
    }
    if (redis.username.empty() && redis.password.empty()) throw malformed;
    if (!redis.username.empty() && !is_printable_word(redis.username)) throw malformed;
    rest.remove_prefix(at + 1);
  }
  if (unix_socket) {
    if (rest.size() < 2 || !rest.starts_with('/')) throw malformed;
    redis.unix_path = std::string(rest);
    return;
  }
  const auto slash = rest.find('/');
  const auto endpoint = parse_authority(rest.substr(0, slash));
  if (!endpoint) throw malformed;
  redis.host = endpoint->host;
  redis.port = endpoint->port.value_or(6379);
  if (slash == std::string_view::npos || slash + 1 == rest.size()) return;
  const auto database = rest.substr(slash + 1);
  const auto [stop, error] =
      std::from_chars(database.data(), database.data() + database.size(), redis.database);
  if (error != std::errc{} || stop != database.data() + database.size()) throw malformed;
}

std::optional<std::filesystem::path> read_redis_tls_file(const json& tls, std::string_view key) {
  const auto* value = find_member(tls, key);
  if (!value || value->is_null()) return std::nullopt;
  const auto field = member("redis.tls", key);
  std::filesystem::path path =
      resolve_secret_path(read_path(*value, field, "must be a file path or null"));
  // Checked now so --check catches it; whether it is valid PEM is the TLS context's call.
  read_file(path, field);
  return path;
}

void read_redis_tls(const json& value, redis_config& redis) {
  require_object(value, "redis.tls");
  reject_unknown_keys(value, "redis.tls", {"ca_file", "cert_file", "key_file", "server_name"});
  if (!redis.tls) throw config_error("redis.tls", "needs a rediss:// redis.url");
  auto& tls = *redis.tls;
  tls.ca_file = read_redis_tls_file(value, "ca_file");
  tls.cert_file = read_redis_tls_file(value, "cert_file");
  tls.key_file = read_redis_tls_file(value, "key_file");
  if (tls.cert_file.has_value() != tls.key_file.has_value()) {
    throw config_error(
        tls.cert_file ? "redis.tls.key_file" : "redis.tls.cert_file",
        "is required with the other: the client certificate and its key go together");
  }
  if (const auto* name = find_member(value, "server_name"); name && !name->is_null()) {
    constexpr std::string_view rule = "must be a host name or null";
    tls.server_name = read_string(*name, "redis.tls.server_name", rule);
    if (!is_hostname(tls.server_name)) {
      throw config_error("redis.tls.server_name", std::string(rule));
    }
  }
}

// "sentinel": {"master", "nodes": ["host:port", …], "username"?, "password_env"? or
// "password_file"?, "tls"?}
redis_sentinel_config read_redis_sentinel(const json& value, const redis_config& redis) {
  require_object(value, "redis.sentinel");
  reject_unknown_keys(value, "redis.sentinel",
                      {"master", "nodes", "username", "password_env", "password_file", "tls"});
  redis_sentinel_config sentinel;
  constexpr std::string_view name_rule =
      "must be a non-empty string of printable ASCII without spaces";
  sentinel.master = read_string(required_member(value, "redis.sentinel", "master"),
                                "redis.sentinel.master", name_rule);
  if (!is_printable_word(sentinel.master)) {
    throw config_error("redis.sentinel.master", std::string(name_rule));
  }
  const auto& nodes = required_member(value, "redis.sentinel", "nodes");
  constexpr std::string_view node_rule = "must be a non-empty array of \"host:port\"";
  if (!nodes.is_array() || nodes.empty()) {
    throw config_error("redis.sentinel.nodes", std::string(node_rule));
  }
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const auto field = element("redis.sentinel.nodes", i);
    const auto endpoint = parse_authority(read_string(nodes[i], field, node_rule));
    if (!endpoint || !endpoint->port) throw config_error(field, "must be \"host:port\"");
    sentinel.nodes.emplace_back(endpoint->host, *endpoint->port);
  }
  if (const auto* user = find_member(value, "username"); user && !user->is_null()) {
    sentinel.username = read_string(*user, "redis.sentinel.username", name_rule);
    if (!is_printable_word(sentinel.username)) {
      throw config_error("redis.sentinel.username", std::string(name_rule));
    }
  }
  const auto* env = find_member(value, "password_env");
  const auto* file = find_member(value, "password_file");
  if (env && file) throw config_error("redis.sentinel", "has both password_env and password_file");
  if (env) sentinel.password = secret_from_env(*env, "redis.sentinel.password_env");
  if (file) sentinel.password = secret_from_file(*file, "redis.sentinel.password_file");
  if (const auto* tls = find_member(value, "tls"); tls && !tls->is_null()) {
    if (!tls->is_boolean()) throw config_error("redis.sentinel.tls", "must be true or false");
    sentinel.tls = tls->get<bool>();
    if (sentinel.tls && !redis.tls) {
      throw config_error("redis.sentinel.tls", "needs a rediss:// redis.url (its tls settings)");
    }
  }
  if (!redis.unix_path.empty()) {
    throw config_error("redis.sentinel", "cannot go with a unix:// redis.url");
  }
  return sentinel;
}

std::optional<redis_config> read_redis(const json& value) {
  if (value.is_null()) return std::nullopt;
  require_object(value, "redis");
  reject_unknown_keys(value, "redis",
                      {"url", "key_prefix", "password_env", "password_file", "tls", "sentinel"});
  redis_config redis;
  redis.url = read_string(required_member(value, "redis", "url"), "redis.url", redis_url_rule);
  split_redis_url(redis);
  const auto* env = find_member(value, "password_env");
  const auto* file = find_member(value, "password_file");
  if (env && file) throw config_error("redis", "has both password_env and password_file");
  if ((env || file) && !redis.password.empty()) {
    throw config_error(env ? "redis.password_env" : "redis.password_file",
                       "cannot go with a password in redis.url");
  }
  if (env) redis.password = secret_from_env(*env, "redis.password_env");
  if (file) redis.password = secret_from_file(*file, "redis.password_file");
  if (!redis.username.empty() && redis.password.empty()) {
    throw config_error("redis.url",
                       "names a user but no password is given (in the URL, "
                       "redis.password_env or redis.password_file)");
  }
  if (const auto* tls = find_member(value, "tls"); tls && !tls->is_null()) {
    read_redis_tls(*tls, redis);
  }
  if (const auto* sentinel = find_member(value, "sentinel"); sentinel && !sentinel->is_null()) {
    redis.sentinel = read_redis_sentinel(*sentinel, redis);
  }
  if (const auto* prefix = find_member(value, "key_prefix")) {
    const std::string reason =
        "must be a string of at most " + std::to_string(max_key_prefix_length) + " characters";
    redis.key_prefix = read_string(*prefix, "redis.key_prefix", reason);
    if (redis.key_prefix.size() > max_key_prefix_length) {
      throw config_error("redis.key_prefix", reason);
    }
  }
  return redis;
}

// A secret given by exactly one of NAME, NAME_env, NAME_file (SPEC §3): app secrets, provider
// secrets and the suites' secrets alike.
struct read_secret_value {
  secret_source source;
  std::string value;
};
read_secret_value read_secret(const json& value, const std::string& path, const std::string& name) {
  const auto* inline_value = find_member(value, name);
  const auto* env = find_member(value, name + "_env");
  const auto* file = find_member(value, name + "_file");
  const int sources = (inline_value ? 1 : 0) + (env ? 1 : 0) + (file ? 1 : 0);
  const auto choices = name + ", " + name + "_env, " + name + "_file";
  if (sources == 0) throw config_error(path, "needs exactly one of " + choices);
  if (sources > 1) throw config_error(path, "has more than one of " + choices);

  if (inline_value) {
    const auto field = member(path, name);
    auto secret = read_string(*inline_value, field, secret_rule);
    if (!is_printable_word(secret)) throw config_error(field, std::string(secret_rule));
    return {secret_source::inline_value, std::move(secret)};
  }
  if (env) return {secret_source::environment, secret_from_env(*env, member(path, name + "_env"))};
  return {secret_source::file, secret_from_file(*file, member(path, name + "_file"))};
}

// "tickets": ["jsapi", "agent_config"], each at most once; agent_config needs the agentid the
// front end passes to wx.agentConfig.
void read_tickets(const json& value, const std::string& path, app_config& app) {
  const auto field = member(path, "tickets");
  constexpr std::string_view rule = R"(must be an array of "jsapi" and "agent_config")";
  if (!value.is_array()) throw config_error(field, std::string(rule));
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto name = read_string(value[i], element(field, i), rule);
    if (name != "jsapi" && name != "agent_config") {
      throw config_error(element(field, i),
                         "unknown ticket \"" + printable(name) + "\": " + std::string(rule));
    }
    bool& wanted = name == "jsapi" ? app.jsapi_ticket : app.agent_ticket;
    if (wanted) throw config_error(element(field, i), "\"" + name + "\" is listed twice");
    wanted = true;
  }
  if (app.agent_ticket && !app.agentid) {
    throw config_error(member(path, "agentid"),
                       "is required with the \"agent_config\" ticket (wx.agentConfig needs it)");
  }
}

std::string read_corpid(const json& value, const std::string& path) {
  const auto field = member(path, "corpid");
  const std::string rule = "must be a non-empty string of at most " +
                           std::to_string(max_corpid_length) +
                           " printable ASCII characters without spaces";
  auto corpid = read_string(required_member(value, path, "corpid"), field, rule);
  if (!is_printable_word(corpid) || corpid.size() > max_corpid_length) {
    throw config_error(field, rule);
  }
  return corpid;
}

app_config read_app(const std::string& id, const json& value) {
  const auto path = member("apps", id);
  if (!is_id(id)) throw config_error(path, "app id " + std::string(id_rule));
  require_object(value, path);
  reject_unknown_keys(value, path,
                      {"corpid", "agentid", "secret", "secret_env", "secret_file", "tickets"});

  app_config app;
  app.id = id;
  app.corpid = read_corpid(value, path);
  if (const auto* agentid = find_member(value, "agentid")) {
    app.agentid = read_integer(*agentid, member(path, "agentid"), 0, max_agentid);
  }
  if (const auto* tickets = find_member(value, "tickets")) read_tickets(*tickets, path, app);
  auto secret = read_secret(value, path, "secret");
  app.source = secret.source;
  app.secret = std::move(secret.value);
  return app;
}

// The drop-in gettoken route finds an app by its corpid and secret, so those must tell
// the apps apart.
void reject_shared_credentials(const std::vector<app_config>& apps) {
  for (auto later = apps.begin(); later != apps.end(); ++later) {
    for (auto earlier = apps.begin(); earlier != later; ++earlier) {
      if (earlier->corpid == later->corpid && earlier->secret == later->secret) {
        throw config_error(member("apps", later->id),
                           "same corpid and secret as " + member("apps", earlier->id));
      }
    }
  }
}

std::vector<app_config> read_apps(const json& apps) {
  require_object(apps, "apps");
  std::vector<app_config> result;
  for (const auto& [id, value] : apps.items()) result.push_back(read_app(id, value));
  reject_shared_credentials(result);
  return result;
}

provider_config read_provider(const std::string& id, const json& value) {
  const auto path = member("providers", id);
  if (!is_id(id)) throw config_error(path, "provider id " + std::string(id_rule));
  require_object(value, path);
  reject_unknown_keys(value, path,
                      {"corpid", "provider_secret", "provider_secret_env", "provider_secret_file"});
  provider_config provider;
  provider.id = id;
  provider.corpid = read_corpid(value, path);
  auto secret = read_secret(value, path, "provider_secret");
  provider.source = secret.source;
  provider.provider_secret = std::move(secret.value);
  return provider;
}

bool is_encoding_aes_key(std::string_view key) {
  return key.size() == 43 && std::all_of(key.begin(), key.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/';
         });
}

suite_callback_config read_suite_callback(const json& value, const std::string& path) {
  require_object(value, path);
  reject_unknown_keys(value, path,
                      {"token", "token_env", "token_file", "encoding_aes_key",
                       "encoding_aes_key_env", "encoding_aes_key_file"});
  suite_callback_config callback;
  callback.token = read_secret(value, path, "token").value;
  callback.encoding_aes_key = read_secret(value, path, "encoding_aes_key").value;
  if (!is_encoding_aes_key(callback.encoding_aes_key)) {
    throw config_error(member(path, "encoding_aes_key"),
                       "must be WeCom's EncodingAESKey: 43 characters of A-Z, a-z, 0-9, + and /");
  }
  return callback;
}

std::vector<suite_corp_config> read_suite_corps(const json& value, const std::string& path) {
  require_object(value, path);
  std::vector<suite_corp_config> corps;
  for (const auto& [corpid, corp] : value.items()) {
    const auto corp_path = member(path, corpid);
    if (!is_printable_word(corpid) || corpid.size() > max_corpid_length) {
      throw config_error(corp_path, "corpid must be at most " + std::to_string(max_corpid_length) +
                                        " printable ASCII characters without spaces");
    }
    require_object(corp, corp_path);
    reject_unknown_keys(corp, corp_path,
                        {"permanent_code", "permanent_code_env", "permanent_code_file"});
    auto code = read_secret(corp, corp_path, "permanent_code");
    corps.push_back(suite_corp_config{corpid, code.source, std::move(code.value)});
  }
  return corps;
}

suite_config read_suite(const std::string& id, const json& value) {
  const auto path = member("suites", id);
  if (!is_id(id)) throw config_error(path, "suite id " + std::string(id_rule));
  require_object(value, path);
  reject_unknown_keys(value, path,
                      {"suite_id", "template", "suite_secret", "suite_secret_env",
                       "suite_secret_file", "callback", "store_key_file", "corps"});
  suite_config suite;
  suite.id = id;
  const auto suite_id_field = member(path, "suite_id");
  const std::string suite_id_rule = "must be a non-empty string of at most " +
                                    std::to_string(max_corpid_length) +
                                    " printable ASCII characters without spaces";
  suite.suite_id =
      read_string(required_member(value, path, "suite_id"), suite_id_field, suite_id_rule);
  if (!is_printable_word(suite.suite_id) || suite.suite_id.size() > max_corpid_length) {
    throw config_error(suite_id_field, suite_id_rule);
  }
  if (const auto* is_template = find_member(value, "template")) {
    if (!is_template->is_boolean()) {
      throw config_error(member(path, "template"), "must be true or false");
    }
    suite.is_template = is_template->get<bool>();
  }
  auto secret = read_secret(value, path, "suite_secret");
  suite.source = secret.source;
  suite.suite_secret = std::move(secret.value);
  if (const auto* callback = find_member(value, "callback")) {
    suite.callback = read_suite_callback(*callback, member(path, "callback"));
  }
  if (const auto* key_file = find_member(value, "store_key_file")) {
    const auto field = member(path, "store_key_file");
    const auto key_path = resolve_secret_path(read_path(*key_file, field, "must be a file path"));
    suite.store_key = read_file(key_path, field);
    if (suite.store_key.size() != 32) {
      throw config_error(field, key_path.string() +
                                    " must hold exactly 32 bytes (head -c 32 "
                                    "/dev/urandom), not " +
                                    std::to_string(suite.store_key.size()));
    }
  } else if (suite.callback) {
    throw config_error(member(path, "store_key_file"),
                       "is required with a callback: the permanent codes of the corps that "
                       "authorize by callback are stored sealed under it");
  }
  if (const auto* corps = find_member(value, "corps")) {
    suite.corps = read_suite_corps(*corps, member(path, "corps"));
  }
  return suite;
}

std::vector<suite_config> read_suites(const json& suites) {
  require_object(suites, "suites");
  std::vector<suite_config> result;
  for (const auto& [id, value] : suites.items()) result.push_back(read_suite(id, value));
  return result;
}

std::vector<provider_config> read_providers(const json& providers) {
  require_object(providers, "providers");
  std::vector<provider_config> result;
  for (const auto& [id, value] : providers.items()) result.push_back(read_provider(id, value));
  return result;
}

bool decode_sha256_hex(std::string_view hex, sha256_digest& digest) {
  if (hex.size() != 2 * digest.size()) return false;
  for (std::size_t i = 0; i < digest.size(); ++i) {
    const auto* const pair = hex.data() + 2 * i;
    // from_chars would accept a sign, which is not a hex digit.
    if (!std::isxdigit(static_cast<unsigned char>(pair[0])) ||
        !std::isxdigit(static_cast<unsigned char>(pair[1])) ||
        std::from_chars(pair, pair + 2, digest[i], 16).ec != std::errc{}) {
      return false;
    }
  }
  return true;
}

// A client's "apps", "suites" or "providers": ids of configured ones, or ["*"] for all.
void read_scope(const json& listed, const std::string& field, const std::string& kind,
                const std::vector<std::string>& configured, bool& all,
                std::vector<std::string>& ids) {
  if (!listed.is_array() || listed.empty()) {
    throw config_error(
        field, "must be a non-empty array of " + kind + " ids, or [\"*\"] for every " + kind);
  }
  for (std::size_t i = 0; i < listed.size(); ++i) {
    const auto at = element(field, i);
    const auto id =
        read_string(listed[i], at,
                    "must be " + std::string(kind == "app" ? "an " : "a ") + kind + " id or \"*\"");
    if (id == "*") {
      if (listed.size() != 1) throw config_error(at, "\"*\" must be the only entry");
      all = true;
    } else if (std::find(configured.begin(), configured.end(), id) == configured.end()) {
      throw config_error(at, "unknown " + kind + " \"" + printable(id) + "\"");
    } else {
      ids.push_back(id);
    }
  }
}

// Exactly one of "key_sha256", "cert_sha256" and "unix_uid".
void read_client_identity(const json& value, const std::string& path, client_config& client) {
  const auto* key = find_member(value, "key_sha256");
  const auto* cert = find_member(value, "cert_sha256");
  const auto* uid = find_member(value, "unix_uid");
  if ((key ? 1 : 0) + (cert ? 1 : 0) + (uid ? 1 : 0) != 1) {
    throw config_error(member(path, "key_sha256"),
                       key || cert || uid
                           ? "a client has exactly one of key_sha256, cert_sha256 and unix_uid"
                           : "is required (or cert_sha256, or unix_uid)");
  }
  if (uid) {
    client.identity = client_identity::unix_uid;
    client.unix_uid = static_cast<std::uint32_t>(
        read_integer(*uid, member(path, "unix_uid"), 0, std::numeric_limits<std::int32_t>::max()));
    return;
  }
  const auto field = member(path, key ? "key_sha256" : "cert_sha256");
  const std::string rule = key ? "must be 64 hex digits: the SHA-256 of the client's bearer key"
                               : "must be 64 hex digits: the SHA-256 of the client certificate "
                                 "(DER), as `openssl x509 -outform DER | sha256sum` prints it";
  const auto hex = read_string(key ? *key : *cert, field, rule);
  client.identity = key ? client_identity::bearer_key : client_identity::certificate;
  if (!decode_sha256_hex(hex, key ? client.key_sha256 : client.cert_sha256)) {
    throw config_error(field, rule);
  }
}

client_config read_client(const std::string& name, const json& value,
                          const std::vector<std::string>& app_ids,
                          const std::vector<std::string>& suite_ids,
                          const std::vector<std::string>& provider_ids) {
  const auto path = member("clients", name);
  if (!is_id(name)) throw config_error(path, "client name " + std::string(id_rule));
  require_object(value, path);
  reject_unknown_keys(value, path,
                      {"key_sha256", "cert_sha256", "unix_uid", "apps", "suites", "providers"});

  client_config client;
  client.name = name;
  read_client_identity(value, path, client);
  const auto* apps = find_member(value, "apps");
  const auto* suites = find_member(value, "suites");
  const auto* providers = find_member(value, "providers");
  if (!apps && !suites && !providers) {
    throw config_error(member(path, "apps"), "is required (or suites, or providers)");
  }
  if (apps) read_scope(*apps, member(path, "apps"), "app", app_ids, client.all_apps, client.apps);
  if (suites) {
    read_scope(*suites, member(path, "suites"), "suite", suite_ids, client.all_suites,
               client.suites);
  }
  if (providers) {
    read_scope(*providers, member(path, "providers"), "provider", provider_ids,
               client.all_providers, client.providers);
  }
  return client;
}

template <typename Configured>
std::vector<std::string> ids_of(const std::vector<Configured>& configured) {
  std::vector<std::string> ids;
  for (const auto& each : configured) ids.push_back(each.id);
  return ids;
}

std::vector<client_config> read_clients(const json& value, const config& settings) {
  require_object(value, "clients");
  const auto app_ids = ids_of(settings.apps);
  const auto suite_ids = ids_of(settings.suites);
  const auto provider_ids = ids_of(settings.providers);
  std::vector<client_config> result;
  for (const auto& [name, client_value] : value.items()) {
    auto client = read_client(name, client_value, app_ids, suite_ids, provider_ids);
    for (const auto& earlier : result) {
      if (earlier.identity != client.identity) continue;
      // By the client's own name: clang 14 cannot capture a structured binding.
      const auto same = [&client, &earlier](std::string_view field, std::string_view what) {
        throw config_error(member(member("clients", client.name), field),
                           std::string(what) + " as " + member("clients", earlier.name));
      };
      using enum client_identity;
      if (client.identity == bearer_key && earlier.key_sha256 == client.key_sha256) {
        same("key_sha256", "same key");
      }
      if (client.identity == certificate && earlier.cert_sha256 == client.cert_sha256) {
        same("cert_sha256", "same certificate");
      }
      if (client.identity == unix_uid && earlier.unix_uid == client.unix_uid) {
        same("unix_uid", "same uid");
      }
    }
    result.push_back(std::move(client));
  }
  return result;
}

unsigned default_threads() {
  return std::clamp(std::thread::hardware_concurrency(), 1u, max_threads);
}

}  // namespace

const app_config* config::find_app(std::string_view id) const {
  const auto found =
      std::find_if(apps.begin(), apps.end(), [&](const app_config& app) { return app.id == id; });
  return found == apps.end() ? nullptr : &*found;
}

void check_listeners_fit_clients(const config& settings) {
  for (const auto& listener : settings.listen) {
    if (settings.clients.empty() && !listener.address.is_local()) {
      throw config_error("clients", "required while listening on " + listener.address.to_string() +
                                        " (the API would be open to the network)");
    }
  }
  const auto any_listener = [&](auto&& fits) {
    return std::any_of(settings.listen.begin(), settings.listen.end(), fits);
  };
  for (const auto& client : settings.clients) {
    if (client.identity == client_identity::certificate &&
        !any_listener([](const listener_config& l) { return l.tls && l.tls->client_ca_file; })) {
      throw config_error(member(member("clients", client.name), "cert_sha256"),
                         "needs a TLS listener with client_ca_file to present it on");
    }
    if (client.identity == client_identity::unix_uid && !any_listener([](const listener_config& l) {
          return l.address.type == listen_address::kind::unix_socket;
        })) {
      throw config_error(member(member("clients", client.name), "unix_uid"),
                         "needs a unix-socket listener (\"unix:/path\") to connect on");
    }
  }
}

gateway_config read_gateway(const json& value) {
  require_object(value, "gateway");
  reject_unknown_keys(value, "gateway",
                      {"enabled", "timeout_ms", "max_body_bytes", "max_connections", "budget"});
  gateway_config gateway;
  if (const auto* enabled = find_member(value, "enabled")) {
    if (!enabled->is_boolean()) throw config_error("gateway.enabled", "must be true or false");
    gateway.enabled = enabled->get<bool>();
  }
  read_duration(value, "gateway", "timeout_ms", 100, 600000, gateway.timeout);
  if (const auto* bytes = find_member(value, "max_body_bytes")) {
    gateway.max_body_bytes = static_cast<std::uint64_t>(
        read_integer(*bytes, "gateway.max_body_bytes", 1, std::int64_t{1} << 30));
  }
  if (const auto* connections = find_member(value, "max_connections")) {
    gateway.max_connections =
        static_cast<std::uint32_t>(read_integer(*connections, "gateway.max_connections", 1, 4096));
  }
  if (const auto* budget = find_member(value, "budget")) {
    require_object(*budget, "gateway.budget");
    reject_unknown_keys(*budget, "gateway.budget", {"per_minute", "per_hour", "concurrency"});
    const auto read_cap = [&](std::string_view key, std::uint32_t& target) {
      if (const auto* cap = find_member(*budget, key)) {
        target = static_cast<std::uint32_t>(
            read_integer(*cap, member("gateway.budget", key), 0, 100'000'000));
      }
    };
    read_cap("per_minute", gateway.budget.per_minute);
    read_cap("per_hour", gateway.budget.per_hour);
    read_cap("concurrency", gateway.budget.concurrency);
  }
  return gateway;
}

config parse_config(std::string_view text) {
  const auto document = parse_document(text);
  if (!document.is_object()) throw config_error("", "the config must be a JSON object");
  reject_unknown_keys(document, "",
                      {"listen", "threads", "log_level", "log_format", "audit_log", "upstream",
                       "refresh", "redis", "gateway", "apps", "providers", "suites", "clients"});

  config result;
  result.listen = read_listen(document);
  result.threads = default_threads();
  if (const auto* threads = find_member(document, "threads")) {
    result.threads = static_cast<unsigned>(read_integer(*threads, "threads", 1, max_threads));
  }
  if (const auto* level = find_member(document, "log_level")) {
    const std::string reason = "must be one of trace, debug, info, warn, error, critical, off";
    result.log_level = read_string(*level, "log_level", reason);
    if (std::find(log_levels.begin(), log_levels.end(), result.log_level) == log_levels.end()) {
      throw config_error("log_level", reason);
    }
  }
  if (const auto* format = find_member(document, "log_format")) {
    const std::string reason = "must be \"text\" or \"json\"";
    result.log_format = read_string(*format, "log_format", reason);
    if (result.log_format != "text" && result.log_format != "json") {
      throw config_error("log_format", reason);
    }
  }
  if (const auto* audit = find_member(document, "audit_log"); audit && !audit->is_null()) {
    result.audit_log = read_path(*audit, "audit_log", "must be null, \"stderr\" or a file path");
  }
  if (const auto* upstream = find_member(document, "upstream")) {
    result.upstream = read_upstream(*upstream);
  }
  if (const auto* refresh = find_member(document, "refresh")) {
    result.refresh = read_refresh(*refresh);
  }
  if (const auto* redis = find_member(document, "redis")) result.redis = read_redis(*redis);
  if (const auto* gateway = find_member(document, "gateway")) {
    result.gateway = read_gateway(*gateway);
  }
  if (const auto* apps = find_member(document, "apps")) result.apps = read_apps(*apps);
  if (const auto* providers = find_member(document, "providers")) {
    result.providers = read_providers(*providers);
  }
  if (const auto* suites = find_member(document, "suites")) result.suites = read_suites(*suites);
  if (const auto* clients = find_member(document, "clients")) {
    result.clients = read_clients(*clients, result);
  }
  check_listeners_fit_clients(result);
  return result;
}

config load_config(const std::filesystem::path& path) {
  return parse_config(read_file(path, ""));
}

std::optional<std::string> inline_secret_exposure(const std::filesystem::path& path,
                                                  const config& settings) {
  // The first secret written in the file itself, by its field.
  std::string field;
  for (const auto& app : settings.apps) {
    if (app.source == secret_source::inline_value) {
      field = member(member("apps", app.id), "secret");
      break;
    }
  }
  for (const auto& provider : settings.providers) {
    if (!field.empty()) break;
    if (provider.source == secret_source::inline_value) {
      field = member(member("providers", provider.id), "provider_secret");
    }
  }
  for (const auto& suite : settings.suites) {
    if (!field.empty()) break;
    const auto suite_path = member("suites", suite.id);
    if (suite.source == secret_source::inline_value) field = member(suite_path, "suite_secret");
    for (const auto& corp : suite.corps) {
      if (field.empty() && corp.source == secret_source::inline_value) {
        field = member(member(member(suite_path, "corps"), corp.corpid), "permanent_code");
      }
    }
  }
  if (field.empty()) return std::nullopt;
  std::error_code error;
  const auto permissions = std::filesystem::status(path, error).permissions();
  using std::filesystem::perms;
  if (error || (permissions & (perms::group_all | perms::others_all)) == perms::none) {
    return std::nullopt;
  }
  return fmt::format(
      "{} holds an inline secret ({}) and is readable by group or others (mode {:04o}); chmod "
      "600 it, or move the secret to a _file or _env source",
      path.string(), field, static_cast<unsigned>(permissions) & 0777U);
}

}  // namespace token_broker
