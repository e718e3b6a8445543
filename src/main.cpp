// token-broker: wiring only. Parses the command line, loads the config, runs the broker and
// the HTTP server (with `threads` workers), reloads on SIGHUP, stops cleanly on SIGTERM and
// SIGINT, and tells systemd about all of it.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "token_broker/broker.hpp"
#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/core/logging.hpp"
#include "token_broker/core/secret_digest.hpp"
#include "token_broker/core/supervisor.hpp"
#include "token_broker/gateway/gateway.hpp"
#include "token_broker/http/http_server.hpp"
#include "token_broker/http/listener_tls.hpp"
#include "token_broker/http/request_handler.hpp"
#include "token_broker/ops/audit_log.hpp"
#include "token_broker/ops/status_command.hpp"
#include "token_broker/ops/systemd_notify.hpp"
#include "token_broker/redis/redis_stream.hpp"
#include "token_broker/store/redis_token_store.hpp"
#include "token_broker/upstream/upstream_client.hpp"

namespace {

using namespace token_broker;

// Every option on a line of its own: the man page (docs/token-broker.8) is checked against it
// (tests/docs/check-man-page.sh).
constexpr std::string_view usage =
    "usage: token-broker --config FILE [--check]\n"
    "       token-broker status [--url URL] [--key-file FILE] [--ca-file FILE]\n"
    "                           [--cert-file FILE --cert-key-file FILE]\n"
    "       token-broker --hash-key < key\n"
    "       token-broker --version | --help\n"
    "\n"
    "options:\n"
    "  --config FILE         run the broker on FILE in the foreground, logging to stderr\n"
    "  --check               with --config: validate FILE and its secret sources, then exit\n"
    "  --hash-key            read a client key on stdin and print its key_sha256\n"
    "  --version             print the version\n"
    "  --help                print this help\n"
    "\n"
    "token-broker status: what a running broker holds, as the client whose key is given sees it\n"
    "  --url URL             http://HOST:PORT (default http://127.0.0.1:8080), https://HOST:PORT\n"
    "                        or unix:/PATH/api.sock\n"
    "  --key-file FILE       the client key (bearer) to send, read from FILE; without it the\n"
    "                        key is read from $TOKEN_BROKER_KEY (never from the command line)\n"
    "  --ca-file FILE        https: trust the CA certificates in FILE, not the system's store\n"
    "  --cert-file FILE      https: present this client certificate (PEM) to an mTLS listener\n"
    "  --cert-key-file FILE  https: the private key (PEM) of --cert-file\n"
    "\n"
    "exit status:\n"
    "  0  stopped cleanly on SIGTERM/SIGINT; config valid (--check); status: healthy, ready\n"
    "     and every credential shown fresh\n"
    "  1  runtime failure; status: not ready, or a credential failing or unknown\n"
    "  2  bad usage or invalid config; status: bad usage, broker unreachable, or the client\n"
    "     key missing or refused (401/403)\n";

// Exit codes: 0 clean stop or valid config, 1 runtime failure, 2 bad usage or bad config.
constexpr int exit_failure = 1;
constexpr int exit_bad_config = 2;

// In-flight requests get this long to finish after SIGTERM; the whole stop stays within 5 s.
constexpr std::chrono::milliseconds drain_limit{4000};
// Then the answers to the requests that were still waiting for a token get this long to go out.
constexpr std::chrono::milliseconds answer_limit{300};

// A client key shorter than this is guessable; --hash-key says so.
constexpr std::size_t recommended_key_length = 32;

struct options {
  std::string config_path;
  bool check_only = false;
  bool version = false;
  bool hash_key = false;
  bool help = false;
  std::optional<status_options> status;  // `token-broker status …`
};

std::optional<options> parse_options(int argc, char** argv) {
  options parsed;
  const std::vector<std::string_view> arguments(argv + std::min(argc, 1), argv + argc);
  if (std::find(arguments.begin(), arguments.end(), "--help") != arguments.end()) {
    parsed.help = true;
    return parsed;
  }
  if (!arguments.empty() && arguments.front() == "status") {
    auto status = parse_status_options(std::span(arguments).subspan(1));
    if (const auto* problem = std::get_if<std::string>(&status)) {
      std::cerr << "token-broker " << *problem << '\n';
      return std::nullopt;
    }
    parsed.status = std::get<status_options>(std::move(status));
    return parsed;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument == "--check") {
      parsed.check_only = true;
    } else if (argument == "--version") {
      parsed.version = true;
    } else if (argument == "--hash-key") {
      parsed.hash_key = true;
    } else if (argument == "--config" && i + 1 < argc) {
      parsed.config_path = argv[++i];
    } else if (argument.starts_with("--config=")) {
      parsed.config_path = argument.substr(std::string_view("--config=").size());
    } else {
      return std::nullopt;
    }
  }
  if (!parsed.version && !parsed.hash_key && parsed.config_path.empty()) return std::nullopt;
  return parsed;
}

// Reads a client key on stdin (so it stays out of shell history and `ps`) and prints the
// key_sha256 the config wants.
int hash_key() {
  std::string key(std::istreambuf_iterator<char>(std::cin), {});
  if (key.ends_with("\r\n")) {
    key.resize(key.size() - 2);
  } else if (key.ends_with('\n')) {
    key.pop_back();
  }
  if (key.empty()) {
    std::cerr << "token-broker --hash-key: no key on standard input\n";
    return exit_bad_config;
  }
  if (key.size() < recommended_key_length) {
    std::cerr << "token-broker --hash-key: warning: keys shorter than " << recommended_key_length
              << " characters can be guessed; make one with: head -c 32 /dev/urandom | base64\n";
  }
  const auto digest = sha256(key);
  std::cout << fmt::format("{:02x}", fmt::join(digest, "")) << '\n';
  return 0;
}

void warn_if_inline_secret_exposed(const std::string& path, const config& settings) {
  if (const auto warning = inline_secret_exposure(path, settings)) spdlog::warn("{}", *warning);
}

// A package's first start has no credential yet: allowed, and said, so that an empty broker is
// never a mystery.
std::optional<std::string> nothing_to_serve(const std::string& path, const config& settings) {
  if (!settings.apps.empty() || !settings.providers.empty() || !settings.suites.empty()) {
    return std::nullopt;
  }
  return fmt::format("{} names no apps, providers or suites: nothing is served until it does",
                     path);
}

// "127.0.0.1:8080, 0.0.0.0:8443 (mTLS)": where the API listens, and how, for the log.
std::string listeners_text(const std::vector<listener_config>& listeners) {
  std::vector<std::string> named;
  for (const auto& each : listeners) {
    auto text = each.address.to_string();
    if (each.tls && each.tls->require_client_cert) {
      text += " (mTLS)";
    } else if (each.tls && each.tls->client_ca_file) {
      text += " (TLS, client certificates)";
    } else if (each.tls) {
      text += " (TLS)";
    }
    named.push_back(std::move(text));
  }
  return fmt::format("{}", fmt::join(named, ", "));
}

// SIGHUP: the apps, clients, upstream and refresh settings and the log level of a valid new
// config take effect; the TLS listeners re-read their files and the audit log is reopened
// (whether or not the config is valid); listen, threads, log_format, audit_log, redis and
// the gateway are bound at start and need a restart.
void reload(const std::string& path, config& running, broker& apps, request_handler& handler) {
  config next;
  try {
    next = load_config(path);
    const upstream_client probe(next.upstream);  // the CA bundle must parse too
    auto on_running_listeners = next;
    on_running_listeners.listen = running.listen;
    check_listeners_fit_clients(on_running_listeners);
  } catch (const config_error& error) {
    spdlog::error("reload: {} is invalid; the running configuration stays in force: {}", path,
                  error.what());
    return;
  }
  const auto needs_restart = [](std::string_view field) {
    spdlog::warn("reload: {} changed; that takes a restart, the running value stays", field);
  };
  if (next.listen != running.listen) needs_restart("listen");
  if (next.threads != running.threads) needs_restart("threads");
  if (next.log_format != running.log_format) needs_restart("log_format");
  if (next.audit_log != running.audit_log) needs_restart("audit_log");
  if (next.redis != running.redis) needs_restart("redis");
  if (next.gateway != running.gateway) needs_restart("gateway");
  next.listen = running.listen;
  next.threads = running.threads;
  next.log_format = running.log_format;
  next.audit_log = running.audit_log;
  next.redis = running.redis;
  next.gateway = running.gateway;

  warn_if_inline_secret_exposed(path, next);
  spdlog::set_level(spdlog::level::from_str(next.log_level));
  handler.set_clients(next.clients);
  const auto summary = apps.reload(next);
  spdlog::info(
      "reload: {} applied: {} apps kept with their tokens, added [{}], removed [{}], new "
      "credentials [{}], {} clients",
      path, summary.kept, fmt::join(summary.added, ","), fmt::join(summary.removed, ","),
      fmt::join(summary.credentials_changed, ","), next.clients.size());
  running = std::move(next);
}

// Polls until `done()` or `give_up_at`. (`done` by value: the coroutine starts after the call.)
asio::awaitable<void> poll_until(std::function<bool()> done,
                                 std::chrono::steady_clock::time_point give_up_at) {
  asio::steady_timer poll(co_await asio::this_coro::executor);
  while (!done() && std::chrono::steady_clock::now() < give_up_at) {
    poll.expires_after(std::chrono::milliseconds{5});
    co_await poll.async_wait(asio::use_awaitable);
  }
}

asio::awaitable<void> drain_and_stop(asio::io_context& io, http_server& server, broker& apps,
                                     request_handler& handler) {
  using std::chrono::steady_clock;
  server.stop();
  const auto no_request_in_flight = [&server] { return server.requests_in_flight() == 0; };
  // Each awaitable named before its co_await: g++ 12 mishandles temporaries in the operand.
  auto drained = poll_until(no_request_in_flight, steady_clock::now() + drain_limit);
  co_await std::move(drained);
  if (server.requests_in_flight() > 0) {
    spdlog::warn("stopping with {} requests still in flight", server.requests_in_flight());
  }
  // Requests still waiting for a token are answered now, as having none: no new wait starts,
  // and the stopped refreshers answer the waits they have.
  handler.close_waits();
  apps.stop();
  // A wait ends on its worker, handed over from this loop: neither may end while a wait is
  // out, or its completion would go to a worker that is gone. Once stopped, the refreshers
  // end every wait as soon as this loop runs them, so this needs no time limit.
  const auto no_wait_in_flight = [&handler] { return handler.waits_in_flight() == 0; };
  auto waits_ended = poll_until(no_wait_in_flight, steady_clock::time_point::max());
  co_await std::move(waits_ended);
  auto answered = poll_until(no_request_in_flight, steady_clock::now() + answer_limit);
  co_await std::move(answered);
  server.stop_workers();
  io.stop();
}

struct daemon_parts {
  asio::io_context& io;
  const std::string& config_path;
  config& running;
  broker& apps;
  request_handler& handler;
  http_server& server;
  audit_log* audit;  // null without one
  const systemd_notifier& systemd;
};

// Keeps handling signals until the io_context stops, so a repeated Ctrl-C during the drain
// is absorbed instead of killing the process.
asio::awaitable<void> handle_signals(asio::signal_set& signals, daemon_parts parts) {
  bool stopping = false;
  for (;;) {
    const int signal = co_await signals.async_wait(asio::use_awaitable);
    if (stopping) continue;
    if (signal == SIGHUP) {
      spdlog::info("SIGHUP: reloading {}", parts.config_path);
      parts.systemd.notify("RELOADING=1");
      // Files first: rotated logs and renewed certificates need no valid config change.
      if (parts.audit) parts.audit->reopen();
      parts.server.reload_tls();
      reload(parts.config_path, parts.running, parts.apps, parts.handler);
      parts.systemd.notify("READY=1");
      continue;
    }
    stopping = true;
    spdlog::info("{}: stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
    parts.systemd.notify("STOPPING=1");
    asio::co_spawn(parts.io, drain_and_stop(parts.io, parts.server, parts.apps, parts.handler),
                   asio::detached);
  }
}

int run(const std::string& config_path, config settings) {
  const systemd_notifier systemd;  // outlives the io_context and the watchdog on it
  // The control loop: refreshers, upstream calls, Redis, signals, accepting. The HTTP
  // workers (`threads` of them) run loops of their own.
  asio::io_context io(1);
  // Installed before the port opens, so a SIGTERM at any moment is a clean stop.
  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  std::unique_ptr<token_store> store;
  std::shared_ptr<redis_connection> redis_commands;  // shared with the gateway's budget
  if (settings.redis) {
    auto shared = std::make_unique<redis_token_store>(io.get_executor(), *settings.redis);
    redis_commands = shared->commands();
    store = std::move(shared);
  } else {
    store = std::make_unique<memory_token_store>();
  }
  broker apps(io.get_executor(), settings, std::move(store));
  std::unique_ptr<gateway> api_gateway;
  if (settings.gateway.enabled) {
    // A lease outlives the longest call, a retried one included, so that only a crashed
    // holder's lease ever runs out.
    const auto lease = 2 * settings.gateway.timeout + std::chrono::seconds{5};
    auto budget = redis_commands ? make_redis_budget(settings.gateway.budget, redis_commands,
                                                     settings.redis->key_prefix, lease)
                                 : make_local_budget(settings.gateway.budget);
    api_gateway = std::make_unique<gateway>(settings.upstream, settings.gateway, std::move(budget));
  }
  std::unique_ptr<audit_log> audit;
  if (settings.audit_log) {
    try {
      audit = std::make_unique<audit_log>(*settings.audit_log);
    } catch (const std::runtime_error& error) {
      spdlog::critical("{}", error.what());
      return exit_failure;
    }
  }
  request_handler handler(apps, settings.clients, api_gateway.get(), audit.get());
  std::optional<http_server> server;
  try {
    server.emplace(
        io, settings.listen, handler,
        server_limits{
            .max_connections = connection_cap_from_fd_limit(),
            .gateway_body_limit = settings.gateway.enabled ? settings.gateway.max_body_bytes : 0},
        settings.threads);
  } catch (const boost::system::system_error& error) {
    spdlog::critical("cannot listen on {}: {}", listeners_text(settings.listen),
                     error.code().message());
    return exit_failure;
  } catch (const config_error& error) {  // a TLS file changed since it was checked
    spdlog::critical("cannot listen: {}", error.what());
    return exit_bad_config;
  }

  auto& tasks = apps.tasks();
  apps.start();
  server->start(tasks);
  const daemon_parts parts{io, config_path, settings, apps, handler, *server, audit.get(), systemd};
  tasks.spawn(io.get_executor(), "signals", "signal handler",
              [&signals, parts] { return handle_signals(signals, parts); });
  spdlog::info("token-broker {} listening on {} with {} apps, {} providers, {} suites, {} threads",
               TOKEN_BROKER_VERSION, listeners_text(settings.listen), settings.apps.size(),
               settings.providers.size(), settings.suites.size(), settings.threads);
  systemd.notify("READY=1");
  tasks.spawn(io.get_executor(), "watchdog", "systemd watchdog",
              [&systemd] { return systemd.feed_watchdog(); });

  io.run();
  // The gateway's idle upstream connections live on the workers' event loops: closed while
  // those still exist (their threads have ended), and the gateway itself only after them.
  if (api_gateway) api_gateway->close_idle_connections();
  server.reset();  // the workers end before what their connections use
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto parsed = parse_options(argc, argv);
  if (!parsed) {
    std::cerr << usage;
    return exit_bad_config;
  }
  if (parsed->help) {
    std::cout << usage;
    return 0;
  }
  if (parsed->status) return run_status(*parsed->status, std::cout, std::cerr);
  if (parsed->version) {
    std::cout << "token-broker " << TOKEN_BROKER_VERSION << '\n';
    return 0;
  }
  if (parsed->hash_key) return hash_key();

  std::optional<config> settings;
  try {
    settings = load_config(parsed->config_path);
    // The CA bundles and Redis's client certificate must parse as PEM too, which only the TLS
    // contexts can tell.
    const upstream_client probe(settings->upstream);
    if (settings->redis && settings->redis->tls) make_redis_tls_context(*settings->redis->tls);
    for (std::size_t i = 0; i < settings->listen.size(); ++i) {
      if (const auto& tls = settings->listen[i].tls) {
        make_listener_tls_context(*tls, "listen[" + std::to_string(i) + "].tls");
      }
    }
  } catch (const config_error& error) {
    std::cerr << "token-broker: invalid config " << parsed->config_path << ": " << error.what()
              << '\n';
    return exit_bad_config;
  }
  if (parsed->check_only) {
    if (const auto warning = inline_secret_exposure(parsed->config_path, *settings)) {
      std::cerr << "token-broker: warning: " << *warning << '\n';
    }
    if (const auto warning = nothing_to_serve(parsed->config_path, *settings)) {
      std::cerr << "token-broker: warning: " << *warning << '\n';
    }
    std::cout << "config ok: " << settings->apps.size() << " apps, listen "
              << listeners_text(settings->listen) << '\n';
    return 0;
  }

  init_logging(settings->log_level, settings->log_format);
  warn_if_inline_secret_exposed(parsed->config_path, *settings);
  if (const auto warning = nothing_to_serve(parsed->config_path, *settings)) {
    spdlog::warn("{}", *warning);
  }
  try {
    return run(parsed->config_path, std::move(*settings));
  } catch (const std::exception& error) {
    spdlog::critical("fatal: {}", error.what());
    return exit_failure;
  }
}
