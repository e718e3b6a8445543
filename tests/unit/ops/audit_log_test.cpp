// The audit trail: one JSON line per record, credentials only as fingerprints, nothing lost
// under the bound, logrotate's rename-and-SIGHUP followed, and a writer that falls behind or
// cannot write costs records (counted), never an answer.
#include "token_broker/ops/audit_log.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "token_broker/core/secret_digest.hpp"

namespace token_broker {
namespace {

using namespace std::chrono;
using namespace std::string_literals;

audit_record token_record(std::string app, std::string credential = "") {
  return audit_record{.at = sys_days{2026y / 12 / 1} + 15h + 23min + 40s + 123ms,
                      .client = "billing",
                      .peer = "127.0.0.1:53412",
                      .listener = "0.0.0.0:8443",
                      .route = "token",
                      .app = std::move(app),
                      .kind = "access_token",
                      .status = 200,
                      .fingerprint = credential.empty() ? "" : fingerprint_of(credential)};
}

std::vector<std::string> lines_of(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) lines.push_back(line);
  return lines;
}

std::string contents_of(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

TEST(audit_line, writes_the_fields_in_order_and_the_credential_only_as_its_fingerprint) {
  auto entry = token_record("hr", "abc");
  entry.at += 456us;  // below a millisecond: cut, not rounded
  // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
  EXPECT_EQ(audit_line(entry),
            R"({"time":"2026-12-01T15:23:40.123Z","client":"billing","peer":"127.0.0.1:53412",)"
            R"("listener":"0.0.0.0:8443","route":"token","app":"hr","kind":"access_token",)"
            R"("status":200,"fingerprint":"ba7816bf8f01"})");
}

TEST(audit_line, leaves_out_what_the_request_did_not_name_and_writes_no_client_as_null) {
  const audit_record refused{.at = sys_days{1970y / 1 / 1} + 5ms,
                             .peer = "uid 1001",
                             .listener = "unix:/run/tb.sock",
                             .route = "gateway",
                             .corp = "ww1",
                             .provider = "p1",
                             .status = 401};
  EXPECT_EQ(audit_line(refused),
            R"({"time":"1970-01-01T00:00:00.005Z","client":null,"peer":"uid 1001",)"
            R"("listener":"unix:/run/tb.sock","route":"gateway","corp":"ww1","provider":"p1",)"
            R"("status":401})");

  auto third_party = token_record("");
  third_party.suite = "ss1";
  third_party.kind = "suite_access_token";
  const auto parsed = nlohmann::json::parse(audit_line(third_party));
  EXPECT_FALSE(parsed.contains("app"));
  EXPECT_EQ(parsed["suite"], "ss1");
  EXPECT_FALSE(parsed.contains("fingerprint"));
  EXPECT_FALSE(parsed.contains("errcode"));

  auto wecom_refusal = token_record("");
  wecom_refusal.route = "gettoken";
  wecom_refusal.errcode = 40001;
  EXPECT_EQ(nlohmann::json::parse(audit_line(wecom_refusal))["errcode"], 40001);
}

TEST(audit_line, stays_one_line_of_json_whatever_bytes_the_values_hold) {
  auto entry = token_record("h\"r\\\n\r\t\x01\x1f\x7f");
  entry.client = "caf\xc3\xa9 \xff\xfe and a cut \xe6\x97";
  entry.peer = "[::1]:1"s + '\0' + "x";
  const auto line = audit_line(entry);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const auto parsed = nlohmann::json::parse(line);  // throws on invalid UTF-8 or bad escapes
  EXPECT_EQ(parsed["app"], "h\"r\\\n\r\t\x01\x1f\x7f");
  // Each byte that is not UTF-8 becomes U+FFFD; the valid é is kept.
  EXPECT_EQ(parsed["client"].get<std::string>().rfind("caf\xc3\xa9 \xef\xbf\xbd", 0), 0u);
  EXPECT_EQ(parsed["peer"], "[::1]:1"s + '\0' + "x");
}

class audit_log_test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "audit-log-test-XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    directory_ = pattern;
    path_ = directory_ / "audit.log";
    // The log, for the assertions on it (and kept off the test's output).
    previous_logger_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        "audit-log-test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_)));
  }
  void TearDown() override {
    spdlog::set_default_logger(previous_logger_);
    std::filesystem::remove_all(directory_);
  }

  std::filesystem::path directory_;
  std::filesystem::path path_;
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> previous_logger_;
};

TEST_F(audit_log_test, appends_one_line_per_record_and_never_the_credential) {
  std::ofstream(path_) << "an earlier line\n";
  audit_log audit(path_);
  audit.record(token_record("hr", "the-secret-token"));
  audit.record(token_record("sales"));
  audit.flush();

  const auto lines = lines_of(path_);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "an earlier line");
  EXPECT_EQ(lines[1], audit_line(token_record("hr", "the-secret-token")));
  EXPECT_EQ(nlohmann::json::parse(lines[1])["fingerprint"].get<std::string>().size(), 12u);
  EXPECT_EQ(lines[2], audit_line(token_record("sales")));
  EXPECT_EQ(contents_of(path_).find("the-secret-token"), std::string::npos);
  EXPECT_EQ(audit.dropped(), 0u);
  EXPECT_EQ(audit.unwritten(), 0u);
}

TEST_F(audit_log_test, creates_the_file_readable_by_no_one_else) {
  { audit_log audit(path_); }
  struct stat status {};
  ASSERT_EQ(::stat(path_.c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0007, 0u);  // 0640 less the umask
}

TEST_F(audit_log_test, says_which_file_it_cannot_open) {
  const auto missing = directory_ / "no-such-directory" / "audit.log";
  try {
    audit_log audit(missing);
    FAIL() << "opened " << missing;
  } catch (const std::runtime_error& error) {
    EXPECT_EQ(error.what(),
              "audit_log: cannot open " + missing.string() + ": No such file or directory");
  }
}

TEST_F(audit_log_test, writes_what_is_still_queued_when_destroyed) {
  {
    audit_log audit(path_);
    for (int i = 0; i < 1000; ++i) audit.record(token_record("app" + std::to_string(i)));
  }
  const auto lines = lines_of(path_);
  ASSERT_EQ(lines.size(), 1000u);
  EXPECT_EQ(lines.back(), audit_line(token_record("app999")));
}

TEST_F(audit_log_test, follows_logrotate_renaming_the_file_and_asking_for_a_reopen) {
  audit_log audit(path_);
  audit.record(token_record("before"));
  audit.flush();
  const auto rotated = directory_ / "audit.log.1";
  std::filesystem::rename(path_, rotated);
  // Between logrotate's rename and its SIGHUP, lines go on into the file open: the rotated one.
  audit.record(token_record("between"));
  audit.flush();
  audit.reopen();
  audit.record(token_record("after"));
  audit.flush();

  EXPECT_EQ(lines_of(rotated),
            (std::vector{audit_line(token_record("before")), audit_line(token_record("between"))}));
  EXPECT_EQ(lines_of(path_), std::vector{audit_line(token_record("after"))});
}

TEST_F(audit_log_test, keeps_writing_to_the_old_file_when_it_cannot_reopen) {
  audit_log audit(path_);
  const auto rotated = directory_ / "audit.log.1";
  std::filesystem::rename(path_, rotated);
  std::filesystem::create_directory(path_);  // where the file was, nothing can be opened
  audit.reopen();
  audit.record(token_record("after"));
  audit.flush();

  EXPECT_EQ(lines_of(rotated), std::vector{audit_line(token_record("after"))});
  EXPECT_NE(log_.str().find("audit_log: cannot reopen " + path_.string() + ": Is a directory"),
            std::string::npos)
      << log_.str();
}

TEST_F(audit_log_test, counts_and_reports_records_it_cannot_write_without_quoting_them) {
  audit_log audit("/dev/full");  // every write fails with ENOSPC
  audit.record(token_record("hr", "the-secret-token"));
  audit.flush();
  audit.record(token_record("hr", "the-secret-token"));
  audit.flush();

  EXPECT_EQ(audit.unwritten(), 2u);
  const auto logged = log_.str();
  EXPECT_NE(logged.find("audit_log: cannot write to /dev/full: No space left on device"),
            std::string::npos)
      << logged;
  EXPECT_EQ(logged.find('\n'), logged.size() - 1) << "reported once per interval: " << logged;
  EXPECT_EQ(logged.find("billing"), std::string::npos);
  EXPECT_EQ(logged.find("the-secret-token"), std::string::npos);
}

TEST_F(audit_log_test, loses_nothing_recorded_from_several_threads_under_the_bound) {
  constexpr int threads = 4;
  constexpr int per_thread = 10000;  // 40,000 in all: under the default bound of 65,536
  audit_log audit(path_);
  std::vector<std::thread> recorders;
  for (int t = 0; t < threads; ++t) {
    recorders.emplace_back([&audit, t] {
      for (int i = 0; i < per_thread; ++i) {
        audit.record(token_record(std::to_string(t) + "-" + std::to_string(i), "token"));
      }
    });
  }
  for (auto& recorder : recorders) recorder.join();
  audit.flush();

  EXPECT_EQ(audit.dropped(), 0u);
  std::set<std::string> apps;
  for (const auto& line : lines_of(path_)) {
    apps.insert(nlohmann::json::parse(line)["app"].get<std::string>());
  }
  EXPECT_EQ(apps.size(), std::size_t{threads * per_thread});
  EXPECT_TRUE(apps.contains("3-9999"));
}

// The writer is held up by a pipe nobody reads: records past the bound are dropped and counted,
// and every record not dropped is written once the pipe drains.
TEST_F(audit_log_test, drops_and_counts_records_past_the_bound_when_the_writer_falls_behind) {
  int ends[2];
  ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
  ASSERT_EQ(::fcntl(ends[1], F_SETFL, O_NONBLOCK), 0);
  const std::string filler(4096, 'x');  // fills a pipe buffer page; no newline in it
  while (::write(ends[1], filler.data(), filler.size()) > 0) {
  }
  while (::write(ends[1], "x", 1) > 0) {
  }

  constexpr std::size_t bound = 100;
  constexpr std::size_t recorded = 3 * bound;
  std::string drained;
  std::thread reader;
  std::uint64_t dropped = 0;
  {
    // Its own blocking descriptor on the pipe, as a path names it.
    audit_log audit("/dev/fd/" + std::to_string(ends[1]), bound);
    for (std::size_t i = 0; i < recorded; ++i) audit.record(token_record("hr"));
    // One batch of at most `bound` is stuck in the writer, at most `bound` more wait.
    EXPECT_GE(audit.dropped(), recorded - 2 * bound);

    reader = std::thread([&drained, read_end = ends[0]] {
      char buffer[65536];
      for (ssize_t got; (got = ::read(read_end, buffer, sizeof buffer)) > 0;) {
        drained.append(buffer, static_cast<std::size_t>(got));
      }
    });
    audit.flush();
    dropped = audit.dropped();
  }
  ::close(ends[1]);  // with the log's descriptor closed too, the reader sees the end
  reader.join();
  ::close(ends[0]);

  EXPECT_EQ(static_cast<std::size_t>(std::count(drained.begin(), drained.end(), '\n')),
            recorded - dropped);
}

}  // namespace
}  // namespace token_broker
