// One broker replica of the soak: the real binary on a fixed port and config, which the chaos
// may SIGKILL and start again. Clients read `incarnation` and `down` without a lock, so that
// a failure can be told apart: a connection to an instance that was killed, or a real one.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "broker_process.hpp"

namespace token_broker::soak {

class replica {
 public:
  replica(std::string name, std::filesystem::path config, std::uint16_t port);

  const std::string& name() const { return name_; }
  std::uint16_t port() const { return port_; }
  // Bumped when an instance is killed: a connection opened under an older number reached a
  // process that is gone.
  int incarnation() const { return incarnation_.load(); }
  // Between the kill and the moment the next instance answers /healthz.
  bool down() const { return down_.load(); }

  void start();
  // SIGKILL, then keep the dead instance's log for the final checks.
  void kill();
  // Whether the instance running now has not exited (a crash would have).
  bool running();
  // SIGTERM; the exit code (0 expected), or -1 when it had to be killed.
  int stop();
  pid_t pid() const;
  // Every instance's log, the running one's last.
  std::vector<std::string> logs() const;

 private:
  std::string name_;
  std::filesystem::path config_;
  std::uint16_t port_;
  std::atomic<int> incarnation_{0};
  std::atomic<bool> down_{true};
  mutable std::mutex mutex_;  // process_ and dead_logs_
  std::unique_ptr<testing::broker_process> process_;
  std::vector<std::string> dead_logs_;
};

// VmRSS of `pid` in KiB from /proc, or -1.
long resident_kib(pid_t pid);

}  // namespace token_broker::soak
