#include "token_broker/ops/audit_log.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <exception>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "token_broker/core/secret_digest.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;

// Write failures (a full disk) repeat for every batch; one report per interval says enough.
constexpr auto report_interval = 10s;
// A file takes a batch in few writes. Lines to stderr share it with the daemon's own log: a
// write of at most PIPE_BUF bytes to a pipe is never interleaved with another writer's.
constexpr std::size_t file_chunk = 1 << 20;
constexpr std::size_t stderr_chunk = PIPE_BUF;

std::string error_text(int error_number) {
  return std::system_category().message(error_number);
}

int open_for_append(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

std::string utc_time(std::chrono::system_clock::time_point at) {
  using namespace std::chrono;
  const auto in_milliseconds = floor<milliseconds>(at);
  const auto day = floor<days>(in_milliseconds);
  const year_month_day date{day};
  const hh_mm_ss time{in_milliseconds - day};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                     time.hours().count(), time.minutes().count(), time.seconds().count(),
                     time.subseconds().count());
}

// The first 6 bytes of the SHA-256, in hex.
std::string fingerprint(std::string_view credential) {
  const auto digest = sha256(credential);
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(12);
  for (std::size_t i = 0; i < 6; ++i) {
    hex += digits[digest[i] >> 4];
    hex += digits[digest[i] & 0xf];
  }
  return hex;
}

}  // namespace

std::string audit_line(const audit_record& entry) {
  using json = nlohmann::ordered_json;  // the fields in the order a reader expects them
  json line;
  line["time"] = utc_time(entry.at);
  line["client"] = entry.client.empty() ? json(nullptr) : json(entry.client);
  line["peer"] = entry.peer;
  line["listener"] = entry.listener;
  line["route"] = entry.route;
  const auto named = [&line](const char* key, std::string_view value) {
    if (!value.empty()) line[key] = value;
  };
  named("app", entry.app);
  named("suite", entry.suite);
  named("corp", entry.corp);
  named("provider", entry.provider);
  named("kind", entry.kind);
  line["status"] = entry.status;
  if (!entry.credential.empty()) line["fingerprint"] = fingerprint(entry.credential);
  // Names and addresses come from clients and may hold any bytes; a line must stay JSON.
  return line.dump(-1, ' ', false, json::error_handler_t::replace);
}

audit_log::audit_log(std::string destination, std::size_t max_queued)
    : destination_(std::move(destination)),
      to_stderr_(destination_ == "stderr"),
      max_queued_(max_queued) {
  if (to_stderr_) {
    descriptor_ = STDERR_FILENO;
  } else {
    descriptor_ = open_for_append(destination_);
    if (descriptor_ < 0) {
      throw std::runtime_error("audit_log: cannot open " + destination_ + ": " + error_text(errno));
    }
  }
  try {
    writer_ = std::thread([this] { run_writer(); });
  } catch (...) {
    if (!to_stderr_) ::close(descriptor_);
    throw;
  }
  // Named for top and gdb; a name too long or a failure changes nothing else.
  pthread_setname_np(writer_.native_handle(), "audit-log");
}

audit_log::~audit_log() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_one();
  writer_.join();
  if (!to_stderr_) ::close(descriptor_);
}

void audit_log::record(audit_record entry) {
  bool first;
  {
    const std::lock_guard lock(mutex_);
    if (queue_.size() >= max_queued_) {
      ++dropped_;
      return;
    }
    queue_.push_back(std::move(entry));
    ++accepted_;
    // The writer waits only on an empty queue: only the record that ends one must wake it.
    first = queue_.size() == 1;
  }
  if (first) work_.notify_one();
}

void audit_log::reopen() {
  {
    const std::lock_guard lock(mutex_);
    reopen_requested_ = true;
  }
  // At once rather than at the next record: logrotate's old file is let go of without waiting
  // for traffic.
  work_.notify_one();
}

std::uint64_t audit_log::dropped() const {
  const std::lock_guard lock(mutex_);
  return dropped_;
}

std::uint64_t audit_log::unwritten() const {
  const std::lock_guard lock(mutex_);
  return unwritten_;
}

void audit_log::flush() {
  std::unique_lock lock(mutex_);
  const auto target = accepted_;
  done_.wait(lock, [&] { return finished_ >= target; });
}

void audit_log::run_writer() {
  std::vector<audit_record> batch;
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [this] { return !queue_.empty() || reopen_requested_ || stopping_; });
    if (queue_.empty() && !reopen_requested_) return;  // stopping, and everything written
    // The emptied batch goes back as the queue: its capacity is kept, and recording does not
    // reallocate once the queue has been as long as it gets.
    batch.swap(queue_);
    const bool reopen = std::exchange(reopen_requested_, false);
    const auto dropped = dropped_;
    lock.unlock();

    report_drops(dropped);
    if (reopen) reopen_now();
    const auto count = batch.size();
    const auto lost = write_batch(batch);
    batch.clear();  // the credentials go with the records, before the lock is taken again

    lock.lock();
    finished_ += count;
    unwritten_ += lost;
    done_.notify_all();
  }
}

std::uint64_t audit_log::write_batch(std::vector<audit_record>& batch) {
  const auto chunk = to_stderr_ ? stderr_chunk : file_chunk;
  std::uint64_t lost = 0;
  std::uint64_t in_buffer = 0;
  const auto write_buffer = [&] {
    if (const int error = write_all(lines_)) {
      lost += in_buffer;
      report_failure("cannot write to", error, in_buffer);
    }
    lines_.clear();
    in_buffer = 0;
  };
  for (const auto& entry : batch) {
    std::string line;
    try {
      line = audit_line(entry);
    } catch (const std::exception&) {
      // Out of memory, in practice; the record is not quoted, it may hold a credential.
      ++lost;
      report_failure("cannot format a record for", ENOMEM, 1);
      continue;
    }
    if (!lines_.empty() && lines_.size() + line.size() + 1 > chunk) write_buffer();
    lines_ += line;
    lines_ += '\n';
    ++in_buffer;
  }
  if (!lines_.empty()) write_buffer();
  // A burst's buffer is not kept for the rest of the process's life.
  if (lines_.capacity() > 2 * chunk) std::string().swap(lines_);
  return lost;
}

int audit_log::write_all(std::string_view lines) {
  const auto write_fully = [this](std::string_view data, std::size_t& written) {
    while (written < data.size()) {
      const auto result = ::write(descriptor_, data.data() + written, data.size() - written);
      if (result > 0) {
        written += static_cast<std::size_t>(result);
      } else if (result < 0 && errno == EINTR) {
        continue;
      } else {
        return result < 0 ? errno : EIO;  // a write of nothing would loop forever
      }
    }
    return 0;
  };
  if (partial_line_) {
    std::size_t written = 0;
    if (const int error = write_fully("\n", written)) return error;
    partial_line_ = false;
  }
  std::size_t written = 0;
  const int error = write_fully(lines, written);
  if (error && written > 0 && lines[written - 1] != '\n') partial_line_ = true;
  return error;
}

void audit_log::reopen_now() {
  if (to_stderr_) return;
  const int fresh = open_for_append(destination_);
  if (fresh < 0) {
    spdlog::error("audit_log: cannot reopen {}: {}; still writing to the file opened before",
                  destination_, error_text(errno));
    return;
  }
  ::close(descriptor_);
  descriptor_ = fresh;
}

void audit_log::report_failure(std::string_view what, int error_number, std::uint64_t lost) {
  lost_since_report_ += lost;
  const auto now = std::chrono::steady_clock::now();
  if (last_report_ != std::chrono::steady_clock::time_point{} &&
      now - last_report_ < report_interval) {
    return;
  }
  last_report_ = now;
  spdlog::error("audit_log: {} {}: {}; {} audit records lost since the last report", what,
                destination_, error_text(error_number), lost_since_report_);
  lost_since_report_ = 0;
}

void audit_log::report_drops(std::uint64_t dropped) {
  const auto now = std::chrono::steady_clock::now();
  if (dropped == drops_reported_ || (last_drop_report_ != std::chrono::steady_clock::time_point{} &&
                                     now - last_drop_report_ < report_interval)) {
    return;
  }
  last_drop_report_ = now;
  spdlog::warn("audit_log: {} audit records dropped: the writer to {} fell behind",
               dropped - drops_reported_, destination_);
  drops_reported_ = dropped;
}

}  // namespace token_broker
