// A real WeCom SDK works unchanged through the broker (issue 15, SPEC §8): tests/sdk/check.js
// drives the npm package wechat-enterprise-api with its base URL pointed at the real binary for
// every call — gettoken answered by the drop-in from the broker's cache, user/get and
// message/send forwarded by the gateway to the fake of WeCom with the app's token. Needs node
// and `npm ci --prefix tests/sdk` (scripts/install-deps.sh runs it); without them it fails.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "broker_fixture.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;

const std::filesystem::path sdk_directory = TOKEN_BROKER_SDK_TEST_DIR;

// Runs `node check.js` with `environment` added to this process's, its output (stdout and
// stderr) kept in `output_path`; killed if it runs past `limit` (check.js gives up sooner).
command_result run_sdk_check(const std::vector<std::string>& environment,
                             const std::filesystem::path& output_path,
                             std::chrono::milliseconds limit) {
  const auto script = (sdk_directory / "check.js").string();
  std::vector<char*> argv{const_cast<char*>("node"), const_cast<char*>(script.c_str()), nullptr};
  std::vector<char*> envp;
  for (const auto& entry : environment) envp.push_back(const_cast<char*>(entry.c_str()));
  for (char** entry = environ; *entry; ++entry) envp.push_back(*entry);
  envp.push_back(nullptr);

  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, output_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&files, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int spawned = posix_spawnp(&pid, "node", &files, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&files);
  if (spawned != 0) {
    return {-1, std::string("cannot run node (") + std::strerror(spawned) +
                    "): install Node.js and npm (scripts/install-deps.sh does)"};
  }

  int status = 0;
  const auto give_up_at = std::chrono::steady_clock::now() + limit;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > give_up_at) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::ostringstream output;
  output << std::ifstream(output_path).rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output.str()};
}

class sdk_test : public broker_fixture {};

TEST_F(sdk_test, an_unchanged_sdk_pointed_at_the_broker_gets_a_token_reads_a_user_and_sends) {
  ASSERT_TRUE(std::filesystem::exists(sdk_directory / "node_modules" / "wechat-enterprise-api"))
      << "the SDK is not installed: run `npm ci --prefix tests/sdk` (scripts/install-deps.sh does)";
  const auto hr = add_app("hr");
  const auto& broker = start_broker(make_config(free_port(), {{"gateway", {{"enabled", true}}}}));
  // The token the SDK's gettoken will be handed, kept out of every output.
  const auto token = token_of(get_token(broker, "hr"));
  forbid_in_logs(token, "the access_token handed out");
  const auto gettokens = fake_->gettoken_calls(hr.secret);

  const auto result =
      run_sdk_check({"BROKER_URL=http://127.0.0.1:" + std::to_string(broker.port()),
                     std::string("WECOM_CORPID=") + corpid, "WECOM_SECRET=" + hr.secret,
                     "WECOM_AGENTID=1000002", "WECOM_USERID=zhangsan"},
                    scratch_.path() / "sdk-check.log", 20s);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("message/send: errcode 0"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find(hr.secret), std::string::npos) << "the secret printed";
  EXPECT_EQ(result.output.find(token), std::string::npos) << "a token printed";

  EXPECT_EQ(fake_->gettoken_calls(hr.secret), gettokens)
      << "the SDK's gettoken is answered from the broker's cache";
  const auto calls = fake_->api_calls();
  ASSERT_EQ(calls.size(), 2u) << "user/get, then message/send";
  EXPECT_EQ(calls[0].method, "GET");
  EXPECT_EQ(calls[0].path, "/cgi-bin/user/get");
  EXPECT_EQ(calls[1].method, "POST");
  EXPECT_EQ(calls[1].path, "/cgi-bin/message/send");
  EXPECT_EQ(calls[1].content_type.rfind("application/json", 0), 0u) << calls[1].content_type;
  for (const auto& call : calls) {
    EXPECT_TRUE(call.token_ok) << call.path << ": forwarded with the app's current token";
    EXPECT_EQ(call.token_app, corpid) << call.path;
  }
}

}  // namespace
}  // namespace token_broker::testing
