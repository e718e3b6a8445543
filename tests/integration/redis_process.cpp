#include "redis_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "redis_test_client.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto startup_limit = 5s;
constexpr auto shutdown_limit = 5s;

bool has_exited(pid_t pid) {
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == pid;
}

// Any answer to PING counts, "NOAUTH" included: the server is listening.
bool answers_ping(std::uint16_t port) {
  try {
    redis_client client(port);
    client.command({"PING"});
    return true;
  } catch (const std::runtime_error&) {
    return false;
  }
}

// A TLS-only server cannot be PINGed in the clear: that it accepts connections must do.
bool accepts_connections(std::uint16_t port) {
  const int socket = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (socket < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool connected =
      ::connect(socket, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(socket);
  return connected;
}

}  // namespace

redis_process::redis_process(std::uint16_t port, std::filesystem::path directory,
                             std::vector<std::string> extra_arguments,
                             std::optional<redis_tls_files> tls)
    : redis_process(port, std::move(directory), std::move(extra_arguments), std::move(tls), {}) {}

redis_process::redis_process(std::uint16_t port, std::filesystem::path directory,
                             std::vector<std::string> extra_arguments,
                             std::optional<redis_tls_files> tls, std::filesystem::path config_file)
    : port_(port),
      directory_(std::move(directory)),
      extra_arguments_(std::move(extra_arguments)),
      tls_(std::move(tls)),
      config_file_(std::move(config_file)) {
  start();
}

redis_process::~redis_process() {
  stop();
}

std::unique_ptr<redis_process> redis_process::sentinel(
    std::uint16_t port, const std::filesystem::path& directory,
    const std::vector<std::string>& monitor_lines) {
  const auto config_file = directory / ("sentinel-" + std::to_string(port) + ".conf");
  std::ofstream config(config_file);
  for (const auto& line : monitor_lines) config << line << "\n";
  config.close();
  // The constructor that takes a config file is private: no make_unique.
  return std::unique_ptr<redis_process>(
      new redis_process(port, directory, {"--sentinel"}, std::nullopt, config_file));
}

void redis_process::kill() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void redis_process::start() {
  if (running()) return;
  std::vector<std::string> arguments = {
      "redis-server",     "--bind", "127.0.0.1",    "--port", std::to_string(port_),
      "--save",           "",       "--appendonly", "no",     "--dir",
      directory_.string()};
  if (!config_file_.empty()) arguments.insert(arguments.begin() + 1, config_file_.string());
  if (tls_) {
    arguments[4] = "0";
    arguments.insert(arguments.end(),
                     {"--tls-port", std::to_string(port_), "--tls-cert-file",
                      tls_->certificate.string(), "--tls-key-file", tls_->key.string(),
                      "--tls-ca-cert-file", tls_->ca.string(), "--tls-auth-clients", "yes"});
  }
  arguments.insert(arguments.end(), extra_arguments_.begin(), extra_arguments_.end());
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  const auto log_path = directory_ / ("redis-" + std::to_string(port_) + ".log");

  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // Appended, so the log of a restarted server follows the first one's.
    const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log < 0) _exit(127);
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    execvp("redis-server", argv.data());
    _exit(127);
  }

  const auto give_up_at = std::chrono::steady_clock::now() + startup_limit;
  while (std::chrono::steady_clock::now() < give_up_at) {
    // Checked after PING too: if the port was taken, something else answered, and our server
    // has exited on its failed bind.
    const bool answered = tls_ ? accepts_connections(port_) : answers_ping(port_);
    if (has_exited(pid_)) {
      pid_ = -1;
      break;
    }
    if (answered) return;
    std::this_thread::sleep_for(20ms);
  }
  stop();
  throw std::runtime_error("redis-server did not start on port " + std::to_string(port_) + ":\n" +
                           log());
}

void redis_process::stop() {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  const auto give_up_at = std::chrono::steady_clock::now() + shutdown_limit;
  while (std::chrono::steady_clock::now() < give_up_at) {
    if (has_exited(pid_)) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string redis_process::log() const {
  std::ifstream in(directory_ / ("redis-" + std::to_string(port_) + ".log"));
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace token_broker::testing
