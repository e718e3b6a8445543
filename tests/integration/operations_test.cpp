// What an operator relies on, through the real binary: client keys and --hash-key, secret
// hygiene, /metrics, SIGHUP reload and the systemd notify protocol.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "broker_fixture.hpp"
#include "scoped_env.hpp"
#include "token_broker/core/asio.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using fake::fault;
using fake::fault_kind;
using fake::token_status;
using nlohmann::json;

// One keep-alive connection, kept open across whatever the test does to the broker.
class kept_connection {
 public:
  explicit kept_connection(std::uint16_t port) : socket_(io_) {
    socket_.connect({asio::ip::make_address("127.0.0.1"), port});
  }
  unsigned get(const std::string& target) {
    http::request<http::empty_body> request(http::verb::get, target, 11);
    request.set(http::field::host, "localhost");
    http::write(socket_, request);
    http::response<http::string_body> answer;
    error_code error;
    http::read(socket_, buffer_, answer, error);
    return error ? 0 : answer.result_int();
  }

 private:
  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
};

class operations_test : public broker_fixture {};

TEST_F(operations_test, hash_key_prints_the_key_sha256_a_client_entry_needs) {
  add_app("hr");
  const std::string key = "a-client-key-of-forty-characters-or-so-x";
  const auto hashed = run_broker_command({"--hash-key"}, key + "\n");
  ASSERT_EQ(hashed.exit_code, 0) << hashed.output;
  EXPECT_EQ(hashed.output, hex_sha256(key) + "\n");

  const auto& broker = start_broker(make_config(
      free_port(),
      {{"clients",
        {{"billing", {{"key_sha256", hashed.output.substr(0, 64)}, {"apps", {"*"}}}}}}}));
  const auto answer = http_call(broker.port(), {.target = "/v1/apps/hr/token",
                                                .headers = {{"Authorization", "Bearer " + key}}});
  EXPECT_EQ(answer.status, 200u) << answer.body;

  EXPECT_EQ(run_broker_command({"--hash-key"}, "").exit_code, 2);
  const auto short_key = run_broker_command({"--hash-key"}, "short");
  EXPECT_EQ(short_key.exit_code, 0);
  EXPECT_NE(short_key.output.find("can be guessed"), std::string::npos) << short_key.output;
  EXPECT_EQ(short_key.output.find("short\n"), std::string::npos) << "the key itself echoed";
}

TEST_F(operations_test, an_open_api_is_refused_on_a_network_address) {
  add_app("hr");
  const auto config =
      scratch_.write("open.json", make_config(free_port(), {{"listen", "0.0.0.0:8080"}}).dump());
  const auto refused = run_broker_command({"--config", config.string()});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.output.find("clients: required while listening on 0.0.0.0:8080"),
            std::string::npos)
      << refused.output;
}

TEST_F(operations_test, an_inline_secret_in_a_readable_config_is_warned_about) {
  add_app("hr");
  const auto config = scratch_.write("inline.json", make_config(free_port()).dump());
  ::chmod(config.c_str(), 0644);
  const auto readable = run_broker_command({"--config", config.string(), "--check"});
  EXPECT_EQ(readable.exit_code, 0);
  EXPECT_NE(readable.output.find("holds an inline secret (apps.hr.secret) and is readable by "
                                 "group or others (mode 0644)"),
            std::string::npos)
      << readable.output;
  ::chmod(config.c_str(), 0600);
  const auto private_file = run_broker_command({"--config", config.string(), "--check"});
  EXPECT_EQ(private_file.exit_code, 0);
  EXPECT_EQ(private_file.output.find("inline secret"), std::string::npos) << private_file.output;
}

TEST_F(operations_test, metrics_count_requests_upstream_results_and_token_expiry) {
  const auto hr = add_app("hr");
  const auto crm = add_app("crm");
  fake_->script_faults(crm.secret,
                       {fault{.errcode = 45033, .errmsg = "api concurrent out of limit"},
                        fault{.kind = fault_kind::html}});
  const auto& broker = start_broker();
  const auto token = await_token(broker, "hr", 5s);
  ASSERT_EQ(token.status, 200u);
  ASSERT_EQ(await_token(broker, "crm", 5s).status, 200u);
  for (int i = 0; i < 9; ++i) ASSERT_EQ(get_token(broker, "hr").status, 200u);
  EXPECT_EQ(http_get(broker.port(), "/v1/apps/payroll/token").status, 404u);
  EXPECT_EQ(http_call(broker.port(), {.method = "PUT", .target = "/metrics"}).status, 405u);

  const auto scraped = http_get(broker.port(), "/metrics");
  ASSERT_EQ(scraped.status, 200u);
  EXPECT_EQ(scraped.headers.at("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const auto& page = scraped.body;
  EXPECT_EQ(metric_sample(page, "token_broker_build_info{version=\"" TOKEN_BROKER_VERSION "\"}"),
            1);
  EXPECT_GE(metric_sample(page, R"(token_broker_requests_total{route="token",code="200"})"), 10);
  EXPECT_EQ(metric_sample(page, R"(token_broker_requests_total{route="token",code="404"})"), 1);
  EXPECT_EQ(metric_sample(page, R"(token_broker_requests_total{route="other",code="405"})"), 1);
  EXPECT_EQ(
      metric_sample(
          page,
          R"(token_broker_upstream_requests_total{app="hr",kind="access_token",result="ok"})"),
      1);
  EXPECT_EQ(
      metric_sample(
          page,
          R"(token_broker_upstream_requests_total{app="crm",kind="access_token",result="ok"})"),
      1);
  EXPECT_EQ(
      metric_sample(
          page,
          R"(token_broker_upstream_requests_total{app="crm",kind="access_token",result="error"})"),
      2);
  EXPECT_EQ(
      metric_sample(
          page,
          R"(token_broker_refresh_failures_total{app="crm",kind="access_token",errcode="45033"})"),
      1);
  EXPECT_EQ(
      metric_sample(
          page,
          R"(token_broker_refresh_failures_total{app="crm",kind="access_token",errcode="-1"})"),
      1);
  EXPECT_EQ(
      metric_sample(
          page,
          R"(token_broker_refresh_failures_total{app="hr",kind="access_token",errcode="-1"})"),
      -1);
  EXPECT_EQ(
      metric_sample(page,
                    R"(token_broker_token_expiry_timestamp_seconds{app="hr",kind="access_token"})"),
      static_cast<double>(expires_at_of(token)));
  EXPECT_EQ(page.find("token_broker_redis_up"), std::string::npos) << "no Redis configured";

  // The histogram is cumulative, its count is every request counted, and nothing is negative.
  const double count = metric_sample(page, "token_broker_request_duration_seconds_count");
  EXPECT_EQ(metric_sample(page, R"(token_broker_request_duration_seconds_bucket{le="+Inf"})"),
            count);
  double previous = 0;
  const std::regex bucket(R"(token_broker_request_duration_seconds_bucket\{le="[^"]+"\} (\d+))");
  for (std::sregex_iterator it(page.begin(), page.end(), bucket), end; it != end; ++it) {
    const double value = std::stod((*it)[1]);
    EXPECT_GE(value, previous);
    previous = value;
  }
  double requests = 0;
  const std::regex counter(R"(token_broker_requests_total\{[^}]*\} (\d+))");
  for (std::sregex_iterator it(page.begin(), page.end(), counter), end; it != end; ++it) {
    requests += std::stod((*it)[1]);
  }
  EXPECT_EQ(count, requests);
  EXPECT_GT(metric_sample(page, "token_broker_request_duration_seconds_sum"), 0);
  EXPECT_EQ(fake_->gettoken_calls(crm.secret), 3);
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

TEST_F(operations_test, sighup_reload_applies_apps_clients_and_secrets_keeping_the_rest) {
  const auto hr = add_app("hr");
  const auto crm = add_app("crm");
  const auto pay = add_app("pay");
  auto& broker = start_broker();
  const auto hr_token = token_of(await_token(broker, "hr", 5s));
  const auto pay_token = token_of(await_token(broker, "pay", 5s));
  ASSERT_EQ(await_token(broker, "crm", 5s).status, 200u);
  kept_connection connection(broker.port());
  ASSERT_EQ(connection.get("/v1/apps/hr/token"), 200u);

  // crm goes, ops comes, pay's secret is replaced (WeCom's admin reset it), hr stays as is,
  // and the API now wants client keys.
  const auto ops = add_app("ops");
  const std::string pay_new_secret = pay.secret + "-rotated";
  fake_->add_app(corpid, pay_new_secret);
  forbid_in_logs(pay_new_secret, "pay's new secret");
  auto next = make_config(broker.port());
  next["apps"].erase("crm");
  next["apps"]["pay"]["secret"] = pay_new_secret;
  next["clients"] = {
      {"admin", {{"key_sha256", hex_sha256("admin-key-0123456789")}, {"apps", {"*"}}}}};
  next["listen"] = "127.0.0.1:1";  // needs a restart: warned about, not applied
  reload_broker(broker, next);

  const auto as_admin = [&](const std::string& target) {
    return http_call(
        broker.port(),
        {.target = target, .headers = {{"Authorization", "Bearer admin-key-0123456789"}}});
  };
  EXPECT_EQ(get_token(broker, "hr").status, 401u) << "clients apply at once";
  const auto hr_after = as_admin("/v1/apps/hr/token");
  ASSERT_EQ(hr_after.status, 200u);
  EXPECT_EQ(token_of(hr_after), hr_token) << "an unchanged app keeps its token";
  EXPECT_EQ(as_admin("/v1/apps/crm/token").status, 404u);
  const auto ops_token = as_admin("/v1/apps/ops/token");
  ASSERT_EQ(ops_token.status, 200u);
  EXPECT_EQ(fake_->check(token_of(ops_token)), token_status::valid);
  const auto pay_after = as_admin("/v1/apps/pay/token");
  ASSERT_EQ(pay_after.status, 200u);
  EXPECT_NE(token_of(pay_after), pay_token);
  EXPECT_EQ(fake_->gettoken_calls(pay_new_secret), 1) << "the new secret is used at once";
  const auto listing = json::parse(as_admin("/v1/apps").body);
  ASSERT_EQ(listing.size(), 3u);
  EXPECT_EQ(listing[0]["app"], "hr");  // in the file's order
  EXPECT_EQ(listing[1]["app"], "ops");
  EXPECT_EQ(listing[2]["app"], "pay");
  EXPECT_EQ(connection.get("/healthz"), 200u) << "an open connection stays up";
  EXPECT_NE(broker.log().find("listen changed; that takes a restart"), std::string::npos);

  // A broken config is logged and the running one kept.
  reload_broker(broker, json{{"apps", 1}});
  EXPECT_NE(broker.log().find("the running configuration stays in force"), std::string::npos);
  EXPECT_EQ(as_admin("/v1/apps/ops/token").status, 200u);
  auto typo = next;
  typo["apps"]["hr"]["corpid"] = 7;
  reload_broker(broker, typo);
  EXPECT_NE(broker.log().find("stays in force: apps.hr.corpid"), std::string::npos);
  EXPECT_EQ(token_of(as_admin("/v1/apps/hr/token")), hr_token);

  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1) << "no extra gettoken for the unchanged app";
  EXPECT_EQ(fake_->gettoken_calls(crm.secret), 1);
  EXPECT_EQ(fake_->gettoken_calls(ops.secret), 1);
  EXPECT_EQ(connection.get("/healthz"), 200u);
}

TEST_F(operations_test, no_secret_in_logs_answers_or_metrics_through_every_route_and_failure) {
  const auto hr = add_app("hr");    // inline secret
  const auto crm = add_app("crm");  // secret_env
  const auto ops = add_app("ops");  // secret_file
  const std::string billing_key = "billing-key-Zq8Rk2LmNp4Vt6Xw";
  const std::string admin_key = "admin-key-Hs3Jd5Kf7Lg9Qa1Wz";
  const std::string redis_password = "Redis-Passw0rd-9f8e7d";
  const std::string wrong_secret = "Offered-Wrong-Secret-4c3b2a";
  const std::string ops_new_secret = ops.secret + "-rotated";
  const std::string unusable_secret = "Unusable secret with spaces 5e6f";
  fake_->add_app(corpid, ops_new_secret);
  const std::vector<std::pair<std::string, std::string>> secrets = {
      {hr.secret, "hr secret"},
      {crm.secret, "crm secret"},
      {ops.secret, "ops secret"},
      {ops_new_secret, "ops's new secret"},
      {billing_key, "billing client key"},
      {admin_key, "admin client key"},
      {redis_password, "Redis password"},
      {wrong_secret, "a wrong secret offered"},
      {unusable_secret, "an unusable secret file's content"}};
  for (const auto& [text, what] : secrets) forbid_in_logs(text, what);

  const scoped_env crm_env("TOKEN_BROKER_TEST_CRM_SECRET", crm.secret.c_str());
  const auto ops_file = scratch_.write("ops.secret", ops.secret + "\n");
  // Redis that refuses connections, with a password: every reconnect attempt gets logged.
  auto config =
      make_config(free_port(),
                  {{"log_level", "trace"},
                   {"redis",
                    {{"url", "redis://:" + redis_password +
                                 "@127.0.0.1:" + std::to_string(free_port()) + "/0"}}},
                   {"apps",
                    {{"crm", {{"secret", nullptr}, {"secret_env", "TOKEN_BROKER_TEST_CRM_SECRET"}}},
                     {"ops", {{"secret", nullptr}, {"secret_file", ops_file.string()}}}}},
                   {"clients",
                    {{"billing", {{"key_sha256", hex_sha256(billing_key)}, {"apps", {"hr"}}}},
                     {"admin", {{"key_sha256", hex_sha256(admin_key)}, {"apps", {"*"}}}}}}});
  // Every upstream failure class on the way to hr's first token.
  fake_->script_faults(
      hr.secret, {fault{.errcode = 40001, .errmsg = "invalid credential"},
                  fault{.kind = fault_kind::html}, fault{.kind = fault_kind::truncated_json},
                  fault{.kind = fault_kind::http_500}, fault{.kind = fault_kind::drop_connection}});
  auto& broker = start_broker(config);

  std::string answers;  // every status line, header and body the broker sent
  const auto record = [&](const http_answer& answer) {
    answers += std::to_string(answer.status) + "\n" + answer.body + "\n";
    for (const auto& [name, value] : answer.headers) answers += name + ": " + value + "\n";
    return answer;
  };
  const auto call = [&](http_exchange exchange, const std::string& key = {}) {
    if (!key.empty()) exchange.headers["Authorization"] = "Bearer " + key;
    return record(http_call(broker.port(), exchange));
  };
  ASSERT_TRUE(eventually(
      [&] { return call({.target = "/v1/apps/hr/token"}, admin_key).status == 200; }, 10s));
  const auto current = token_of(call({.target = "/v1/apps/ops/token"}, admin_key));
  call({.target = "/v1/apps/crm/token"}, admin_key);
  call({.target = "/v1/apps/crm/token"}, billing_key);          // 403
  call({.target = "/v1/apps/hr/token"}, "not-" + billing_key);  // 401
  call({.target = "/v1/apps/hr/token"});                        // 401
  call({.target = "/v1/apps/nope/token"}, admin_key);           // 404
  call({.target = "/v1/apps"}, billing_key);
  call({.method = "POST",
        .target = "/v1/apps/ops/token/invalidate",
        .body = json{{"access_token", current}}.dump()},
       admin_key);
  call({.method = "POST",
        .target = "/v1/apps/ops/token/invalidate",
        .body = json{{"access_token", current}}.dump()},
       admin_key);  // now stale
  call({.method = "POST", .target = "/v1/apps/ops/token/invalidate", .body = "[1"}, admin_key);
  const std::string gettoken = "/cgi-bin/gettoken?corpid=" + std::string(corpid) + "&corpsecret=";
  EXPECT_EQ(json::parse(call({.target = gettoken + hr.secret}).body)["errcode"], 0);
  EXPECT_EQ(json::parse(call({.target = gettoken + wrong_secret}).body)["errcode"], 40001);
  call({.target = "/cgi-bin/gettoken?corpid=ww-other&corpsecret=" + wrong_secret});
  call({.target = gettoken + "%zz" + wrong_secret});              // 400
  call({.method = "DELETE", .target = gettoken + wrong_secret});  // 405
  call({.target = "/healthz"});
  call({.target = "/readyz"});
  call({.target = "/no/such/path?corpsecret=" + wrong_secret});
  call({.target = "/v1/apps/hr/token",
        .headers = {{"X-Big", std::string(9000, 'k') + billing_key}}});

  // Reloads: a rotated secret (taken up at once), then a secret file that cannot be used.
  scratch_.write("ops.secret", ops_new_secret);
  reload_broker(broker, config);
  EXPECT_EQ(call({.target = "/v1/apps/ops/token"}, admin_key).status, 200u);
  EXPECT_EQ(fake_->gettoken_calls(ops_new_secret), 1);
  scratch_.write("ops.secret", unusable_secret);
  reload_broker(broker, config);
  EXPECT_NE(broker.log().find("stays in force: apps.ops.secret_file"), std::string::npos);

  const auto metrics = call({.target = "/metrics"});
  EXPECT_EQ(metric_sample(metrics.body, "token_broker_redis_up"), 0);
  EXPECT_GE(
      metric_sample(
          metrics.body,
          R"(token_broker_refresh_failures_total{app="hr",kind="access_token",errcode="40001"})"),
      1);

  const auto log = broker.log();
  EXPECT_NE(log.find("redis"), std::string::npos) << "the Redis failures were logged";
  for (const auto& [text, what] : secrets) {
    EXPECT_EQ(answers.find(text), std::string::npos) << what << " in an answer";
  }
  std::cout << "[ figures  ] " << log.size() << " bytes of trace log and " << answers.size()
            << " bytes of answers searched for " << secrets.size() << " secrets\n";
}

// A unix datagram socket standing in for systemd's notify socket.
class notify_socket {
 public:
  explicit notify_socket(const std::filesystem::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    path.string().copy(address.sun_path, sizeof(address.sun_path) - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      throw std::runtime_error("cannot bind the notify socket");
    }
    const timeval wait{.tv_sec = 0, .tv_usec = 100'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
  }
  ~notify_socket() { ::close(fd_); }

  // Every message that arrives within `limit`.
  std::vector<std::string> receive_for(std::chrono::milliseconds limit) {
    std::vector<std::string> messages;
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      std::array<char, 4096> buffer{};
      const auto size = ::recv(fd_, buffer.data(), buffer.size(), 0);
      if (size > 0) messages.emplace_back(buffer.data(), static_cast<std::size_t>(size));
    }
    return messages;
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

TEST_F(operations_test, systemd_hears_ready_watchdog_reloading_and_stopping) {
  add_app("hr");
  notify_socket systemd(scratch_.path() / "notify.sock");
  const scoped_env notify("NOTIFY_SOCKET", (scratch_.path() / "notify.sock").c_str());
  const scoped_env watchdog("WATCHDOG_USEC", "400000");  // keep-alives every 200 ms
  auto& broker = start_broker();                         // returns once /healthz answers

  const auto first_second = systemd.receive_for(1000ms);
  ASSERT_FALSE(first_second.empty());
  EXPECT_EQ(first_second.front(), "READY=1");
  const auto keep_alives = std::count(first_second.begin(), first_second.end(), "WATCHDOG=1");
  std::cout << "[ figures  ] " << keep_alives
            << " WATCHDOG=1 in the first second (200 ms interval)\n";
  EXPECT_GE(keep_alives, 3);
  EXPECT_LE(keep_alives, 7);

  broker.send(SIGHUP);
  auto reloading = systemd.receive_for(500ms);
  std::erase(reloading, "WATCHDOG=1");
  EXPECT_EQ(reloading, (std::vector<std::string>{"RELOADING=1", "READY=1"}));

  // A wedged process sends no keep-alives, which is what makes systemd restart it.
  broker.send(SIGSTOP);
  systemd.receive_for(100ms);  // what was already queued
  EXPECT_TRUE(systemd.receive_for(600ms).empty());
  broker.send(SIGCONT);
  EXPECT_FALSE(systemd.receive_for(600ms).empty());

  EXPECT_EQ(broker.stop(SIGTERM, 5s), 0);
  auto stopping = systemd.receive_for(200ms);
  std::erase(stopping, "WATCHDOG=1");
  EXPECT_EQ(stopping, std::vector<std::string>{"STOPPING=1"});
}

TEST_F(operations_test, watchdog_is_silent_when_systemd_watches_another_pid) {
  add_app("hr");
  notify_socket systemd(scratch_.path() / "notify.sock");
  const scoped_env notify("NOTIFY_SOCKET", (scratch_.path() / "notify.sock").c_str());
  const scoped_env watchdog("WATCHDOG_USEC", "200000");
  const scoped_env watched("WATCHDOG_PID", "1");
  start_broker();
  EXPECT_EQ(systemd.receive_for(700ms), std::vector<std::string>{"READY=1"});
}

}  // namespace
}  // namespace token_broker::testing
