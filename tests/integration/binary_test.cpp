// The real token-broker binary against the fake of WeCom over real TLS, driven through its
// HTTP port like a production client would.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "broker_fixture.hpp"
#include "token_broker/core/asio.hpp"
#include "token_broker/credentials/fetch_result.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using fake::expiry_behaviour;
using fake::fault;
using fake::fault_kind;
using fake::token_status;
using nlohmann::json;

class binary_test : public broker_fixture {};

TEST_F(binary_test, cold_concurrent_requests_share_one_gettoken_per_app) {
  const auto hr = add_app("hr");
  const auto crm = add_app("crm");
  // Slow first answers keep both apps cold while the requests pile up.
  fake_->script_faults(hr.secret, {fault{.kind = fault_kind::delay, .delay = 800ms}});
  fake_->script_faults(crm.secret, {fault{.kind = fault_kind::delay, .delay = 800ms}});
  const auto& broker = start_broker();

  std::vector<http_exchange> requests;
  for (int i = 0; i < 150; ++i) {
    requests.push_back({.target = "/v1/apps/hr/token"});
    requests.push_back({.target = "/v1/apps/crm/token"});
  }
  const auto answers = http_concurrently(broker.port(), requests);

  std::set<std::string> hr_tokens, crm_tokens;
  int waited = 0;  // answers that had to wait for the slow first gettoken: truly cold
  for (std::size_t i = 0; i < answers.size(); ++i) {
    ASSERT_EQ(answers[i].status, 200u) << answers[i].error << answers[i].body;
    (i % 2 == 0 ? hr_tokens : crm_tokens).insert(token_of(answers[i]));
    if (answers[i].took >= 200ms) ++waited;
  }
  std::cout << "[ figures  ] " << answers.size() << " concurrent requests, " << waited
            << " waited for the in-flight gettoken, gettoken calls: hr "
            << fake_->gettoken_calls(hr.secret) << ", crm " << fake_->gettoken_calls(crm.secret)
            << "\n";
  EXPECT_GE(waited, 200) << "the requests must have arrived while the apps were cold";
  EXPECT_EQ(hr_tokens.size(), 1u);
  EXPECT_EQ(crm_tokens.size(), 1u);
  EXPECT_EQ(fake_->check(*hr_tokens.begin()), token_status::valid);
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
  EXPECT_EQ(fake_->gettoken_calls(crm.secret), 1);
}

TEST_F(binary_test, concurrent_invalidations_of_one_token_cause_one_refresh) {
  const auto hr = add_app("hr");
  const auto& broker = start_broker();
  const auto first = await_token(broker, "hr", 5s);
  ASSERT_EQ(first.status, 200u);
  const auto revoked = token_of(first);
  const int calls_before = fake_->gettoken_calls(hr.secret);

  fake_->revoke_tokens(hr.secret);  // WeCom revokes early; 20 services notice at once
  std::vector<http_exchange> reports(20, {.method = "POST",
                                          .target = "/v1/apps/hr/token/invalidate",
                                          .body = json{{"access_token", revoked}}.dump()});
  const auto answers = http_concurrently(broker.port(), reports);

  std::set<std::string> tokens;
  for (const auto& answer : answers) {
    ASSERT_EQ(answer.status, 200u) << answer.error << answer.body;
    tokens.insert(token_of(answer));
  }
  ASSERT_EQ(tokens.size(), 1u);
  std::cout << "[ figures  ] 20 concurrent invalidations -> "
            << fake_->gettoken_calls(hr.secret) - calls_before << " gettoken\n";
  EXPECT_NE(*tokens.begin(), revoked);
  EXPECT_EQ(fake_->check(*tokens.begin()), token_status::valid);
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), calls_before + 1);

  // A late report of the old token: the current one comes back, upstream is not called.
  const auto late = http_call(broker.port(), reports.front());
  ASSERT_EQ(late.status, 200u);
  EXPECT_EQ(token_of(late), *tokens.begin());
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), calls_before + 1);
}

class lifetime_test : public binary_test, public ::testing::WithParamInterface<expiry_behaviour> {};

// 20 s of 6-second tokens under load: every token served is valid at WeCom, no request
// fails, and upstream sees at most two calls per lifetime.
TEST_P(lifetime_test, every_served_token_is_valid_and_calls_stay_at_the_floor) {
  constexpr auto lifetime = 6s;
  constexpr auto duration = 20s;
  fake_->set_behaviour(GetParam());
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  const auto& broker =
      start_broker(make_config(free_port(), {{"refresh", {{"min_interval_s", 1}}}}));
  ASSERT_EQ(await_token(broker, "hr", 5s).status, 200u);
  const int calls_at_start = fake_->gettoken_calls(hr.secret);
  const auto started = std::chrono::steady_clock::now();

  std::atomic<int> served{0}, failed{0}, invalid{0};
  std::vector<std::jthread> clients;
  for (int client = 0; client < 4; ++client) {
    clients.emplace_back([&, client] {
      // One client in four uses the WeCom drop-in route, as an unmodified SDK would.
      const bool dropin = client == 0;
      const std::string target =
          dropin ? "/cgi-bin/gettoken?corpid=" + std::string(corpid) + "&corpsecret=" + hr.secret
                 : "/v1/apps/hr/token";
      while (std::chrono::steady_clock::now() - started < duration) {
        const auto answer = http_get(broker.port(), target);
        if (answer.status != 200 || json::parse(answer.body).value("errcode", 0) != 0) {
          ++failed;
          ADD_FAILURE() << "request failed: " << answer.status << " " << answer.error << " "
                        << answer.body;
          continue;
        }
        const auto token = token_of(answer);
        if (fake_->check(token) != token_status::valid) {
          ++invalid;
          ADD_FAILURE() << "served a token WeCom rejects: " << fake::to_string(fake_->check(token));
        }
        ++served;
      }
    });
  }
  clients.clear();

  const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started);
  const int calls = fake_->gettoken_calls(hr.secret) - calls_at_start;
  const double lifetimes = elapsed.count() / std::chrono::duration<double>(lifetime).count();
  RecordProperty("served", served.load());
  RecordProperty("gettoken_calls", calls);
  std::cout << "[ figures  ] served=" << served << " failed=" << failed << " invalid=" << invalid
            << " gettoken=" << calls << " over " << lifetimes << " lifetimes\n";
  EXPECT_GT(served, 1000);
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(invalid, 0);
  EXPECT_LE(calls, static_cast<int>(2 * lifetimes) + 1);
}

INSTANTIATE_TEST_SUITE_P(behaviours, lifetime_test,
                         ::testing::Values(expiry_behaviour::same_token_keeps_expiry,
                                           expiry_behaviour::same_token_seconds_left,
                                           expiry_behaviour::new_token_each_call),
                         [](const auto& test) { return behaviour_test_name(test.param, "token"); });

TEST_F(binary_test, every_fault_script_recovers) {
  struct scripted {
    std::string app;
    fault failure;
  };
  const std::vector<scripted> scripts = {
      {"busy", fault{.kind = fault_kind::errcode, .errcode = -1, .errmsg = "system busy"}},
      {"concurrency", fault{.kind = fault_kind::errcode, .errcode = 45033, .errmsg = "limit"}},
      {"throttled", fault{.kind = fault_kind::errcode, .errcode = 45009, .errmsg = "freq"}},
      {"badsecret", fault{.kind = fault_kind::errcode, .errcode = 40001, .errmsg = "bad"}},
      {"html", fault{.kind = fault_kind::html}},
      {"truncated", fault{.kind = fault_kind::truncated_json}},
      {"http500", fault{.kind = fault_kind::http_500}},
      {"dropped", fault{.kind = fault_kind::drop_connection}},
      {"hang", fault{.kind = fault_kind::hang}},
  };
  std::map<std::string, app_spec> apps;
  for (const auto& script : scripts) {
    apps[script.app] = add_app(script.app);
    fake_->script_faults(apps[script.app].secret, {script.failure});
  }
  const auto slow = add_app("slow");
  fake_->script_faults(slow.secret, {fault{.kind = fault_kind::delay, .delay = 500ms}});
  const auto& broker =
      start_broker(make_config(free_port(), {{"upstream", {{"timeout_ms", 1000}}}}));

  for (const auto& script : scripts) {
    const auto answer = await_token(broker, script.app, 10s);
    ASSERT_EQ(answer.status, 200u) << script.app << ": " << answer.body;
    EXPECT_EQ(fake_->check(token_of(answer)), token_status::valid) << script.app;
    EXPECT_EQ(fake_->gettoken_calls(apps[script.app].secret), 2) << script.app;
  }
  EXPECT_EQ(await_token(broker, "slow", 5s).status, 200u);
  EXPECT_EQ(fake_->gettoken_calls(slow.secret), 1) << "a slow answer within the deadline is fine";

  const auto log = broker.log();
  for (const auto* expected : {"app=busy refresh failed: errcode=-1", "errcode=45009",
                               "errcode=40001", "app=html refresh failed", "HTTP 500",
                               "did not answer within 1000 ms", "app=hang refresh failed"}) {
    EXPECT_NE(log.find(expected), std::string::npos) << expected << "\n" << log;
  }
}

TEST_F(binary_test, failing_upstream_without_a_token_answers_503_with_wecoms_reason) {
  const auto hr = add_app("hr");
  fake_->script_faults(hr.secret, std::vector<fault>(50, fault{.kind = fault_kind::errcode,
                                                               .errcode = 40091,
                                                               .errmsg = "secret invalid"}));
  const auto& broker = start_broker(
      make_config(free_port(), {{"refresh", {{"retry_min_ms", 500}, {"retry_max_ms", 30000}}}}));
  std::this_thread::sleep_for(300ms);  // the first call has failed by now

  const auto answer = get_token(broker, "hr");
  EXPECT_EQ(answer.status, 503u);
  const auto body = json::parse(answer.body);
  EXPECT_EQ(body["error"], "unavailable");
  EXPECT_EQ(body["errcode"], 40091);
  EXPECT_EQ(body["errmsg"], "secret invalid");
  EXPECT_GE(std::stoi(answer.headers.at("retry-after")), 1);
  EXPECT_LT(answer.took, 1000ms) << "a configuration error is not waited for";

  const auto dropin = http_get(broker.port(), "/cgi-bin/gettoken?corpid=" + std::string(corpid) +
                                                  "&corpsecret=" + hr.secret);
  EXPECT_EQ(dropin.status, 200u);
  EXPECT_EQ(json::parse(dropin.body)["errcode"], 40091);

  const auto ready = http_get(broker.port(), "/readyz");
  EXPECT_EQ(ready.status, 503u);
  EXPECT_EQ(json::parse(ready.body)["failing"], json::array({"hr"}));
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1) << "configuration errors retry at retry_max";
}

TEST_F(binary_test, static_stability_serves_the_held_token_until_expiry_then_503) {
  fake_->set_lifetime(4s);
  const auto hr = add_app("hr");
  const auto& broker = start_broker();
  const auto first = await_token(broker, "hr", 5s);
  ASSERT_EQ(first.status, 200u);
  // From now on every refresh fails (the first one is due at half the lifetime).
  fake_->script_faults(hr.secret, std::vector<fault>(1000, fault{.kind = fault_kind::http_500}));

  const auto held = token_of(first);
  const std::chrono::seconds expires_at{json::parse(first.body)["expires_at"].get<std::int64_t>()};
  const auto give_up_at = std::chrono::steady_clock::now() + 10s;
  http_answer answer;
  while (std::chrono::steady_clock::now() < give_up_at) {
    answer = get_token(broker, "hr");
    if (answer.status != 200) break;
    EXPECT_EQ(token_of(answer), held);
    EXPECT_EQ(fake_->check(held), token_status::valid) << "handed out past its expiry";
    std::this_thread::sleep_for(20ms);
  }
  // The held token was served through the failures until just before its expiry (the serve
  // margin of a 4 s token is 0.4 s; expires_at is rounded down to the second).
  const auto unavailable_at = wall_clock::now().time_since_epoch();
  ASSERT_EQ(answer.status, 503u) << answer.body;
  EXPECT_GE(unavailable_at, expires_at - 500ms);
  EXPECT_EQ(json::parse(answer.body)["errcode"], -1);
  EXPECT_TRUE(answer.headers.contains("retry-after"));
  EXPECT_GE(fake_->gettoken_calls(hr.secret), 2) << "the failing refreshes were attempted";
}

TEST_F(binary_test, wrong_ca_fails_with_a_clear_log_line) {
  add_app("hr");
  const auto other_ca = scratch_.write("other-ca.pem", fake::generate_tls_material().ca_pem);
  auto& broker =
      start_broker(make_config(free_port(), {{"upstream", {{"ca_file", other_ca.string()}}}}));
  const auto answer = get_token(broker, "hr");
  EXPECT_EQ(answer.status, 503u);
  EXPECT_NE(json::parse(answer.body)["errmsg"].get<std::string>().find("certificate"),
            std::string::npos);
  EXPECT_NE(broker.log().find("upstream TLS certificate rejected"), std::string::npos)
      << broker.log();
  EXPECT_EQ(fake_->gettoken_calls(), 0) << "no request may reach an unverified server";
}

TEST_F(binary_test, api_answers_have_the_contracts_shapes) {
  const auto hr = add_app("hr");
  const auto& broker = start_broker();
  const auto token = await_token(broker, "hr", 5s);
  ASSERT_EQ(token.status, 200u);
  const auto body = json::parse(token.body);
  EXPECT_EQ(body["app"], "hr");
  EXPECT_GT(body["expires_in"].get<int>(), 7000);
  EXPECT_NEAR(body["expires_at"].get<double>(),
              std::chrono::duration<double>(wall_clock::now().time_since_epoch()).count() +
                  body["expires_in"].get<double>(),
              2.0);
  EXPECT_EQ(token.headers.at("cache-control"), "no-store");
  EXPECT_EQ(token.headers.at("content-type"), "application/json");

  const auto listing = json::parse(http_get(broker.port(), "/v1/apps").body);
  ASSERT_EQ(listing.size(), 1u);
  EXPECT_EQ(listing[0]["app"], "hr");
  EXPECT_EQ(listing[0]["corpid"], corpid);
  EXPECT_EQ(listing[0]["state"], "fresh");
  EXPECT_EQ(listing[0]["expires_at"], body["expires_at"]);

  EXPECT_EQ(http_get(broker.port(), "/healthz").status, 200u);
  EXPECT_EQ(http_get(broker.port(), "/readyz").status, 200u);

  const auto unknown = http_get(broker.port(), "/v1/apps/payroll/token");
  EXPECT_EQ(unknown.status, 404u);
  EXPECT_EQ(json::parse(unknown.body)["error"], "unknown_app");
  EXPECT_EQ(unknown.headers.at("cache-control"), "no-store");

  const auto bad_body =
      http_call(broker.port(),
                {.method = "POST", .target = "/v1/apps/hr/token/invalidate", .body = "{not json"});
  EXPECT_EQ(bad_body.status, 400u);
  EXPECT_EQ(json::parse(bad_body.body)["error"], "bad_request");
  EXPECT_EQ(http_call(broker.port(), {.method = "DELETE", .target = "/v1/apps/hr/token"}).status,
            405u);

  // The drop-in answers exactly like WeCom, from the cache.
  const std::string gettoken = "/cgi-bin/gettoken?corpid=" + std::string(corpid);
  const auto dropin =
      json::parse(http_get(broker.port(), gettoken + "&corpsecret=" + hr.secret).body);
  EXPECT_EQ(dropin.size(), 4u);
  EXPECT_EQ(dropin["errcode"], 0);
  EXPECT_EQ(dropin["errmsg"], "ok");
  EXPECT_EQ(dropin["access_token"], body["access_token"]);
  EXPECT_GT(dropin["expires_in"].get<int>(), 7000);
  EXPECT_EQ(json::parse(http_get(broker.port(), gettoken + "&corpsecret=wrong").body)["errcode"],
            40001);
  EXPECT_EQ(
      json::parse(
          http_get(broker.port(), "/cgi-bin/gettoken?corpid=nope&corpsecret=x").body)["errcode"],
      40013);
  EXPECT_EQ(json::parse(http_get(broker.port(), "/cgi-bin/gettoken?corpsecret=x").body)["errcode"],
            41002);
  EXPECT_EQ(json::parse(http_get(broker.port(), gettoken).body)["errcode"], 41004);
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
}

TEST_F(binary_test, client_keys_guard_the_v1_api) {
  add_app("hr");
  add_app("crm");
  const auto& broker = start_broker(make_config(
      free_port(), {{"clients",
                     {{"billing", {{"key_sha256", hex_sha256("billing-key")}, {"apps", {"hr"}}}},
                      {"admin", {{"key_sha256", hex_sha256("admin-key")}, {"apps", {"*"}}}}}}}));
  const auto as = [&](const std::string& key, const std::string& target) {
    return http_call(broker.port(),
                     {.target = target, .headers = {{"Authorization", "Bearer " + key}}});
  };

  EXPECT_EQ(http_get(broker.port(), "/v1/apps/hr/token").status, 401u);
  EXPECT_EQ(as("wrong-key", "/v1/apps/hr/token").status, 401u);
  EXPECT_EQ(as("billing-key", "/v1/apps/hr/token").status, 200u);
  EXPECT_EQ(as("billing-key", "/v1/apps/crm/token").status, 403u);
  EXPECT_EQ(as("admin-key", "/v1/apps/crm/token").status, 200u);
  EXPECT_EQ(json::parse(as("billing-key", "/v1/apps").body).size(), 1u);
  EXPECT_EQ(json::parse(as("admin-key", "/v1/apps").body).size(), 2u);
  EXPECT_EQ(http_get(broker.port(), "/healthz").status, 200u) << "probes need no key";
  const auto log = broker.log();
  EXPECT_EQ(log.find("billing-key"), std::string::npos);
}

TEST_F(binary_test, abuse_on_the_http_port_does_not_stop_normal_requests) {
  add_app("hr");
  const auto& broker = start_broker();
  ASSERT_EQ(await_token(broker, "hr", 5s).status, 200u);

  asio::io_context io;
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), broker.port());
  const auto connect = [&] {
    asio::ip::tcp::socket socket(io);
    socket.connect(endpoint);
    return socket;
  };
  const auto send_and_read = [&](const std::string& bytes) {
    auto socket = connect();
    asio::write(socket, asio::buffer(bytes));
    socket.shutdown(asio::socket_base::shutdown_send);
    std::string answer;
    error_code error;
    asio::read(socket, asio::dynamic_buffer(answer), error);
    return answer;
  };

  // 200 half-open connections: a request begun and never finished.
  std::vector<asio::ip::tcp::socket> half_open;
  for (int i = 0; i < 200; ++i) {
    half_open.push_back(connect());
    asio::write(half_open.back(),
                asio::buffer(std::string("GET /v1/apps/hr/token HTTP/1.1\r\nHo")));
  }
  EXPECT_NE(send_and_read("\x01\x02 junk junk\r\n\r\n").find("400 Bad Request"), std::string::npos);
  // A TLS ClientHello (record header, handshake type 1) sent to the plain HTTP port.
  EXPECT_NE(send_and_read(std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11) +
                          std::string(160, 'x'))
                .find("400 Bad Request"),
            std::string::npos);
  const auto huge_header =
      "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(200 * 1024, 'a') + "\r\n\r\n";
  EXPECT_NE(send_and_read(huge_header).find("431 Request Header Fields Too Large"),
            std::string::npos);
  const auto huge_body =
      "POST /v1/apps/hr/token/invalidate HTTP/1.1\r\nHost: x\r\n"
      "Content-Length: 20480\r\n\r\n" +
      std::string(20480, '{');
  EXPECT_NE(send_and_read(huge_body).find("413 Payload Too Large"), std::string::npos);

  const auto answer = get_token(broker, "hr");
  EXPECT_EQ(answer.status, 200u);
  EXPECT_LT(answer.took, 1000ms);
  std::cout << "[ figures  ] token answered in " << answer.took.count()
            << " ms with 200 half-open connections open\n";
  EXPECT_EQ(http_get(broker.port(), "/healthz").status, 200u);
}

TEST_F(binary_test, a_connection_flood_under_a_small_fd_limit_is_shed_while_keep_alive_is_served) {
  add_app("hr");
  // `ulimit -n 64`: the broker keeps a quarter of so small a limit for connections, 16.
  const auto& broker = start_broker(make_config(free_port()), 64);
  ASSERT_EQ(await_token(broker, "hr", 5s).status, 200u);

  asio::io_context io;
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), broker.port());
  // Runs what is pending on `io` for at most `limit`, then abandons it by closing `sockets`.
  const auto run_at_most = [&](std::chrono::milliseconds limit, auto&... sockets) {
    io.restart();
    io.run_for(limit);
    if (!io.stopped()) {
      (sockets.close(), ...);
      io.restart();
      io.run();
    }
  };
  struct keep_alive_client {
    asio::ip::tcp::socket socket;
    beast::flat_buffer buffer;
  };
  const auto ask = [&](keep_alive_client& client) {
    http::request<http::empty_body> request(http::verb::get, "/v1/apps/hr/token", 11);
    request.set(http::field::host, "localhost");
    http::response<http::string_body> answer;
    unsigned status = 0;
    http::async_write(client.socket, request, [&](error_code error, std::size_t) {
      if (error) return;
      http::async_read(client.socket, client.buffer, answer,
                       [&](error_code read_error, std::size_t) {
                         if (!read_error && answer.keep_alive()) status = answer.result_int();
                       });
    });
    run_at_most(5s, client.socket);
    return status;
  };

  std::vector<keep_alive_client> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back({asio::ip::tcp::socket(io), {}});
    clients.back().socket.connect(endpoint);
    ASSERT_EQ(ask(clients.back()), 200u);
  }

  // The flood: 300 connections that send nothing. The kernel completes them all (the listen
  // backlog); the broker takes what fits under its cap and closes the rest at once.
  constexpr int flood_size = 300;
  asio::io_context flood_io;
  std::vector<asio::ip::tcp::socket> flood;
  for (int i = 0; i < flood_size; ++i) {
    flood.emplace_back(flood_io).connect(endpoint);
  }
  std::vector<char> scratch(flood_size);
  int shed = 0;
  for (int i = 0; i < flood_size; ++i) {
    flood[i].async_read_some(asio::buffer(&scratch[i], 1), [&](error_code error, std::size_t) {
      if (error == asio::error::eof || error == asio::error::connection_reset) ++shed;
    });
  }
  flood_io.run_for(2s);  // the reads of the connections the broker holds stay pending
  const int held = flood_size - shed;
  std::cout << "[ figures  ] flood of " << flood_size << ": " << held << " held, " << shed
            << " shed at once\n";
  EXPECT_LE(held, 16 - static_cast<int>(clients.size()));
  EXPECT_GE(held, 1);
  EXPECT_TRUE(broker.log().find("connection cap of 16 reached; refusing new connections") !=
              std::string::npos)
      << broker.log();

  // The keep-alive clients are served throughout.
  for (auto& client : clients) {
    for (int i = 0; i < 3; ++i) EXPECT_EQ(ask(client), 200u);
  }

  // The flood ends: new connections are served again.
  for (auto& socket : flood) socket.close();
  flood_io.restart();
  flood_io.run();  // the aborted reads
  http_answer after;
  for (const auto give_up_at = std::chrono::steady_clock::now() + 3s;
       std::chrono::steady_clock::now() < give_up_at;) {
    after = get_token(broker, "hr");
    if (after.status == 200) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(after.status, 200u);
  for (auto& client : clients) EXPECT_EQ(ask(client), 200u);
}

TEST_F(binary_test, sigterm_finishes_in_flight_requests_and_exits_0_within_5s) {
  const auto hr = add_app("hr");
  fake_->script_faults(hr.secret, {fault{.kind = fault_kind::delay, .delay = 1500ms}});
  auto& broker = start_broker();

  http_answer in_flight;
  std::jthread request([&] { in_flight = get_token(broker, "hr"); });
  std::this_thread::sleep_for(300ms);
  const auto stopping_at = std::chrono::steady_clock::now();
  EXPECT_EQ(broker.stop(SIGTERM, 5s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - stopping_at, 5s);
  request.join();
  EXPECT_EQ(in_flight.status, 200u) << in_flight.error;
}

// Issue 13, defect 5: a request waiting for a cold token when SIGTERM came was resumed on a
// worker io_context that the stop had already ended and destroyed: the client saw its
// connection close without an answer (and ASan a use after free). Every waiter is answered.
TEST_F(binary_test, sigterm_answers_every_request_waiting_for_a_cold_token_and_exits_0) {
  const auto hr = add_app("hr");
  fake_->script_faults(hr.secret, {fault{.kind = fault_kind::hang}});
  // The waits are bounded by timeout_ms, which is longer than the 4 s the drain allows.
  auto& broker = start_broker(make_config(free_port(), {{"upstream", {{"timeout_ms", 20000}}}}));

  // Connected and sent before the next connection: once a later one is answered, the accept
  // loop (first come, first accepted) has taken every one of these.
  const std::vector<http_exchange> waiting = {
      {.target = "/v1/apps/hr/token"},
      {.target = "/v1/apps/hr/token"},
      {.target = "/v1/apps/hr/token"},
      {.target = "/v1/apps/hr/token"},
      {.method = "POST",
       .target = "/v1/apps/hr/token/invalidate",
       .body = R"({"access_token":"not-a-token-it-holds"})"},
      {.target = "/cgi-bin/gettoken?corpid=" + std::string(corpid) + "&corpsecret=" + hr.secret},
  };
  asio::io_context client_io;
  std::vector<asio::ip::tcp::socket> clients;
  for (const auto& exchange : waiting) {
    auto& client = clients.emplace_back(client_io);
    client.connect({asio::ip::make_address("127.0.0.1"), broker.port()});
    const timeval give_up{.tv_sec = 10, .tv_usec = 0};  // a hang fails instead of blocking
    setsockopt(client.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &give_up, sizeof give_up);
    http::request<http::string_body> request{http::string_to_verb(exchange.method), exchange.target,
                                             11};
    request.set(http::field::host, "127.0.0.1");
    request.body() = exchange.body;
    request.prepare_payload();
    http::write(client, request);
  }
  ASSERT_EQ(http_get(broker.port(), "/healthz").status, 200u);

  std::vector<http_answer> answers(clients.size());
  std::vector<std::jthread> readers;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    readers.emplace_back([&, i] {
      beast::flat_buffer buffer;
      http::response<http::string_body> response;
      error_code error;
      http::read(clients[i], buffer, response, error);
      if (error) {
        answers[i].error = error.message();
      } else {
        answers[i].status = response.result_int();
        answers[i].body = response.body();
      }
    });
  }
  const auto stopping_at = std::chrono::steady_clock::now();
  EXPECT_EQ(broker.stop(SIGTERM, 5s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - stopping_at, 5s);
  readers.clear();  // joins

  for (std::size_t i = 0; i + 1 < clients.size(); ++i) {
    EXPECT_EQ(answers[i].status, 503u) << waiting[i].target << ": " << answers[i].error;
    if (answers[i].status == 503u) {
      EXPECT_EQ(json::parse(answers[i].body)["error"], "unavailable");
    }
  }
  // The drop-in answers as WeCom does when it cannot serve: HTTP 200, errcode -1.
  EXPECT_EQ(answers.back().status, 200u) << answers.back().error;
  if (answers.back().status == 200u) {
    EXPECT_EQ(json::parse(answers.back().body)["errcode"], -1);
  }
  const auto log = broker.log();
  for (const auto* alarm : {"Sanitizer", "terminate called", "ended unexpectedly"}) {
    EXPECT_EQ(log.find(alarm), std::string::npos) << alarm;
  }
}

TEST_F(binary_test, cli_version_and_check) {
  const auto version = run_broker_command({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.output, "token-broker " TOKEN_BROKER_VERSION "\n");

  const auto hr = add_app("hr");
  const auto good = scratch_.write("good.json", make_config(free_port()).dump());
  const auto checked = run_broker_command({"--config", good.string(), "--check"});
  EXPECT_EQ(checked.exit_code, 0) << checked.output;

  auto typo = make_config(free_port());
  typo["apps"]["hr"]["secrett"] = "x";
  const auto bad = scratch_.write("bad.json", typo.dump());
  const auto rejected = run_broker_command({"--config", bad.string(), "--check"});
  EXPECT_EQ(rejected.exit_code, 2);
  EXPECT_NE(rejected.output.find("apps.hr.secrett"), std::string::npos) << rejected.output;
  EXPECT_EQ(rejected.output.find(hr.secret), std::string::npos);

  auto unset_env = make_config(free_port());
  unset_env["apps"]["hr"] = {{"corpid", corpid}, {"secret_env", "TOKEN_BROKER_TEST_UNSET_SECRET"}};
  const auto env_config = scratch_.write("env.json", unset_env.dump());
  const auto env_rejected = run_broker_command({"--config", env_config.string(), "--check"});
  EXPECT_EQ(env_rejected.exit_code, 2);
  EXPECT_NE(env_rejected.output.find("apps.hr.secret_env"), std::string::npos);

  // Whether a PEM file parses only a TLS context can tell: --check builds Redis's too.
  auto bad_pem = make_config(free_port());
  bad_pem["redis"] = {{"url", "rediss://127.0.0.1:6380"},
                      {"tls", {{"ca_file", scratch_.write("not-a-ca.pem", "not PEM")}}}};
  const auto pem_config = scratch_.write("pem.json", bad_pem.dump());
  const auto pem_rejected = run_broker_command({"--config", pem_config.string(), "--check"});
  EXPECT_EQ(pem_rejected.exit_code, 2);
  EXPECT_NE(pem_rejected.output.find("redis.tls.ca_file: not a usable PEM bundle"),
            std::string::npos)
      << pem_rejected.output;

  EXPECT_EQ(run_broker_command({"--config", "/nonexistent/config.json"}).exit_code, 2);
  EXPECT_EQ(run_broker_command({"--bogus"}).exit_code, 2);
}

}  // namespace
}  // namespace token_broker::testing
