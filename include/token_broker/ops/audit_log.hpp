// The audit trail (config audit_log): one JSON line per credential handed out or refused and per
// gateway call, saying who asked, from where, for what and what was answered. The HTTP workers
// only queue a record; one writer thread formats and writes, so a slow disk never holds up an
// answer. A credential is never in a record, only its fingerprint (fingerprint_of), made once
// when the credential is published.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace token_broker {

struct audit_record {
  std::chrono::system_clock::time_point at;
  // The authenticated client's name; "" when none (open API, refused before identification).
  std::string client;
  std::string peer;        // "127.0.0.1:53412", "[::1]:53412", or "uid 1001" on a unix socket
  std::string listener;    // the listener's address as configured: "0.0.0.0:8443", "unix:/…"
  std::string_view route;  // the route's label (static storage): "token", "gateway"…
  std::string app, suite, corp, provider;  // whichever the request names; empty: left out
  std::string_view kind;    // "access_token", "jsapi_ticket"… (static storage); empty: left out
  unsigned status = 0;      // the HTTP status answered
  int errcode = 0;          // a drop-in's refusal in WeCom's shape (HTTP 200); 0: left out
  std::string fingerprint;  // of the credential handed out (fingerprint_of), "" when none
};

// One record as its JSON line, without the newline:
// {"time":"2026-12-01T15:23:40.123Z","client":"billing","peer":"…","listener":"…",
//  "route":"token","app":"hr","kind":"access_token","status":200,"fingerprint":"0123456789ab"}
// time is UTC with milliseconds; client is null when empty; fingerprint is there only when a
// credential was handed out. Bytes that are not UTF-8 come out as U+FFFD.
std::string audit_line(const audit_record& entry);
// The same appended to `line`, as the writer formats a batch into one buffer.
void append_audit_line(std::string& line, const audit_record& entry);

class audit_log {
 public:
  static constexpr std::size_t default_max_queued = 65536;

  // `destination`: "stderr" or a file path, opened for appending (created with mode 0640).
  // Throws std::runtime_error("audit_log: cannot open <path>: <reason>") when it cannot be.
  explicit audit_log(std::string destination, std::size_t max_queued = default_max_queued);
  // Writes everything still queued, then ends the writer thread.
  ~audit_log();
  audit_log(const audit_log&) = delete;
  audit_log& operator=(const audit_log&) = delete;

  // Called on the HTTP workers: a push under a mutex; no I/O, no formatting, no hashing, and
  // no wakeup of the writer but for the first record after it went idle, or a full batch.
  // With `max_queued` records waiting, the record is dropped and counted instead: the trail
  // falls behind, the answers do not.
  void record(audit_record entry);

  // SIGHUP (logrotate's postrotate): the writer opens the path again before its next write. A
  // failure is logged and the old descriptor kept, so that lines still go somewhere.
  void reopen();

  // Records dropped because the writer fell behind.
  std::uint64_t dropped() const;
  // Records lost because writing them failed (a full disk…); each failure is logged.
  std::uint64_t unwritten() const;

  // Returns once everything recorded before the call has been written (or has failed to be).
  void flush();

 private:
  void run_writer();
  // Formats and writes one batch; returns how many of its records were lost.
  std::uint64_t write_batch(std::vector<audit_record>& batch);
  // Writes `lines` (whole lines) to the current descriptor; 0, or the errno that stopped it.
  int write_all(std::string_view lines);
  void reopen_now();
  void report_failure(std::string_view what, int error_number, std::uint64_t lost);
  // Logs records dropped since the last report (`dropped` in all), at most every 10 s.
  void report_drops(std::uint64_t dropped);

  const std::string destination_;
  const bool to_stderr_;
  const std::size_t max_queued_;
  int descriptor_ = -1;  // touched by the writer thread only, once constructed

  mutable std::mutex mutex_;
  std::condition_variable work_;  // the writer waits on it for records, a reopen or the end
  std::condition_variable done_;  // flush() waits on it for `finished_`
  std::vector<audit_record> queue_;
  std::uint64_t accepted_ = 0;  // records queued since the start
  std::uint64_t finished_ = 0;  // of those, the ones written or lost
  std::uint64_t dropped_ = 0;
  std::uint64_t unwritten_ = 0;
  bool flush_requested_ = false;
  bool writer_idle_ = false;  // asleep with nothing queued: the next record wakes it
  bool reopen_requested_ = false;
  bool stopping_ = false;

  // The writer's own: the buffer a batch is formatted into; whether a failed write left a line
  // unfinished (the next write ends it first, so one bad line does not swallow the next); when
  // a failure was last logged, and what was lost since; when drops were, and how many in all.
  std::string lines_;
  bool partial_line_ = false;
  std::chrono::steady_clock::time_point last_report_{};
  std::uint64_t lost_since_report_ = 0;
  std::chrono::steady_clock::time_point last_drop_report_{};
  std::uint64_t drops_reported_ = 0;

  std::thread writer_;  // last: started once everything above is ready
};

}  // namespace token_broker
