// A redis-server the test owns, as a child process, for the tests that take Redis away and
// bring it back (the shared fixture server must stay up for everyone else).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace token_broker::testing {

// A Redis that speaks TLS only, and only to clients whose certificate chains to `ca`.
struct redis_tls_files {
  std::filesystem::path certificate;
  std::filesystem::path key;
  std::filesystem::path ca;
};

class redis_process {
 public:
  // Starts redis-server on 127.0.0.1:`port`, nothing persisted, its output in
  // `directory`/redis-PORT.log; `extra_arguments` (e.g. {"--requirepass", "pw"}) are appended.
  // With `tls`, `port` is its TLS port and it has no other. Waits until it answers (with TLS:
  // until it accepts connections); throws std::runtime_error (with the log) if it does not
  // in 5 s.
  redis_process(std::uint16_t port, std::filesystem::path directory,
                std::vector<std::string> extra_arguments = {},
                std::optional<redis_tls_files> tls = std::nullopt);
  // A sentinel on `port` whose config file (written to `directory`, which Sentinel rewrites)
  // holds `monitor_lines`.
  static std::unique_ptr<redis_process> sentinel(std::uint16_t port,
                                                 const std::filesystem::path& directory,
                                                 const std::vector<std::string>& monitor_lines);
  ~redis_process();  // stops it if running
  redis_process(const redis_process&) = delete;
  redis_process& operator=(const redis_process&) = delete;

  std::uint16_t port() const { return port_; }
  // Starts it again, on the same port, empty: a Redis that restarted without persistence.
  void start();
  // SIGTERM and wait for the exit (SIGKILL after 5 s).
  void stop();
  // SIGKILL, as a crashed host: nothing is handed over.
  void kill();
  bool running() const { return pid_ > 0; }
  std::string log() const;

 private:
  redis_process(std::uint16_t port, std::filesystem::path directory,
                std::vector<std::string> extra_arguments, std::optional<redis_tls_files> tls,
                std::filesystem::path config_file);

  std::uint16_t port_;
  std::filesystem::path directory_;
  std::vector<std::string> extra_arguments_;
  std::optional<redis_tls_files> tls_;
  std::filesystem::path config_file_;  // first argument when set (a sentinel's)
  pid_t pid_ = -1;
};

}  // namespace token_broker::testing
