#include "token_broker/ops/audit_log.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <exception>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace token_broker {
namespace {

using namespace std::chrono_literals;

// Write failures (a full disk) repeat for every batch; one report per interval says enough.
constexpr auto report_interval = 10s;
// A file takes a batch in few writes. Lines to stderr share it with the daemon's own log: a
// write of at most PIPE_BUF bytes to a pipe is never interleaved with another writer's.
constexpr std::size_t file_chunk = 1 << 20;
constexpr std::size_t stderr_chunk = PIPE_BUF;
// An idle writer wakes for a record, then gathers for write_interval, or until this many
// records wait. Woken for each record (the queue is empty again by the next one, so each
// would wake it), it cost a context switch per request: half the token route's throughput.
constexpr std::size_t wake_at = 1024;
constexpr auto write_interval = 50ms;

std::string error_text(int error_number) {
  return std::system_category().message(error_number);
}

int open_for_append(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

// "2026-12-01T15:23:40.123Z". The text up to the second is made once a second: the writer
// formats tens of thousands of lines a second, nearly all within the second before.
void append_utc_time(std::string& line, std::chrono::system_clock::time_point at) {
  using namespace std::chrono;
  const auto in_milliseconds = floor<milliseconds>(at);
  const auto second = floor<seconds>(in_milliseconds);
  thread_local seconds cached_second{-1};
  thread_local std::string cached_text;
  if (second.time_since_epoch() != cached_second) {
    const auto day = floor<days>(second);
    const year_month_day date{day};
    const hh_mm_ss time{second - day};
    cached_text =
        fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.", static_cast<int>(date.year()),
                    static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                    time.hours().count(), time.minutes().count(), time.seconds().count());
    cached_second = second.time_since_epoch();
  }
  line += cached_text;
  const auto millisecond = static_cast<int>((in_milliseconds - second).count());
  line += static_cast<char>('0' + millisecond / 100);
  line += static_cast<char>('0' + millisecond / 10 % 10);
  line += static_cast<char>('0' + millisecond % 10);
  line += 'Z';
}

// A JSON string. Names and addresses come from clients and may hold any bytes: those that
// need escaping, or are not UTF-8, go the slow way; the usual ones are copied.
void append_string(std::string& line, std::string_view value) {
  const bool plain = std::all_of(value.begin(), value.end(), [](char c) {
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  });
  if (!plain) {
    line += nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return;
  }
  line += '"';
  line += value;
  line += '"';
}

}  // namespace

// Written by hand, in the order a reader expects the fields: the writer formats every line,
// and building a JSON object for each cost it more than the rest of its work.
void append_audit_line(std::string& line, const audit_record& entry) {
  line += "{\"time\":\"";
  append_utc_time(line, entry.at);
  line += "\",\"client\":";
  if (entry.client.empty()) {
    line += "null";
  } else {
    append_string(line, entry.client);
  }
  const auto field = [&line](std::string_view key, std::string_view value) {
    line += ",\"";
    line += key;
    line += "\":";
    append_string(line, value);
  };
  field("peer", entry.peer);
  field("listener", entry.listener);
  field("route", entry.route);
  const auto named = [&field](std::string_view key, std::string_view value) {
    if (!value.empty()) field(key, value);
  };
  named("app", entry.app);
  named("suite", entry.suite);
  named("corp", entry.corp);
  named("provider", entry.provider);
  named("kind", entry.kind);
  line += ",\"status\":";
  fmt::format_to(std::back_inserter(line), "{}", entry.status);
  if (entry.errcode != 0)
    fmt::format_to(std::back_inserter(line), ",\"errcode\":{}", entry.errcode);
  named("fingerprint", entry.fingerprint);
  line += '}';
}

std::string audit_line(const audit_record& entry) {
  std::string line;
  append_audit_line(line, entry);
  return line;
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
  bool wake;
  {
    const std::lock_guard lock(mutex_);
    if (queue_.size() >= max_queued_) {
      ++dropped_;
      return;
    }
    queue_.push_back(std::move(entry));
    ++accepted_;
    wake = writer_idle_ || queue_.size() == wake_at;
  }
  if (wake) work_.notify_one();
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
  flush_requested_ = true;
  work_.notify_one();
  done_.wait(lock, [&] { return finished_ >= target; });
}

void audit_log::run_writer() {
  std::vector<audit_record> batch;
  std::unique_lock lock(mutex_);
  for (;;) {
    const auto asked_now = [this] {
      return queue_.size() >= wake_at || flush_requested_ || reopen_requested_ || stopping_;
    };
    if (queue_.empty() && !asked_now()) {
      // Idle: asleep until a record comes, which wakes it.
      writer_idle_ = true;
      work_.wait(lock, [&] { return !queue_.empty() || asked_now(); });
      writer_idle_ = false;
    }
    // Then the records that follow are gathered for write_interval, unless a batch fills or
    // it is asked to write now.
    work_.wait_for(lock, write_interval, asked_now);
    flush_requested_ = false;
    if (queue_.empty() && !reopen_requested_) {
      if (stopping_) return;  // and everything written
      continue;
    }
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
    const auto before = lines_.size();
    try {
      append_audit_line(lines_, entry);
      lines_ += '\n';
    } catch (const std::exception&) {  // out of memory, in practice
      lines_.resize(before);
      ++lost;
      report_failure("cannot format a record for", ENOMEM, 1);
      continue;
    }
    if (before > 0 && lines_.size() > chunk) {
      // Past a chunk: what came before this line goes out first (rarely: once a chunk).
      auto last_line = lines_.substr(before);
      lines_.resize(before);
      write_buffer();
      lines_ = std::move(last_line);
    }
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
