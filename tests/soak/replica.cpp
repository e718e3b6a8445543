#include "replica.hpp"

#include <signal.h>

#include <fstream>

namespace token_broker::soak {

using namespace std::chrono_literals;

replica::replica(std::string name, std::filesystem::path config, std::uint16_t port)
    : name_(std::move(name)), config_(std::move(config)), port_(port) {}

void replica::start() {
  // broker_process returns once /healthz answers (or throws with the log).
  auto started = std::make_unique<testing::broker_process>(config_, port_);
  const std::scoped_lock lock(mutex_);
  process_ = std::move(started);
  down_ = false;
}

void replica::kill() {
  const std::scoped_lock lock(mutex_);
  down_ = true;
  ++incarnation_;
  if (!process_) return;
  process_->stop(SIGKILL, 5s);
  dead_logs_.push_back(process_->log());
  process_.reset();
}

bool replica::running() {
  const std::scoped_lock lock(mutex_);
  return process_ && process_->running();
}

int replica::stop() {
  const std::scoped_lock lock(mutex_);
  if (!process_) return -1;
  return process_->stop(SIGTERM, 10s);
}

pid_t replica::pid() const {
  const std::scoped_lock lock(mutex_);
  return process_ ? process_->pid() : -1;
}

std::vector<std::string> replica::logs() const {
  const std::scoped_lock lock(mutex_);
  auto all = dead_logs_;
  if (process_) all.push_back(process_->log());
  return all;
}

long resident_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

}  // namespace token_broker::soak
