// The supervisor on time driven by hand: a task that throws is restarted after a backoff that
// doubles up to its cap and starts over once the task has run a while; restarts are counted
// by kind; the task is reported down from its end to its restart; secrets stay out of the log.
#include "token_broker/core/supervisor.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>
#include <stdexcept>

#include "token_broker/core/logging.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using ::testing::ElementsAre;

class supervisor_test : public ::testing::Test {
 protected:
  void SetUp() override {
    // The log, for the assertions on it (and kept off the test's output).
    auto logger = std::make_shared<spdlog::logger>(
        "supervisor-test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_));
    previous_logger_ = spdlog::default_logger();
    spdlog::set_default_logger(logger);
  }
  void TearDown() override { spdlog::set_default_logger(previous_logger_); }

  // Time passes only in pauses: each one asked for moves the clock on by its length. A pause
  // ends at once, or, with `hold_pauses_`, when the test releases it.
  supervisor make_supervisor() {
    return supervisor(
        timing_, [this] { return now_; },
        [this](milliseconds pause) -> asio::awaitable<void> {
          pauses_.push_back(pause);
          if (hold_pauses_) {
            co_await release_.async_wait(asio::as_tuple(asio::use_awaitable));
          }
          now_ += pause;
        });
  }

  // Runs the loop until `done()`, failing the test after 2 s of real time: a hang fails.
  template <class Condition>
  void run_until(Condition done) {
    const auto give_up_at = std::chrono::steady_clock::now() + 2s;
    while (!done() && std::chrono::steady_clock::now() < give_up_at) io_.run_one_for(10ms);
    ASSERT_TRUE(done()) << "condition not reached";
  }

  asio::io_context io_;
  supervisor::timing timing_{
      .first_backoff = 100ms, .max_backoff = 1000ms, .healthy_after = 5000ms};
  supervisor::clock::time_point now_{};
  std::vector<milliseconds> pauses_;
  bool hold_pauses_ = false;
  asio::steady_timer release_{io_, asio::steady_timer::time_point::max()};
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> previous_logger_;
};

TEST_F(supervisor_test, a_task_that_throws_is_restarted_after_a_doubling_backoff_and_counted) {
  auto tasks = make_supervisor();
  int runs = 0;
  tasks.spawn(io_.get_executor(), "refresher", "app=hr refresher",
              [&runs]() -> asio::awaitable<void> {
                if (++runs <= 3) throw std::runtime_error("broken invariant");
                co_return;  // the fourth run ends normally: stopped
              });
  run_until([&] { return runs == 4; });
  io_.poll();

  EXPECT_EQ(tasks.restarts("refresher"), 3u);
  EXPECT_THAT(pauses_, ElementsAre(100ms, 200ms, 400ms));
  EXPECT_TRUE(tasks.down().empty());
  EXPECT_EQ(io_.poll(), 0u) << "a task that ends normally is not restarted";
  EXPECT_EQ(runs, 4);

  std::string metrics;
  tasks.render_metrics(metrics);
  EXPECT_NE(metrics.find("# TYPE token_broker_task_restarts_total counter\n"), std::string::npos);
  EXPECT_NE(metrics.find("token_broker_task_restarts_total{task=\"refresher\"} 3\n"),
            std::string::npos)
      << metrics;
  const auto log = log_.str();
  EXPECT_NE(log.find("app=hr refresher ended unexpectedly: broken invariant; restarting it in "
                     "400 ms"),
            std::string::npos)
      << log;
}

TEST_F(supervisor_test, the_backoff_stops_at_its_cap_and_starts_over_after_a_long_run) {
  auto tasks = make_supervisor();
  int runs = 0;
  tasks.spawn(io_.get_executor(), "redis", "redis commands connection",
              [&]() -> asio::awaitable<void> {
                ++runs;
                if (runs == 7) now_ += timing_.healthy_after;  // this run works for a while
                if (runs <= 8) throw std::runtime_error("broken invariant");
                co_return;
              });
  run_until([&] { return runs == 9; });

  EXPECT_THAT(pauses_, ElementsAre(100ms, 200ms, 400ms, 800ms, 1000ms, 1000ms, 100ms, 200ms));
  EXPECT_EQ(tasks.restarts("redis"), 8u);
}

TEST_F(supervisor_test, a_task_is_down_from_its_failure_to_its_restart) {
  hold_pauses_ = true;
  auto tasks = make_supervisor();
  tasks.spawn(io_.get_executor(), "watchdog", "systemd watchdog",
              []() -> asio::awaitable<void> { co_return; });
  int runs = 0;
  asio::steady_timer forever(io_, asio::steady_timer::time_point::max());
  tasks.spawn(io_.get_executor(), "refresher", "app=hr refresher", [&]() -> asio::awaitable<void> {
    if (++runs == 1) throw std::runtime_error("broken invariant");
    co_await forever.async_wait(asio::as_tuple(asio::use_awaitable));  // running
  });
  run_until([&] { return !tasks.down().empty(); });
  EXPECT_THAT(tasks.down(), ElementsAre("app=hr refresher"));
  EXPECT_EQ(tasks.restarts("refresher"), 0u) << "not restarted yet";

  release_.cancel();  // the pause ends
  run_until([&] { return runs == 2; });
  EXPECT_TRUE(tasks.down().empty());
  EXPECT_EQ(tasks.restarts("refresher"), 1u);
  EXPECT_EQ(tasks.restarts("watchdog"), 0u);

  std::string metrics;
  tasks.render_metrics(metrics);
  EXPECT_NE(metrics.find("token_broker_task_restarts_total{task=\"watchdog\"} 0\n"),
            std::string::npos)
      << "every kind spawned is reported, restarted or not:\n"
      << metrics;
  forever.cancel();
  io_.poll();
}

TEST_F(supervisor_test, secrets_in_an_exception_message_are_masked_in_the_log) {
  auto tasks = make_supervisor();
  int runs = 0;
  tasks.spawn(io_.get_executor(), "refresher", "app=hr refresher",
              [&runs]() -> asio::awaitable<void> {
                if (++runs == 1) throw std::runtime_error("cannot parse corpsecret=S3cret-hr here");
                co_return;
              },
              {"S3cret-hr"});
  run_until([&] { return runs == 2; });
  const auto log = log_.str();
  EXPECT_EQ(log.find("S3cret-hr"), std::string::npos) << log;
  EXPECT_NE(log.find("cannot parse corpsecret=*** here"), std::string::npos) << log;
}

// A secret made of the mask's own characters: each occurrence is masked once, and the search
// goes on after the mask (it used to start again inside it, for ever).
TEST(masked, masks_each_occurrence_once_even_a_secret_of_stars) {
  EXPECT_EQ(masked("a*b**c", "*"), "a***b******c");
  EXPECT_EQ(masked("pw=hunter2 and hunter2", "hunter2"), "pw=*** and ***");
  EXPECT_EQ(masked("nothing here", ""), "nothing here");
}

}  // namespace
}  // namespace token_broker
