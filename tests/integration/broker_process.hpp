// The real token-broker binary as a child process: started on a config, its stderr kept in
// a file for assertions, stopped with a signal like an operator would.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace token_broker::testing {

// A TCP port on 127.0.0.1 that was free a moment ago.
std::uint16_t free_port();

// A directory of its own for one test's files, removed with it.
class scratch_directory {
 public:
  scratch_directory();
  ~scratch_directory();
  scratch_directory(const scratch_directory&) = delete;
  scratch_directory& operator=(const scratch_directory&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path write(const std::string& name, const std::string& content) const;

 private:
  std::filesystem::path path_;
};

struct command_result {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs the broker binary with `arguments` to completion (for --check, --version, --hash-key),
// with `input` on its stdin.
command_result run_broker_command(const std::vector<std::string>& arguments,
                                  const std::string& input = {});

// Runs `command` with sh to completion: its exit code, and stdout and stderr together (for
// the real clients a user would run: curl, openssl).
command_result run_shell(const std::string& command);

class broker_process {
 public:
  // Starts the binary on `config_path` and waits until /healthz answers on `port`; with
  // `open_files`, under that limit of file descriptors; with `environment` ("NAME=value"
  // entries) added to the test's own. Throws std::runtime_error (with the log) if it does not
  // come up within 10 s.
  broker_process(const std::filesystem::path& config_path, std::uint16_t port,
                 std::optional<unsigned> open_files = std::nullopt,
                 const std::vector<std::string>& environment = {});
  ~broker_process();  // SIGKILL if still running
  broker_process(const broker_process&) = delete;
  broker_process& operator=(const broker_process&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Sends `signal` and waits up to `limit` for the exit: the exit code, or -1 if it had to
  // be killed, or 128+N if a signal ended it.
  int stop(int signal, std::chrono::milliseconds limit);
  bool running();
  void send(int signal) const;
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::uint16_t port_;
  std::filesystem::path log_path_;
};

}  // namespace token_broker::testing
