// bench-fan-in: many clients asking for one cold app at the same instant.
//
//   bench-fan-in --port N [--host 127.0.0.1] [--connections 10000] [--app cold]
//                [--hup-pid PID] [--timeout-s 60]
//
// Opens N keep-alive connections, sends SIGHUP to PID (the caller has just added the app to
// the broker's config), polls GET /v1/apps every 1 ms on a connection of its own until the
// app is listed, then writes GET /v1/apps/{app}/token on all N connections before reading any
// answer, and reads them all. Prints key=value lines; exits 1 unless every answer is a 200,
// 2 on bad arguments.
#include <sys/resource.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "parse_number.hpp"
#include "token_broker/core/asio.hpp"

namespace {

namespace asio = token_broker::asio;
namespace beast = token_broker::beast;
namespace http = token_broker::http;
using asio::ip::tcp;
using token_broker::parse_number;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct arguments {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::size_t connections = 10000;
  std::string app = "cold";
  pid_t hup_pid = 0;  // 0: the app is expected to appear by other means
  std::chrono::seconds timeout{60};
};

constexpr const char* usage =
    "usage: bench-fan-in --port N [--host 127.0.0.1] [--connections 10000] [--app cold]\n"
    "                    [--hup-pid PID] [--timeout-s 60]\n";

arguments parse_arguments(int argc, char** argv) {
  arguments parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(flag + ": unknown flag or missing value");
    const std::string value = argv[++i];
    if (flag == "--host") {
      parsed.host = value;
    } else if (flag == "--port") {
      parsed.port = static_cast<std::uint16_t>(parse_number(flag, value, 1, 65535));
    } else if (flag == "--connections") {
      parsed.connections = static_cast<std::size_t>(parse_number(flag, value, 1, 1000000));
    } else if (flag == "--app") {
      parsed.app = value;
    } else if (flag == "--hup-pid") {
      parsed.hup_pid = static_cast<pid_t>(parse_number(flag, value, 1, 1L << 30));
    } else if (flag == "--timeout-s") {
      parsed.timeout = std::chrono::seconds{parse_number(flag, value, 1, 3600)};
    } else {
      throw std::invalid_argument(flag + ": unknown flag");
    }
  }
  if (parsed.port == 0) throw std::invalid_argument("--port is required");
  return parsed;
}

// Each connection is a descriptor: without this, 10,000 of them stop at the soft limit.
void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

std::string get_request(const std::string& target, const std::string& host) {
  return "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n";
}

double milliseconds_between(clock_type::time_point from, clock_type::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

struct answer {
  bool arrived = false;
  unsigned status = 0;
  std::string access_token;
  clock_type::time_point at;
};

class fan_in {
 public:
  fan_in(asio::io_context& io, arguments parsed)
      : io_(io), arguments_(std::move(parsed)), answers_(arguments_.connections) {
    endpoint_ = tcp::endpoint(asio::ip::make_address(arguments_.host), arguments_.port);
    sockets_.reserve(arguments_.connections);
    for (std::size_t i = 0; i < arguments_.connections; ++i) sockets_.emplace_back(io_);
  }

  asio::awaitable<void> run() {
    // A bounded number of connects in flight: a burst of 10,000 SYNs overflows the listen
    // backlog, and the kernel's retry (1 s, 3 s …) would then dominate the setup time.
    constexpr std::size_t connect_parallelism = 256;
    // The last worker out wakes this coroutine; the loop re-checks in case a wake-up is lost.
    asio::steady_timer done(io_, clock_type::time_point::max());
    const auto worker_finished = [this, &done](const std::exception_ptr&) {
      if (--connecting_ == 0) done.cancel();
    };
    for (std::size_t i = 0; i < connect_parallelism; ++i) {
      ++connecting_;
      asio::co_spawn(io_, connect_some(), worker_finished);
    }
    while (connecting_ > 0) co_await done.async_wait(asio::as_tuple(asio::use_awaitable));
    if (connect_failures_ > 0) {
      throw std::runtime_error(std::to_string(connect_failures_) + " connections failed");
    }

    tcp::socket probe(io_);
    co_await probe.async_connect(endpoint_, asio::use_awaitable);
    probe.set_option(tcp::no_delay(true));

    reloaded_at_ = clock_type::now();
    if (arguments_.hup_pid != 0 && ::kill(arguments_.hup_pid, SIGHUP) != 0) {
      throw std::runtime_error("cannot signal the broker");
    }
    co_await wait_until_listed(probe);
    listed_at_ = clock_type::now();

    // Every request is on the wire before the first answer is read: the broker sees them
    // together, as it would when a fleet of services wakes up at once. A request is a few
    // dozen bytes into an empty socket buffer, so these writes never block.
    const auto request = get_request("/v1/apps/" + arguments_.app + "/token", arguments_.host);
    first_write_at_ = clock_type::now();
    for (auto& socket : sockets_) asio::write(socket, asio::buffer(request));
    for (std::size_t i = 0; i < sockets_.size(); ++i) {
      asio::co_spawn(io_, read_answer(i), asio::detached);
    }
  }

  // Prints the results; true when every answer was a 200.
  bool report(std::ostream& out) const {
    std::size_t ok = 0, not_ok = 0, missing = 0;
    std::set<std::string> tokens;
    clock_type::time_point last = first_write_at_;
    for (const auto& each : answers_) {
      if (!each.arrived) {
        ++missing;
        continue;
      }
      each.status == 200 ? ++ok : ++not_ok;
      if (!each.access_token.empty()) tokens.insert(each.access_token);
      last = std::max(last, each.at);
    }
    out << "connections=" << answers_.size() << "\n"
        << "answers_200=" << ok << "\n"
        << "answers_non_200=" << not_ok << "\n"
        << "answers_missing=" << missing << "\n"
        << "distinct_tokens=" << tokens.size() << "\n"
        << "reload_to_listed_ms=" << milliseconds_between(reloaded_at_, listed_at_) << "\n"
        << "reload_to_last_answer_ms=" << milliseconds_between(reloaded_at_, last) << "\n"
        << "first_write_to_last_answer_ms=" << milliseconds_between(first_write_at_, last) << "\n";
    return ok == answers_.size();
  }

  // The deadline: whatever has not answered by now counts as missing.
  void abandon() {
    for (auto& socket : sockets_) {
      boost::system::error_code ignored;
      socket.close(ignored);
    }
  }

 private:
  asio::awaitable<void> connect_some() {
    while (next_to_connect_ < sockets_.size()) {
      auto& socket = sockets_[next_to_connect_++];
      auto [error] = co_await socket.async_connect(endpoint_, asio::as_tuple(asio::use_awaitable));
      if (error) {
        ++connect_failures_;
        continue;
      }
      socket.set_option(tcp::no_delay(true));
    }
  }

  asio::awaitable<void> wait_until_listed(tcp::socket& probe) {
    const auto request = get_request("/v1/apps", arguments_.host);
    beast::flat_buffer buffer;
    asio::steady_timer pause(io_);
    for (;;) {
      co_await asio::async_write(probe, asio::buffer(request), asio::use_awaitable);
      http::response<http::string_body> listing;
      co_await http::async_read(probe, buffer, listing, asio::use_awaitable);
      if (listing.result() == http::status::ok) {
        // [{"app":"hr","corpid":"…","state":"fresh","expires_at":…}, …]
        const auto apps = nlohmann::json::parse(listing.body(), nullptr, false);
        if (apps.is_array()) {
          for (const auto& app : apps) {
            if (app.is_object() && app.value("app", "") == arguments_.app) co_return;
          }
        }
      }
      pause.expires_after(1ms);
      co_await pause.async_wait(asio::use_awaitable);
    }
  }

  asio::awaitable<void> read_answer(std::size_t index) {
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    auto [error, read] = co_await http::async_read(sockets_[index], buffer, response,
                                                   asio::as_tuple(asio::use_awaitable));
    if (error) co_return;
    auto& result = answers_[index];
    result.arrived = true;
    result.at = clock_type::now();
    result.status = response.result_int();
    const auto body = nlohmann::json::parse(response.body(), nullptr, false);
    if (body.is_object()) result.access_token = body.value("access_token", "");
    if (++answered_ == answers_.size()) io_.stop();
  }

  asio::io_context& io_;
  arguments arguments_;
  tcp::endpoint endpoint_;
  std::vector<tcp::socket> sockets_;
  std::vector<answer> answers_;
  std::size_t next_to_connect_ = 0;
  std::size_t connecting_ = 0;
  std::size_t connect_failures_ = 0;
  std::size_t answered_ = 0;
  clock_type::time_point reloaded_at_, listed_at_, first_write_at_;
};

}  // namespace

int main(int argc, char** argv) {
  arguments parsed;
  try {
    parsed = parse_arguments(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "bench-fan-in: " << error.what() << "\n" << usage;
    return 2;
  }
  raise_fd_limit();

  asio::io_context io{1};
  fan_in bench(io, parsed);
  bool failed_to_run = false;
  asio::co_spawn(io, bench.run(), [&](const std::exception_ptr& failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& error) {
      std::cerr << "bench-fan-in: " << error.what() << "\n";
    }
    failed_to_run = true;
    io.stop();
  });
  asio::steady_timer deadline(io, parsed.timeout);
  deadline.async_wait([&](const boost::system::error_code& error) {
    if (error) return;
    std::cerr << "bench-fan-in: deadline reached; unanswered requests count as missing\n";
    bench.abandon();
    io.stop();
  });
  io.run();

  if (failed_to_run) return 1;
  return bench.report(std::cout) ? 0 : 1;
}
