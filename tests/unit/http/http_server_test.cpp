// The HTTP server's deadlines, in process with short limits: an idle keep-alive connection is
// closed after idle_timeout, a request trickling in (slowloris) is cut off at request_timeout
// however steadily its bytes arrive, and a client that keeps asking is never cut off. And a
// process out of file descriptors sheds new connections instead of leaving them waiting.
#include "token_broker/http/http_server.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "sanitizers.hpp"
#include "token_broker/store/token_store.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using local = asio::local::stream_protocol;

constexpr server_limits short_limits{
    .max_connections = 100,
    .idle_timeout = 300ms,
    .request_timeout = 600ms,
};

class http_server_test : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_path_ = std::filesystem::temp_directory_path() /
                   ("http-server-test-" + std::to_string(getpid()) + ".sock");
    server_.emplace(
        io_,
        std::vector{listener_config{
            .address = {.type = listen_address::kind::unix_socket, .path = socket_path_.string()}}},
        handler_, short_limits, 1);
    server_->start(apps_.tasks());
    control_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    // As the daemon does: the control loop ends before the server goes.
    server_->stop();
    work_.reset();
    io_.stop();
    control_.join();
    server_.reset();
    std::filesystem::remove(socket_path_);
  }

  local::socket connect() {
    local::socket client(client_io_);
    client.connect(local::endpoint(socket_path_.string()));
    // A server that never closes fails the test rather than hanging it.
    const timeval give_up{.tv_sec = 5, .tv_usec = 0};
    setsockopt(client.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &give_up, sizeof give_up);
    return client;
  }

  // Reads until the server closes the connection; how long that took.
  static steady_clock::duration time_until_closed(local::socket& client) {
    const auto started = steady_clock::now();
    std::array<char, 1024> discard{};
    error_code error;
    while (!error) client.read_some(asio::buffer(discard), error);
    return steady_clock::now() - started;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  broker apps_{io_.get_executor(), config{}, std::make_unique<memory_token_store>()};
  request_handler handler_{apps_, {}};
  std::filesystem::path socket_path_;
  std::optional<http_server> server_;
  std::thread control_;
  asio::io_context client_io_;
};

TEST_F(http_server_test, an_idle_connection_is_closed_after_the_idle_timeout) {
  auto client = connect();
  const auto open_for = time_until_closed(client);
  EXPECT_GE(open_for, 250ms);
  EXPECT_LT(open_for, 1500ms);
}

TEST_F(http_server_test, a_request_trickling_in_is_cut_off_at_the_request_timeout) {
  auto client = connect();
  const auto started = steady_clock::now();
  asio::write(client, asio::buffer(std::string_view("GET /healthz HTTP/1.1\r\n")));
  // One header byte every 50 ms: never idle, never finished.
  error_code error;
  while (!error && steady_clock::now() - started < 5s) {
    asio::write(client, asio::buffer(std::string_view("X")), error);
    std::this_thread::sleep_for(50ms);
  }
  const auto cut_off_after = steady_clock::now() - started + time_until_closed(client);
  EXPECT_GE(cut_off_after, 550ms);
  EXPECT_LT(cut_off_after, 2s) << "the trickle kept the connection open";
}

// Reads one answer; returns its status line.
std::string read_answer(local::socket& client, asio::streambuf& answers) {
  const auto header_end = asio::read_until(client, answers, "\r\n\r\n");
  const std::string header(asio::buffers_begin(answers.data()),
                           asio::buffers_begin(answers.data()) + header_end);
  const auto length_at = header.find("Content-Length: ") + 16;
  const auto body_size = std::stoul(header.substr(length_at));
  answers.consume(header_end);
  if (answers.size() < body_size) {
    asio::read(client, answers, asio::transfer_exactly(body_size - answers.size()));
  }
  answers.consume(body_size);
  return header.substr(0, header.find("\r\n"));
}

TEST_F(http_server_test, a_client_that_keeps_asking_is_answered_past_every_timeout) {
  auto client = connect();
  asio::streambuf answers;
  for (int i = 0; i < 12; ++i) {  // 12 × 200 ms: eight idle timeouts, four request timeouts
    asio::write(client, asio::buffer(std::string_view("GET /healthz HTTP/1.1\r\n\r\n")));
    ASSERT_EQ(read_answer(client, answers), "HTTP/1.1 200 OK") << "answer " << i;
    std::this_thread::sleep_for(200ms);
  }
}

TEST_F(http_server_test, requests_sent_together_or_in_pieces_are_each_answered_in_order) {
  auto client = connect();
  // Three requests in one write, the last with a body; then one split mid-header.
  asio::write(client, asio::buffer(std::string_view(
                          "GET /healthz HTTP/1.1\r\n\r\n"
                          "GET /nowhere HTTP/1.1\r\n\r\n"
                          "POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")));
  asio::streambuf answers;
  EXPECT_EQ(read_answer(client, answers), "HTTP/1.1 200 OK");
  EXPECT_EQ(read_answer(client, answers), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(read_answer(client, answers), "HTTP/1.1 405 Method Not Allowed");
  asio::write(client, asio::buffer(std::string_view("GET /hea")));
  std::this_thread::sleep_for(50ms);
  asio::write(client, asio::buffer(std::string_view("lthz HTTP/1.1\r\n\r\n")));
  EXPECT_EQ(read_answer(client, answers), "HTTP/1.1 200 OK");
}

// Takes every free file descriptor of the process, under a limit lowered to just above the
// ones in use, until destroyed.
class descriptors_exhausted {
 public:
  descriptors_exhausted() {
    getrlimit(RLIMIT_NOFILE, &saved_);
    int highest = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      highest = std::max(highest, std::stoi(entry.path().filename().string()));
    }
    const rlimit lowered{.rlim_cur = static_cast<rlim_t>(highest) + 1, .rlim_max = saved_.rlim_max};
    setrlimit(RLIMIT_NOFILE, &lowered);
    for (int held = ::open("/dev/null", O_RDONLY); held >= 0;
         held = ::open("/dev/null", O_RDONLY)) {
      held_.push_back(held);
    }
  }
  ~descriptors_exhausted() {
    for (const int held : held_) ::close(held);
    setrlimit(RLIMIT_NOFILE, &saved_);
  }
  descriptors_exhausted(const descriptors_exhausted&) = delete;
  descriptors_exhausted& operator=(const descriptors_exhausted&) = delete;

 private:
  rlimit saved_{};
  std::vector<int> held_;
};

TEST_F(http_server_test, out_of_descriptors_new_connections_are_shed_at_once_and_served_after) {
  if (testing::under_address_sanitizer) {
    // UBSan's vptr check reads memory through a pipe of its own, which a process with no free
    // descriptor cannot open: it would report every virtual call. Release and TSan run this.
    GTEST_SKIP() << "needs descriptors the sanitizer runtime takes for itself";
  }
  // A connection from before goes on being served (asked within the idle timeout).
  auto kept = connect();
  asio::streambuf kept_answers;
  const auto ask_kept = [&] {
    asio::write(kept, asio::buffer(std::string_view("GET /healthz HTTP/1.1\r\n\r\n")));
    return read_answer(kept, kept_answers);
  };
  ASSERT_EQ(ask_kept(), "HTTP/1.1 200 OK");
  // Opened first: connecting a socket takes no new descriptor, accepting one does.
  std::vector<local::socket> clients;
  for (int i = 0; i < 5; ++i) {
    clients.emplace_back(client_io_).open();
  }
  {
    const descriptors_exhausted exhausted;
    EXPECT_EQ(ask_kept(), "HTTP/1.1 200 OK");
    for (auto& client : clients) {
      const auto started = steady_clock::now();
      client.connect(local::endpoint(socket_path_.string()));
      std::array<char, 16> discard{};
      error_code error;
      client.read_some(asio::buffer(discard), error);
      EXPECT_TRUE(error == asio::error::eof || error == asio::error::connection_reset)
          << error.message();
      EXPECT_LT(steady_clock::now() - started, 2s) << "left waiting instead of shed";
    }
  }
  auto after = connect();
  asio::streambuf answers;
  asio::write(after, asio::buffer(std::string_view("GET /healthz HTTP/1.1\r\n\r\n")));
  EXPECT_EQ(read_answer(after, answers), "HTTP/1.1 200 OK");
}

}  // namespace
}  // namespace token_broker
