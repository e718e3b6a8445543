// `token-broker status`: a terminal view of what a running broker holds, read over its own API
// (/metrics for the version, /healthz, /readyz, /v1/apps and each suite's
// /v1/suites/{suite}/corps) as the client whose key it is given sees it. A one-shot client:
// one connection per request, every phase bounded by a deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace token_broker {

struct status_options {
  std::string url = "http://127.0.0.1:8080";   // http://H:P, https://H:P or unix:/PATH
  std::optional<std::string> client_key_file;  // the bearer key; else $TOKEN_BROKER_KEY
  std::optional<std::string> ca_file;          // https: instead of the system's CA store
  std::optional<std::string> cert_file;        // https: a client certificate (mTLS listener)
  std::optional<std::string> cert_key_file;    // its private key
  std::chrono::milliseconds timeout{5000};     // per request
};

// The environment variable the client key is read from when no --key-file is given: never
// from the command line, where `ps` would show it.
inline constexpr const char* status_key_variable = "TOKEN_BROKER_KEY";

// Exit codes of `token-broker status`.
inline constexpr int status_ready = 0;      // healthy, ready, every credential shown fresh
inline constexpr int status_not_ready = 1;  // not ready, or a credential failing or unknown
inline constexpr int status_failed = 2;     // bad usage, broker unreachable, key refused

// The arguments after "status"; a message naming the problem on bad usage.
std::variant<status_options, std::string> parse_status_options(
    std::span<const std::string_view> arguments);

// Asks the broker and prints the view on `out` (errors on `err`); one of the exit codes above.
int run_status(const status_options& options, std::ostream& out, std::ostream& err);

// "1h 54m 10s", "3m 0s", "42s", "2d 0h 5m 1s".
std::string human_duration(std::int64_t seconds);

}  // namespace token_broker
