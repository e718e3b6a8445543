// token-broker: wiring only. Parses the command line, loads the config, runs the broker and
// the HTTP server on `threads` io threads, and stops cleanly on SIGTERM/SIGINT.
#include <spdlog/spdlog.h>

#include <iostream>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "token_broker/asio.hpp"
#include "token_broker/broker.hpp"
#include "token_broker/config.hpp"
#include "token_broker/http_server.hpp"
#include "token_broker/logging.hpp"
#include "token_broker/redis_token_store.hpp"
#include "token_broker/request_handler.hpp"
#include "token_broker/upstream_client.hpp"

namespace {

using namespace token_broker;

constexpr std::string_view usage =
    "usage: token-broker --config FILE [--check]\n"
    "       token-broker --version\n";

// Exit codes: 0 clean stop or valid config, 1 runtime failure, 2 bad usage or bad config.
constexpr int exit_failure = 1;
constexpr int exit_bad_config = 2;

// In-flight requests get this long to finish after SIGTERM; the whole stop stays within 5 s.
constexpr std::chrono::milliseconds drain_limit{4000};

struct options {
  std::string config_path;
  bool check_only = false;
  bool version = false;
};

std::optional<options> parse_options(int argc, char** argv) {
  options parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument == "--check") {
      parsed.check_only = true;
    } else if (argument == "--version") {
      parsed.version = true;
    } else if (argument == "--config" && i + 1 < argc) {
      parsed.config_path = argv[++i];
    } else if (argument.starts_with("--config=")) {
      parsed.config_path = argument.substr(std::string_view("--config=").size());
    } else {
      return std::nullopt;
    }
  }
  if (!parsed.version && parsed.config_path.empty()) return std::nullopt;
  return parsed;
}

asio::awaitable<void> drain_and_stop(asio::io_context& io, http_server& server, broker& apps) {
  server.stop();
  asio::steady_timer poll(co_await asio::this_coro::executor);
  const auto give_up_at = std::chrono::steady_clock::now() + drain_limit;
  while (server.requests_in_flight() > 0 && std::chrono::steady_clock::now() < give_up_at) {
    poll.expires_after(std::chrono::milliseconds{20});
    co_await poll.async_wait(asio::use_awaitable);
  }
  if (server.requests_in_flight() > 0) {
    spdlog::warn("stopping with {} requests still in flight", server.requests_in_flight());
  }
  apps.stop();
  io.stop();
}

// Keeps handling signals until the io_context stops, so a repeated Ctrl-C during the drain
// is absorbed instead of killing the process.
asio::awaitable<void> handle_signals(asio::signal_set& signals, asio::io_context& io,
                                     http_server& server, broker& apps) {
  bool stopping = false;
  for (;;) {
    const int signal = co_await signals.async_wait(asio::use_awaitable);
    if (signal == SIGHUP) {
      spdlog::warn(
          "SIGHUP: configuration reload is not supported by this build; "
          "the running configuration stays in force");
      continue;
    }
    if (stopping) continue;
    stopping = true;
    spdlog::info("{}: stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
    asio::co_spawn(io, drain_and_stop(io, server, apps), asio::detached);
  }
}

int run(const config& settings) {
  asio::io_context io(static_cast<int>(settings.threads));
  // Installed before the port opens, so a SIGTERM at any moment is a clean stop.
  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  std::unique_ptr<token_store> store;
  if (settings.redis) {
    store = std::make_unique<redis_token_store>(io.get_executor(), *settings.redis,
                                                settings.upstream.timeout);
  } else {
    store = std::make_unique<memory_token_store>();
  }
  broker apps(io.get_executor(), settings, std::move(store));
  request_handler handler(apps, client_auth(settings.clients));
  std::optional<http_server> server;
  try {
    server.emplace(io, settings.listen, handler,
                   server_limits{.max_connections = connection_cap_from_fd_limit()});
  } catch (const boost::system::system_error& error) {
    spdlog::critical("cannot listen on {}: {}", settings.listen.to_string(),
                     error.code().message());
    return exit_failure;
  }

  apps.start();
  server->start();
  asio::co_spawn(io, handle_signals(signals, io, *server, apps), asio::detached);
  spdlog::info("token-broker {} listening on {} with {} apps, {} threads", TOKEN_BROKER_VERSION,
               settings.listen.to_string(), settings.apps.size(), settings.threads);

  std::vector<std::jthread> workers;
  for (unsigned i = 1; i < settings.threads; ++i) workers.emplace_back([&io] { io.run(); });
  io.run();
  workers.clear();  // joins
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
  if (parsed->version) {
    std::cout << "token-broker " << TOKEN_BROKER_VERSION << '\n';
    return 0;
  }

  std::optional<config> settings;
  try {
    settings = load_config(parsed->config_path);
    // The CA bundle must parse as PEM too, which only the TLS context can tell.
    const upstream_client probe(settings->upstream);
  } catch (const config_error& error) {
    std::cerr << "token-broker: invalid config " << parsed->config_path << ": " << error.what()
              << '\n';
    return exit_bad_config;
  }
  if (parsed->check_only) {
    std::cout << "config ok: " << settings->apps.size() << " apps, listen "
              << settings->listen.to_string() << '\n';
    return 0;
  }

  init_logging(settings->log_level);
  try {
    return run(*settings);
  } catch (const std::exception& error) {
    spdlog::critical("fatal: {}", error.what());
    return exit_failure;
  }
}
