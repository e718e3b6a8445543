// The daemon's log with log_format "json": every line one JSON object with the text log's
// fields, whatever bytes a message holds; and "text" as it always was.
#include <gtest/gtest.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

#include "token_broker/core/json_log_formatter.hpp"
#include "token_broker/core/logging.hpp"

namespace token_broker {
namespace {

using namespace std::string_literals;

// The shape of %Y-%m-%dT%H:%M:%S.%e%z: 2026-12-01T15:23:40.123+00:00.
bool is_text_time(std::string_view time) {
  constexpr std::string_view shape = "0000-00-00T00:00:00.000+00:00";
  if (time.size() != shape.size()) return false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const bool fits = shape[i] == '0'   ? time[i] >= '0' && time[i] <= '9'
                      : shape[i] == '+' ? time[i] == '+' || time[i] == '-'
                                        : time[i] == shape[i];
    if (!fits) return false;
  }
  return true;
}

std::string formatted(const spdlog::details::log_msg& message) {
  json_log_formatter formatter;
  spdlog::memory_buf_t out;
  formatter.format(message, out);
  return fmt::to_string(out);
}

std::string formatted(spdlog::level::level_enum level, std::string_view text) {
  return formatted(spdlog::details::log_msg("token-broker", level, text));
}

TEST(json_log_format, writes_one_object_per_line_with_time_level_and_message) {
  for (const auto level : {spdlog::level::trace, spdlog::level::debug, spdlog::level::info,
                           spdlog::level::warn, spdlog::level::err, spdlog::level::critical}) {
    const auto line = formatted(level, "listening on 127.0.0.1:8080");
    ASSERT_EQ(line.find('\n'), line.size() - 1) << line;
    const auto parsed = nlohmann::ordered_json::parse(line);
    ASSERT_EQ(parsed.size(), 3u) << line;
    EXPECT_EQ(parsed.begin().key(), "time");
    EXPECT_TRUE(is_text_time(parsed["time"].get<std::string>())) << line;
    // The names the text log writes with %l.
    EXPECT_EQ(parsed["level"], std::string(spdlog::level::to_string_view(level).data(),
                                           spdlog::level::to_string_view(level).size()));
    EXPECT_EQ(parsed["message"], "listening on 127.0.0.1:8080");
  }
  EXPECT_EQ(nlohmann::json::parse(formatted(spdlog::level::warn, ""))["level"], "warning");
}

TEST(json_log_format, writes_the_time_as_the_text_log_does) {
  const spdlog::details::log_msg message("token-broker", spdlog::level::info, "started");
  spdlog::pattern_formatter text("%Y-%m-%dT%H:%M:%S.%e%z", spdlog::pattern_time_type::local, "");
  spdlog::memory_buf_t time;
  text.format(message, time);
  EXPECT_EQ(nlohmann::json::parse(formatted(message))["time"], fmt::to_string(time));
}

TEST(json_log_format, keeps_any_message_valid_json_on_one_line) {
  // Built by append: g++ 12 warns falsely about operator+ on these temporaries.
  std::string message = "a \"quoted\" C:\\path\nsecond line\r\t\x01\x1f\x7f";
  message += '\0';
  message += " end";
  const auto line = formatted(spdlog::level::err, message);
  ASSERT_EQ(line.find('\n'), line.size() - 1) << line;
  for (const char c : line.substr(0, line.size() - 1)) {
    EXPECT_GE(static_cast<unsigned char>(c), 0x20) << "a raw control character in " << line;
  }
  EXPECT_EQ(nlohmann::json::parse(line)["message"], message);
}

TEST(json_log_format, replaces_bytes_that_are_not_utf8) {
  // Valid UTF-8 is kept; a stray byte, a cut sequence and an overlong form are not.
  const auto line = formatted(spdlog::level::warn,
                              "caf\xc3\xa9 \xff|\xe6\x97|\xc0\xaf| \xe4\xbd\xa0\xe5\xa5\xbd");
  const auto parsed = nlohmann::json::parse(line);  // throws on invalid UTF-8
  const auto text = parsed["message"].get<std::string>();
  EXPECT_EQ(text.rfind("caf\xc3\xa9 \xef\xbf\xbd|", 0), 0u) << text;
  EXPECT_NE(text.find(" \xe4\xbd\xa0\xe5\xa5\xbd"), std::string::npos) << text;
  EXPECT_EQ(text.find('\xff'), std::string::npos);
  EXPECT_EQ(text.find('\xc0'), std::string::npos);
}

// init_logging end to end: what reaches stderr in each format.
class logging_to_stderr : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("json-log-format-test-" + std::to_string(::getpid()));
    previous_logger_ = spdlog::default_logger();
    std::fflush(stderr);
    saved_stderr_ = ::dup(STDERR_FILENO);
    ASSERT_GE(saved_stderr_, 0);
    std::FILE* file = std::fopen(path_.c_str(), "w");
    ASSERT_NE(file, nullptr);
    ::dup2(::fileno(file), STDERR_FILENO);
    std::fclose(file);
  }
  void TearDown() override {
    std::fflush(stderr);
    ::dup2(saved_stderr_, STDERR_FILENO);
    ::close(saved_stderr_);
    spdlog::drop("token-broker");
    spdlog::set_default_logger(previous_logger_);
    std::filesystem::remove(path_);
  }

  std::string logged() {
    spdlog::default_logger()->flush();
    std::ifstream file(path_, std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }

  std::filesystem::path path_;
  int saved_stderr_ = -1;
  std::shared_ptr<spdlog::logger> previous_logger_;
};

TEST_F(logging_to_stderr, json_writes_json_lines_at_the_level_asked_for) {
  init_logging("info", "json");
  spdlog::debug("not at info");
  spdlog::info("config \"{}\" loaded", "/etc/token-broker.json");
  spdlog::error("second");
  const auto text = logged();
  const auto first_end = text.find('\n');
  ASSERT_NE(first_end, std::string::npos) << text;
  const auto first = nlohmann::json::parse(text.substr(0, first_end));
  EXPECT_EQ(first["level"], "info");
  EXPECT_EQ(first["message"], "config \"/etc/token-broker.json\" loaded");
  EXPECT_EQ(nlohmann::json::parse(text.substr(first_end + 1))["level"], "error");
}

TEST_F(logging_to_stderr, text_is_the_pattern_it_always_was) {
  init_logging("info");
  spdlog::info("listening");
  const auto text = logged();
  const auto space = text.find(' ');
  ASSERT_NE(space, std::string::npos) << text;
  EXPECT_TRUE(is_text_time(std::string_view(text).substr(0, space))) << text;
  EXPECT_EQ(text.substr(space), " info listening\n");
}

TEST(init_logging, refuses_an_unknown_format) {
  EXPECT_THROW(init_logging("info", "xml"), std::invalid_argument);
}

}  // namespace
}  // namespace token_broker
