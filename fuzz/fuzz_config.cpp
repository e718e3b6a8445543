// Fuzzes the config file: parse_config, JSON with comments through every validation rule and
// secret source. A config_error is the expected answer to a bad file; anything else (another
// exception, a crash, a sanitizer report) is a finding, and so is
//  - an error message that quotes an app secret (config.hpp: what() never holds one);
//  - a config that parses but breaks what config.hpp promises of a `config`: every field
//    usable as is (no NUL or blank in a host, a listen address that reads back the same, …).
//
// secret_file and upstream.ca_file make parse_config read files. So that the fuzzer never
// reads a FIFO, a device or /proc (which can block or flood), such inputs are skipped; the
// seeds use the files this target writes into its own credentials directory.
#include <sys/stat.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/config/config.hpp"

namespace {

using token_broker::config;
using token_broker::config_error;
using json = nlohmann::ordered_json;
namespace fs = std::filesystem;

// $CREDENTIALS_DIRECTORY while fuzzing: a relative secret_file is read from here. A fixed
// path, so that seeds can name it (upstream.ca_file has no such directory).
const fs::path credentials = "/tmp/token-broker-fuzz-config";

// The secrets behind secret_env and secret_file: no error may quote them either.
struct sourced_secret {
  const char* name;  // the variable, or the file in `credentials`
  const char* contents;
};
constexpr sourced_secret env_secrets[] = {
    {"WECOM_HR_SECRET", "env-hr-secret-Kz81QwPd"},
    {"DEMO_WECOM_SECRET", "env-demo-secret-Vn27RtYb"},
    {"FUZZ_EMPTY_SECRET", ""},
    {"FUZZ_SPACED_SECRET", "env spaced secret"},
};
constexpr sourced_secret file_secrets[] = {
    {"hr", "file-hr-secret-Lp93XcMa\n"},
    {"crm", "file-crm-secret-Ht64BvNs\r\n"},
    {"empty", ""},
    {"two-lines", "file-two-lines-Qa55\nsecond-line\n"},
    {"ca.pem", "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"},
};

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_config: %s\n", what.c_str());
  std::abort();
}

// Outside the coverage instrumentation, and without memcmp (which libFuzzer intercepts): the
// fuzzer must not learn error texts from this check and feed them back as "secrets".
__attribute__((no_sanitize("coverage"))) bool occurs(std::string_view text, std::string_view part) {
  if (part.empty() || part.size() > text.size()) return false;
  for (std::size_t at = 0; at + part.size() <= text.size(); ++at) {
    std::size_t i = 0;
    while (i < part.size() && text[at + i] == part[i]) ++i;
    if (i == part.size()) return true;
  }
  return false;
}

// ---- which files an input would make parse_config read ----

// Reading it cannot block or flood: it is missing, a directory (read fails), /dev/null, or a
// small regular file outside /proc and /sys.
bool harmless_to_read(const fs::path& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) return true;  // open fails the same way
  if (S_ISDIR(status.st_mode)) return true;
  std::error_code error;
  const auto real = fs::canonical(path, error);
  if (error) return false;
  if (real == "/dev/null") return true;
  if (!S_ISREG(status.st_mode) || status.st_size > 1024 * 1024) return false;
  const auto text = real.string();
  return !text.starts_with("/proc/") && !text.starts_with("/sys/");
}

bool file_sources_harmless(const json& document) {
  if (!document.is_object()) return true;
  if (const auto upstream = document.find("upstream");
      upstream != document.end() && upstream->is_object()) {
    if (const auto ca = upstream->find("ca_file"); ca != upstream->end() && ca->is_string()) {
      if (!harmless_to_read(ca->get<std::string>())) return false;
    }
  }
  const auto apps = document.find("apps");
  if (apps == document.end() || !apps->is_object()) return true;
  for (const auto& [id, app] : apps->items()) {
    if (!app.is_object()) continue;
    const auto file = app.find("secret_file");
    if (file == app.end() || !file->is_string()) continue;
    const fs::path written = file->get<std::string>();
    if (!harmless_to_read(written.is_relative() ? credentials / written : written)) return false;
  }
  return true;
}

// ---- secrets in error messages ----

// Each byte moved to the next one in '!'..'~', others kept: a different secret of the same
// length that passes or fails the same checks, and equal secrets stay equal.
std::string shifted(const std::string& secret) {
  std::string other = secret;
  for (auto& c : other) {
    if (c >= '!' && c <= '~') c = c == '~' ? '!' : static_cast<char>(c + 1);
  }
  return other;
}

// The inline secrets of a document, in its order; with `replace`, each shifted in place.
std::vector<std::string> inline_secrets(json& document, bool replace) {
  std::vector<std::string> found;
  if (!document.is_object()) return found;
  const auto apps = document.find("apps");
  if (apps == document.end() || !apps->is_object()) return found;
  for (auto& [id, app] : apps->items()) {
    if (!app.is_object()) continue;
    const auto secret = app.find("secret");
    if (secret == app.end() || !secret->is_string()) continue;
    found.push_back(secret->get<std::string>());
    if (replace) *secret = shifted(found.back());
  }
  return found;
}

std::string error_of(const std::string& text) {
  try {
    (void)token_broker::parse_config(text);
  } catch (const config_error& error) {
    return error.what();
  }
  return {};
}

// An error quoting an inline secret: the same document with other secrets must then fail
// quoting those, at the same place. (A secret that merely equals a key, an app id or another
// printed value is quoted as that: it stays put when the secrets change.)
void check_no_inline_secret(const std::string& message, json document) {
  const auto secrets = inline_secrets(document, /*replace=*/true);
  std::vector<std::string> quoted;
  for (const auto& secret : secrets) {
    if (occurs(message, secret)) quoted.push_back(secret);
  }
  if (quoted.empty()) return;
  const auto other_message = error_of(document.dump());
  for (const auto& secret : quoted) {
    if (occurs(other_message, shifted(secret)) && !occurs(other_message, secret)) {
      finding("an inline secret in the error: " + message);
    }
  }
}

void check_error(const config_error& error, const json& document) {
  const std::string message = error.what();
  if (!document.is_discarded()) check_no_inline_secret(message, document);
  for (const auto& source : env_secrets) {
    if (*source.contents && occurs(message, source.contents))
      finding("an env secret in " + message);
  }
  for (const auto& source : file_secrets) {
    std::string_view secret = source.contents;
    secret = secret.substr(0, secret.find_first_of("\r\n"));
    if (secret.size() >= 8 && occurs(message, secret)) finding("a file secret in " + message);
  }
}

// ---- what a parsed config promises ----

bool plain_text(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < '\x7f'; });
}

void check_config(const config& settings) {
  if (settings.listen.empty()) finding("no listener");
  for (const auto& listener : settings.listen) {
    std::string reason;
    const auto& address = listener.address;
    const auto listen = token_broker::parse_listen_address(address.to_string(), reason);
    if (!listen || *listen != address) {
      finding("listen does not read back as itself: " + address.to_string());
    }
    if (settings.clients.empty() && !address.is_local()) finding("an open API on a network");
  }
  if (settings.threads < 1 || settings.threads > 256) finding("threads out of range");

  const auto& upstream = settings.upstream;
  if (upstream.host.empty() || !plain_text(upstream.host)) finding("upstream.host not plain");
  if (!token_broker::parse_port(upstream.port)) finding("upstream.port not a port");
  if (!upstream.path_prefix.empty() &&
      (!upstream.path_prefix.starts_with('/') || upstream.path_prefix.ends_with('/') ||
       !plain_text(upstream.path_prefix))) {
    finding("upstream.path_prefix malformed");
  }
  if (settings.refresh.retry_max < settings.refresh.retry_min) finding("retry_max < retry_min");

  if (const auto& redis = settings.redis) {
    if (redis->unix_path.empty() == redis->host.empty()) finding("redis: host xor unix path");
    if (!redis->host.empty() && (!plain_text(redis->host) || redis->port == 0)) {
      finding("redis host not plain");
    }
    if (redis->unix_path.find('\0') != std::string::npos) finding("redis unix path with NUL");
    if (redis->key_prefix.size() > 128) finding("redis key_prefix too long");
  }

  for (const auto& app : settings.apps) {
    if (app.id.empty() || app.id.size() > 64) finding("app id length");
    if (app.corpid.empty() || app.corpid.size() > 64 || !plain_text(app.corpid)) {
      finding("corpid not plain");
    }
    if (app.secret.empty() || !plain_text(app.secret)) finding("secret not plain");
    if (settings.find_app(app.id) != &app) finding("app ids not unique");
  }
  for (const auto& client : settings.clients) {
    for (const auto& id : client.apps) {
      if (!settings.find_app(id)) finding("a client of an unknown app");
    }
    if (client.all_apps != client.apps.empty()) finding("a client of no apps");
  }
}

void write_file(const fs::path& path, std::string_view contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
  if (!file) finding("setup: cannot write " + path.string());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  fs::create_directories(credentials);
  for (const auto& source : file_secrets) write_file(credentials / source.name, source.contents);
  ::setenv("CREDENTIALS_DIRECTORY", credentials.c_str(), 1);
  for (const auto& source : env_secrets) ::setenv(source.name, source.contents, 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The same reading parse_config makes, to see which files it would open and which secrets
  // it holds; duplicate keys (which parse_config refuses before reading anything) aside.
  const auto document = json::parse(text, nullptr, /*allow_exceptions=*/false,
                                    /*ignore_comments=*/true);
  if (!document.is_discarded() && !file_sources_harmless(document)) return -1;
  try {
    check_config(token_broker::parse_config(text));
  } catch (const config_error& error) {
    check_error(error, document);
  }
  return 0;
}
