// The long-lived tasks of the process (the credential scheduler and store sync, the Redis
// connections, the accept loop, the systemd watchdog feeder, the signal handler), kept running: a
// task spawned here that ends with an exception is logged, counted and restarted after a backoff,
// and while it is down GET /healthz says so (SPEC §4). Every expected failure is handled inside the
// tasks; an exception reaching the supervisor is a broken invariant, which must not end a task for
// good.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/core/asio.hpp"

namespace token_broker {

class supervisor {
 public:
  using clock = std::chrono::steady_clock;
  using task = std::function<asio::awaitable<void>()>;

  struct timing {
    std::chrono::milliseconds first_backoff{100};
    std::chrono::milliseconds max_backoff{30000};
    // A task that ran this long before failing starts over at first_backoff: it was
    // working, so its failure is news rather than one more turn of a crash loop.
    std::chrono::milliseconds healthy_after{60000};
  };
  // Time as the supervisor sees it: real by default; tests drive both by hand.
  using now_function = std::function<clock::time_point()>;
  using pause_function = std::function<asio::awaitable<void>(std::chrono::milliseconds)>;

  supervisor();
  supervisor(timing backoff, now_function now, pause_function pause);
  supervisor(const supervisor&) = delete;
  supervisor& operator=(const supervisor&) = delete;

  // Runs `body()` on `executor` until it ends normally, running it again after each end by
  // exception. `kind` labels the restart metric and must come from a small fixed set
  // ("scheduler", "redis", …); `name` says which task in the log and in /healthz ("credential
  // scheduler"). Each of `secrets` is masked wherever an exception's message is logged.
  void spawn(asio::any_io_executor executor, std::string kind, std::string name, task body,
             std::vector<std::string> secrets = {});

  // The names of the tasks that ended with an exception and have not been restarted yet.
  std::vector<std::string> down() const;
  // How many times tasks of `kind` were restarted.
  std::uint64_t restarts(std::string_view kind) const;
  // token_broker_task_restarts_total, one series per kind spawned so far, appended to `out`.
  void render_metrics(std::string& out) const;

  // Defined in supervisor.cpp only.
  struct state;

 private:
  // Shared with every supervised coroutine, which may outlive the supervisor until its
  // io_context is destroyed.
  std::shared_ptr<state> state_;
};

}  // namespace token_broker
