#include "broker_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "http_test_client.hpp"
#include "token_broker/core/asio.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// fork + exec with stdout and stderr going to `log_path`, stdin from `input_path` (or
// /dev/null), `environment` added to this process's (overriding it) and, when given, at most
// `open_files` descriptors (like `ulimit -n`).
pid_t spawn(const std::vector<std::string>& arguments, const std::filesystem::path& log_path,
            const std::filesystem::path& input_path = "/dev/null",
            std::optional<unsigned> open_files = std::nullopt,
            const std::vector<std::string>& environment = {}) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(TOKEN_BROKER_BINARY));
  for (const auto& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  // Built before the fork: the child only calls async-signal-safe functions. The added
  // entries come first, so they win over the same names inherited (getenv takes the first).
  std::vector<char*> envp;
  for (const auto& entry : environment) envp.push_back(const_cast<char*>(entry.c_str()));
  for (char** entry = environ; *entry; ++entry) envp.push_back(*entry);
  envp.push_back(nullptr);

  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const int input = open(input_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (log < 0 || input < 0) _exit(127);
    if (open_files) {
      const rlimit limit{.rlim_cur = *open_files, .rlim_max = *open_files};
      if (setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(127);
    }
    dup2(input, STDIN_FILENO);
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    execve(TOKEN_BROKER_BINARY, argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// A broker restarted on the same port gets a log of its own, so the first one's output is
// still there to be checked at the end of the test.
std::filesystem::path unused_log_path(const std::filesystem::path& directory, std::uint16_t port) {
  for (int restart = 0;; ++restart) {
    std::string name = "broker-" + std::to_string(port);
    if (restart > 0) name.append("-").append(std::to_string(restart));
    auto path = directory / name.append(".log");
    if (!std::filesystem::exists(path)) return path;
  }
}

}  // namespace

std::uint16_t free_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

scratch_directory::scratch_directory() {
  std::random_device random;
  path_ = std::filesystem::temp_directory_path() /
          ("token-broker-test-" + std::to_string(getpid()) + "-" + std::to_string(random()));
  std::filesystem::create_directories(path_);
}

scratch_directory::~scratch_directory() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::filesystem::path scratch_directory::write(const std::string& name,
                                               const std::string& content) const {
  const auto file = path_ / name;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << content;
  return file;
}

command_result run_broker_command(const std::vector<std::string>& arguments,
                                  const std::string& input) {
  const scratch_directory scratch;
  const auto log_path = scratch.path() / "output";
  const pid_t pid = spawn(arguments, log_path, scratch.write("input", input));
  int status = 0;
  waitpid(pid, &status, 0);
  return command_result{decode_status(status), read_file(log_path)};
}

command_result run_shell(const std::string& command) {
  const std::string merged = "exec 2>&1; " + command;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(merged.c_str(), "r"), &pclose);
  if (!pipe) throw std::runtime_error("popen failed");
  command_result result;
  std::array<char, 4096> chunk{};
  while (const auto read = std::fread(chunk.data(), 1, chunk.size(), pipe.get())) {
    result.output.append(chunk.data(), read);
  }
  result.exit_code = decode_status(pclose(pipe.release()));
  return result;
}

broker_process::broker_process(const std::filesystem::path& config_path, std::uint16_t port,
                               std::optional<unsigned> open_files,
                               const std::vector<std::string>& environment)
    : port_(port), log_path_(unused_log_path(config_path.parent_path(), port)) {
  pid_ = spawn({"--config", config_path.string()}, log_path_, "/dev/null", open_files, environment);
  const auto give_up_at = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < give_up_at) {
    if (!running()) throw std::runtime_error("token-broker exited at start:\n" + log());
    if (http_call(port_, http_exchange{.target = "/healthz"}, 1s).status == 200) return;
    std::this_thread::sleep_for(50ms);
  }
  throw std::runtime_error("token-broker did not answer /healthz within 10 s:\n" + log());
}

broker_process::~broker_process() {
  if (pid_ > 0) stop(SIGKILL, 5s);
}

bool broker_process::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int broker_process::stop(int signal, std::chrono::milliseconds limit) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  const auto give_up_at = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < give_up_at) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return decode_status(status);
    }
    std::this_thread::sleep_for(10ms);
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

void broker_process::send(int signal) const {
  if (pid_ > 0) kill(pid_, signal);
}

std::string broker_process::log() const {
  return read_file(log_path_);
}

}  // namespace token_broker::testing
