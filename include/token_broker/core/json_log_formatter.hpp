// The daemon's log as one JSON object per line (config log_format "json"), for collectors that
// parse rather than read: the text pattern's fields, time, level and message, under names:
// {"time":"2026-12-01T15:23:40.123+00:00","level":"info","message":"…"}
#pragma once

#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>

#include <memory>

namespace token_broker {

class json_log_formatter final : public spdlog::formatter {
 public:
  json_log_formatter();

  // The message is escaped as JSON wants (quotes, backslashes, control characters); bytes
  // that are not UTF-8 come out as U+FFFD, so that one bad byte never costs a collector the
  // whole line.
  void format(const spdlog::details::log_msg& message, spdlog::memory_buf_t& out) override;
  std::unique_ptr<spdlog::formatter> clone() const override;

 private:
  // The text log's own time stamp, so that both formats write the same time the same way.
  spdlog::pattern_formatter time_;
};

}  // namespace token_broker
