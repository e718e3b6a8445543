// The HTTPS client against the fake of WeCom over real TLS: verification, the one deadline,
// base_url prefixes, kept-alive connections, POSTs, and classified failures that never carry
// the secret.
#include "token_broker/upstream/upstream_client.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "fake_wecom.hpp"

namespace token_broker {
namespace {

using namespace std::chrono_literals;
using fake::fault;
using fake::fault_kind;

constexpr const char* corpid = "wwtest";
// Characters that must be percent-encoded to survive a query string.
constexpr const char* secret = "s3cr+t/&=%x";

class upstream_client_test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tls_ = new fake::tls_material(fake::generate_tls_material()); }
  static void TearDownTestSuite() { delete tls_; }

  void SetUp() override {
    fake_ = std::make_unique<fake::fake_wecom>(fake::fake_options{.tls = *tls_});
    fake_->add_app(corpid, secret);
    ca_path_ = std::filesystem::temp_directory_path() /
               ("upstream-client-test-ca-" + std::to_string(getpid()) + ".pem");
    std::ofstream(ca_path_) << tls_->ca_pem;
  }
  void TearDown() override { std::filesystem::remove(ca_path_); }

  upstream_config config_for(const std::string& base_url) const {
    upstream_config config;
    config.base_url = base_url;
    const auto authority = base_url.substr(std::string("https://").size());
    const auto colon = authority.rfind(':');
    config.host = authority.substr(0, colon);
    config.port = authority.substr(colon + 1);
    config.ca_file = ca_path_;
    config.timeout = 1000ms;
    return config;
  }

  // Runs one fetch to completion; a hang fails the test instead of blocking it.
  fetch_result fetch(const upstream_config& config) {
    asio::io_context io;
    upstream_client client(config);
    std::optional<fetch_result> result;
    asio::co_spawn(io, client.fetch_token(corpid, secret),
                   [&](std::exception_ptr error, fetch_result fetched) {
                     if (!error) result = std::move(fetched);
                   });
    io.run_for(10s);
    if (!result) throw std::runtime_error("fetch did not complete");
    return *result;
  }

  // Runs `operation` to completion on `io`, which may hold work from earlier runs (idle
  // connections hold none); a hang fails the test instead of blocking it.
  template <typename T>
  static T run(asio::io_context& io, asio::awaitable<T> operation) {
    std::optional<T> result;
    asio::co_spawn(io, std::move(operation), [&](std::exception_ptr error, T value) {
      if (!error) result = std::move(value);
    });
    io.restart();
    io.run_for(10s);
    if (!result) throw std::runtime_error("call did not complete");
    return std::move(*result);
  }

  static const fetch_failure& failure(const fetch_result& result) {
    return std::get<fetch_failure>(result);
  }

  static fake::tls_material* tls_;
  std::unique_ptr<fake::fake_wecom> fake_;
  std::filesystem::path ca_path_;
};

fake::tls_material* upstream_client_test::tls_ = nullptr;

TEST_F(upstream_client_test, fetches_a_token_over_verified_tls) {
  const auto before = clock::now();
  const auto result = fetch(config_for(fake_->base_url()));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(result)) << failure(result).errmsg;
  const auto& token = std::get<fetched_token>(result);
  EXPECT_EQ(fake_->check(token.value), fake::token_status::valid);
  EXPECT_EQ(token.expires_in, 7200s);
  EXPECT_GE(token.sent_at, before);
  EXPECT_GE(token.received_at, token.sent_at);
  EXPECT_EQ(fake_->gettoken_calls(secret), 1) << "the percent-encoded secret arrived intact";
}

TEST_F(upstream_client_test, base_url_path_prefix_is_kept) {
  auto config = config_for(fake_->base_url());
  config.path_prefix = "/private/wecom";
  const auto result = fetch(config);
  EXPECT_TRUE(std::holds_alternative<fetched_token>(result));
}

TEST_F(upstream_client_test, an_untrusted_certificate_is_rejected_before_any_request) {
  const auto other_ca = std::filesystem::temp_directory_path() /
                        ("upstream-client-test-other-" + std::to_string(getpid()) + ".pem");
  std::ofstream(other_ca) << fake::generate_tls_material().ca_pem;
  auto config = config_for(fake_->base_url());
  config.ca_file = other_ca;
  const auto result = fetch(config);
  std::filesystem::remove(other_ca);
  EXPECT_NE(failure(result).errmsg.find("certificate rejected"), std::string::npos)
      << failure(result).errmsg;
  EXPECT_EQ(fake_->gettoken_calls(), 0);
}

TEST_F(upstream_client_test, a_certificate_for_another_host_is_rejected) {
  fake::fake_wecom elsewhere(fake::fake_options{.host = "127.0.0.2", .tls = *tls_});
  elsewhere.add_app(corpid, secret);
  auto config = config_for("https://127.0.0.2:" + std::to_string(elsewhere.port()));
  const auto result = fetch(config);
  EXPECT_NE(failure(result).errmsg.find("certificate rejected"), std::string::npos)
      << failure(result).errmsg;
  EXPECT_EQ(elsewhere.gettoken_calls(), 0);
}

TEST_F(upstream_client_test, one_deadline_covers_the_whole_call) {
  fake_->script_faults(secret, {fault{.kind = fault_kind::hang}});
  const auto started = std::chrono::steady_clock::now();
  const auto result = fetch(config_for(fake_->base_url()));
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_NE(failure(result).errmsg.find("did not answer within 1000 ms"), std::string::npos)
      << failure(result).errmsg;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 3s);
}

TEST_F(upstream_client_test, concurrent_calls_never_exceed_the_cap) {
  // Slow answers, so that calls pile up behind the cap instead of finishing one by one.
  fake::fake_wecom slow(fake::fake_options{.answer_delay = 30ms, .tls = *tls_});
  slow.add_app(corpid, secret);
  auto config = config_for(slow.base_url());
  config.timeout = 20s;  // room for the last in line, even under a sanitizer

  constexpr int callers = 50;
  asio::io_context io;
  upstream_client client(config, 4);
  int fetched = 0;
  std::vector<std::string> failures;
  for (int i = 0; i < callers; ++i) {
    asio::co_spawn(io, client.fetch_token(corpid, secret),
                   [&](std::exception_ptr error, fetch_result result) {
                     if (error) {
                       failures.push_back("exception");
                     } else if (std::holds_alternative<fetched_token>(result)) {
                       ++fetched;
                     } else {
                       failures.push_back(std::get<fetch_failure>(result).errmsg);
                     }
                   });
  }
  io.run_for(60s);
  EXPECT_EQ(fetched, callers) << (failures.empty() ? "" : failures.front());
  EXPECT_EQ(slow.gettoken_calls(), callers);
  EXPECT_EQ(slow.max_concurrent_gettoken_calls(), 4) << "overlapping, up to the cap and no more";
  EXPECT_EQ(client.calls().in_use(), 0u);
}

TEST_F(upstream_client_test, a_call_waits_in_line_for_a_slot_then_has_its_own_deadline) {
  // One slot, taken by a call that upstream never answers: that call ends at its deadline,
  // and the next one, which waited in line meanwhile, then reaches upstream and succeeds.
  fake_->script_faults(secret, {fault{.kind = fault_kind::hang}});
  asio::io_context io;
  upstream_client client(config_for(fake_->base_url()), 1);
  std::vector<fetch_result> results;
  std::vector<std::chrono::steady_clock::duration> took;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 2; ++i) {
    asio::co_spawn(io, client.fetch_token(corpid, secret),
                   [&](std::exception_ptr error, fetch_result result) {
                     if (error) return;
                     results.push_back(std::move(result));
                     took.push_back(std::chrono::steady_clock::now() - started);
                   });
  }
  io.run_for(10s);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(failure(results[0]).kind, failure_class::transient) << "the hung call timed out";
  EXPECT_GE(took[0], 900ms);
  EXPECT_TRUE(std::holds_alternative<fetched_token>(results[1])) << "then the one in line ran";
  EXPECT_GE(took[1], took[0]);
  EXPECT_LT(took[1], 3s);
  EXPECT_EQ(fake_->gettoken_calls(), 2);
  EXPECT_EQ(client.calls().in_use(), 0u);
}

TEST_F(upstream_client_test, failures_are_classified_and_never_carry_the_secret) {
  const std::vector<fault> faults = {
      fault{.kind = fault_kind::errcode, .errcode = 40013, .errmsg = "invalid corpid"},
      fault{.kind = fault_kind::html},
      fault{.kind = fault_kind::truncated_json},
      fault{.kind = fault_kind::http_500},
      fault{.kind = fault_kind::drop_connection},
  };
  fake_->script_faults(secret, faults);
  std::vector<fetch_failure> failures;
  for (std::size_t i = 0; i < faults.size(); ++i) {
    failures.push_back(failure(fetch(config_for(fake_->base_url()))));
  }
  EXPECT_EQ(failures[0].errcode, 40013);
  EXPECT_EQ(failures[0].kind, failure_class::configuration);
  for (std::size_t i = 1; i < failures.size(); ++i) {
    EXPECT_EQ(failures[i].errcode, local_failure_errcode) << failures[i].errmsg;
    EXPECT_EQ(failures[i].kind, failure_class::transient);
  }
  EXPECT_NE(failures[3].errmsg.find("HTTP 500"), std::string::npos);
  for (const auto& each : failures) {
    EXPECT_EQ(each.errmsg.find("s3cr"), std::string::npos) << each.errmsg;
    EXPECT_EQ(each.errmsg.find("gettoken?"), std::string::npos) << each.errmsg;
  }
  EXPECT_TRUE(std::holds_alternative<fetched_token>(fetch(config_for(fake_->base_url()))));
}

TEST_F(upstream_client_test, sequential_calls_share_one_kept_alive_connection) {
  constexpr int calls = 20;
  asio::io_context io;
  upstream_client client(config_for(fake_->base_url()));
  for (int i = 0; i < calls; ++i) {
    const auto result = run(io, client.fetch_token(corpid, secret));
    ASSERT_TRUE(std::holds_alternative<fetched_token>(result)) << failure(result).errmsg;
  }
  EXPECT_EQ(fake_->gettoken_calls(secret), calls);
  EXPECT_EQ(client.tls_handshakes(), 1u);
  EXPECT_EQ(fake_->tls_handshakes(), 1) << "upstream saw one connection";
}

TEST_F(upstream_client_test, a_connection_upstream_closed_while_idle_is_replaced) {
  asio::io_context io;
  upstream_client client(config_for(fake_->base_url()));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(run(io, client.fetch_token(corpid, secret))));
  fake_->close_idle_connections();  // a server's idle timeout
  const auto result = run(io, client.fetch_token(corpid, secret));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(result)) << failure(result).errmsg;
  EXPECT_EQ(fake_->gettoken_calls(secret), 2);
  EXPECT_EQ(client.tls_handshakes(), 2u);
  EXPECT_EQ(fake_->tls_handshakes(), 2);
  EXPECT_EQ(fake_->tls_resumed_handshakes(), 1) << "the new connection resumed the session";
}

TEST_F(upstream_client_test, a_connection_sends_each_request_without_waiting_for_acks) {
  asio::io_context io;
  connection_pool pool(config_for(fake_->base_url()));
  auto connected = run(io, pool.connect(std::chrono::steady_clock::now() + 1s, 1s));
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<tls_connection>>(connected));
  const auto& connection = *std::get<std::unique_ptr<tls_connection>>(connected);
  asio::ip::tcp::no_delay no_delay;
  connection.socket().get_option(no_delay);
  EXPECT_TRUE(no_delay.value()) << "Nagle's algorithm is off";
}

TEST_F(upstream_client_test, a_reused_connection_lost_before_the_answer_is_retried_once) {
  asio::io_context io;
  upstream_client client(config_for(fake_->base_url()));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(run(io, client.fetch_token(corpid, secret))));

  // Upstream reads the request on the kept-alive connection and drops it: sent once more, on
  // a new connection.
  fake_->script_faults(secret, {fault{.kind = fault_kind::drop_connection}});
  const auto retried = run(io, client.fetch_token(corpid, secret));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(retried)) << failure(retried).errmsg;
  EXPECT_EQ(fake_->gettoken_calls(secret), 3);
  EXPECT_EQ(client.tls_handshakes(), 2u);

  // Once only: the new connection's failure is the call's.
  fake_->script_faults(secret, {fault{.kind = fault_kind::drop_connection},
                                fault{.kind = fault_kind::drop_connection}});
  const auto dropped = run(io, client.fetch_token(corpid, secret));
  ASSERT_TRUE(std::holds_alternative<fetch_failure>(dropped));
  EXPECT_EQ(failure(dropped).kind, failure_class::transient);
  EXPECT_NE(failure(dropped).errmsg.find("upstream answer failed"), std::string::npos)
      << failure(dropped).errmsg;
  EXPECT_EQ(fake_->gettoken_calls(secret), 5);
  EXPECT_EQ(client.tls_handshakes(), 3u);
}

TEST_F(upstream_client_test, the_deadline_bounds_a_call_on_a_reused_connection) {
  asio::io_context io;
  upstream_client client(config_for(fake_->base_url()));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(run(io, client.fetch_token(corpid, secret))));
  fake_->script_faults(secret, {fault{.kind = fault_kind::hang}});
  const auto started = std::chrono::steady_clock::now();
  const auto result = run(io, client.fetch_token(corpid, secret));
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_NE(failure(result).errmsg.find("did not answer within 1000 ms"), std::string::npos)
      << failure(result).errmsg;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 3s);
  EXPECT_EQ(fake_->gettoken_calls(secret), 2) << "a timed-out request is not sent again";

  // The timed-out connection is not reused: the next call opens one and succeeds.
  EXPECT_TRUE(std::holds_alternative<fetched_token>(run(io, client.fetch_token(corpid, secret))));
  EXPECT_EQ(client.tls_handshakes(), 2u);
}

TEST_F(upstream_client_test, a_post_carries_its_json_body_on_the_same_connection) {
  asio::io_context io;
  upstream_client client(config_for(fake_->base_url()));
  ASSERT_TRUE(std::holds_alternative<fetched_token>(run(io, client.fetch_token(corpid, secret))));

  fake_->service().add_suite("wwsuite", "x", "token", std::string(43, 'k'));
  const auto ticket = fake_->service().issue_suite_ticket("wwsuite");
  const std::string body =
      R"({"suite_id":"wwsuite","suite_secret":"x","suite_ticket":")" + ticket + R"("})";
  const auto result =
      run(io, client.call(upstream_request{.method = http::verb::post,
                                           .target = "/cgi-bin/service/get_suite_token",
                                           .json_body = body}));
  ASSERT_TRUE(std::holds_alternative<upstream_response>(result))
      << std::get<fetch_failure>(result).errmsg;
  const auto& response = std::get<upstream_response>(result);
  EXPECT_EQ(response.status, 200u);
  const auto answer = nlohmann::json::parse(response.body);
  EXPECT_EQ(answer["errcode"], 0) << response.body;
  EXPECT_TRUE(answer["suite_access_token"].is_string()) << response.body;
  EXPECT_EQ(fake_->suite_token_requests(), std::vector<std::string>{body});
  EXPECT_EQ(client.tls_handshakes(), 1u);
}

TEST_F(upstream_client_test, any_status_is_returned_to_the_caller_of_a_generic_call) {
  asio::io_context io;
  upstream_client client(config_for(fake_->base_url()));
  const auto result = run(io, client.call(upstream_request{.target = "/cgi-bin/no_such_api"}));
  ASSERT_TRUE(std::holds_alternative<upstream_response>(result));
  EXPECT_EQ(std::get<upstream_response>(result).status, 404u);
  // A 404 is framed and complete: the connection stays for the next call.
  EXPECT_TRUE(std::holds_alternative<fetched_token>(run(io, client.fetch_token(corpid, secret))));
  EXPECT_EQ(client.tls_handshakes(), 1u);
}

TEST_F(upstream_client_test, connection_refused_is_a_transient_failure) {
  const auto port = fake_->port();
  fake_.reset();  // nothing listens there now
  const auto result = fetch(config_for("https://localhost:" + std::to_string(port)));
  EXPECT_NE(failure(result).errmsg.find("connect failed"), std::string::npos)
      << failure(result).errmsg;
}

TEST_F(upstream_client_test, a_ca_file_that_is_not_pem_is_a_config_error) {
  const auto garbage = std::filesystem::temp_directory_path() /
                       ("upstream-client-test-garbage-" + std::to_string(getpid()) + ".pem");
  std::ofstream(garbage) << "not a certificate\n";
  auto config = config_for(fake_->base_url());
  config.ca_file = garbage;
  try {
    upstream_client client(config);
    ADD_FAILURE() << "accepted a CA file that is not PEM";
  } catch (const config_error& error) {
    EXPECT_EQ(error.field(), "upstream.ca_file");
  }
  std::filesystem::remove(garbage);
}

}  // namespace
}  // namespace token_broker
