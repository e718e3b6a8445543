#include "token_broker/core/supervisor.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "token_broker/core/logging.hpp"

namespace token_broker {
namespace {

using std::chrono::milliseconds;

asio::awaitable<void> pause_on_timer(milliseconds pause) {
  asio::steady_timer timer(co_await asio::this_coro::executor, pause);
  co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
}

// The exception's message with every secret masked: a message may quote what failed to
// parse or connect, and the log is no place for a secret.
std::string describe(const std::exception_ptr& failure, const std::vector<std::string>& secrets) {
  std::string text;
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& error) {
    text = error.what();
  } catch (...) {
    text = "an exception of unknown type";
  }
  for (const auto& secret : secrets) text = masked(std::move(text), secret);
  return text;
}

}  // namespace

// Read by the HTTP workers (health, metrics), written by the tasks' loops: one mutex, taken
// only when a task fails or restarts and when those pages are asked for.
struct supervisor::state {
  timing backoff;
  now_function now;
  pause_function pause;

  mutable std::mutex mutex;
  std::vector<std::string> down;                               // a name per task down now
  std::map<std::string, std::uint64_t, std::less<>> restarts;  // by kind

  void count_kind(const std::string& kind) {
    const std::lock_guard lock(mutex);
    restarts.try_emplace(kind, 0);
  }
  void went_down(const std::string& name) {
    const std::lock_guard lock(mutex);
    down.push_back(name);
  }
  void came_back(const std::string& kind, const std::string& name) {
    const std::lock_guard lock(mutex);
    down.erase(std::find(down.begin(), down.end(), name));
    ++restarts[kind];
  }
};

namespace {

asio::awaitable<void> supervise(std::shared_ptr<supervisor::state> shared, std::string kind,
                                std::string name, supervisor::task body,
                                std::vector<std::string> secrets) {
  auto backoff = shared->backoff.first_backoff;
  for (;;) {
    const auto started_at = shared->now();
    std::exception_ptr failure;
    try {
      auto run = body();  // named: g++ 12 mishandles temporaries in a co_await's operand
      co_await std::move(run);
      co_return;  // a task that ends normally was stopped: nothing to restart
    } catch (...) {
      failure = std::current_exception();
    }
    if (shared->now() - started_at >= shared->backoff.healthy_after) {
      backoff = shared->backoff.first_backoff;
    }
    spdlog::critical("{} ended unexpectedly: {}; restarting it in {} ms", name,
                     describe(failure, secrets), backoff.count());
    shared->went_down(name);
    auto pause = shared->pause(backoff);
    co_await std::move(pause);
    shared->came_back(kind, name);
    spdlog::info("{} restarted", name);
    backoff = std::min(backoff * 2, shared->backoff.max_backoff);
  }
}

}  // namespace

supervisor::supervisor() : supervisor(timing{}, &clock::now, &pause_on_timer) {}

supervisor::supervisor(timing backoff, now_function now, pause_function pause)
    : state_(std::make_shared<state>()) {
  state_->backoff = backoff;
  state_->now = std::move(now);
  state_->pause = std::move(pause);
}

void supervisor::spawn(asio::any_io_executor executor, std::string kind, std::string name,
                       task body, std::vector<std::string> secrets) {
  state_->count_kind(kind);
  asio::co_spawn(
      executor,
      supervise(state_, std::move(kind), std::move(name), std::move(body), std::move(secrets)),
      asio::detached);
}

std::vector<std::string> supervisor::down() const {
  const std::lock_guard lock(state_->mutex);
  return state_->down;
}

std::uint64_t supervisor::restarts(std::string_view kind) const {
  const std::lock_guard lock(state_->mutex);
  const auto found = state_->restarts.find(kind);
  return found == state_->restarts.end() ? 0 : found->second;
}

void supervisor::render_metrics(std::string& out) const {
  const std::lock_guard lock(state_->mutex);
  out +=
      "# HELP token_broker_task_restarts_total Long-lived tasks restarted after an unexpected "
      "end, by kind of task.\n"
      "# TYPE token_broker_task_restarts_total counter\n";
  for (const auto& [kind, count] : state_->restarts) {
    fmt::format_to(std::back_inserter(out), "token_broker_task_restarts_total{{task=\"{}\"}} {}\n",
                   kind, count);
  }
}

}  // namespace token_broker
