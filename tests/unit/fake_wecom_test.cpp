// The fake of WeCom seen through a real TLS client, as the broker will see it.
#include "fake_wecom.hpp"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "token_broker/core/asio.hpp"

namespace token_broker::fake {
namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;
using std::chrono::steady_clock;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

const std::string corpid = "ww0123456789abcdef";
const std::string secret_a = "secret-a";
const std::string secret_b = "secret-b";

// Key generation is cheap but not free; one PKI serves every test that does not need its own.
const tls_material& shared_tls() {
  static const tls_material material = generate_tls_material();
  return material;
}

std::unique_ptr<fake_wecom> start_fake(
    expiry_behaviour behaviour = expiry_behaviour::new_token_each_call,
    std::chrono::seconds lifetime = 7200s) {
  auto fake = std::make_unique<fake_wecom>(
      fake_options{.behaviour = behaviour, .lifetime = lifetime, .tls = shared_tls()});
  fake->add_app(corpid, secret_a);
  fake->add_app(corpid, secret_b);
  return fake;
}

std::string gettoken_target(const std::string& id, const std::string& secret) {
  return "/cgi-bin/gettoken?corpid=" + id + "&corpsecret=" + secret;
}

struct client_options {
  std::string trusted_ca_pem = shared_tls().ca_pem;
  std::string verify_host = "localhost";  // the name the certificate must carry
  steady_clock::duration deadline = 5s;   // for the whole exchange
  std::uint64_t body_limit = 64 * 1024;   // of each answer
};

struct exchange_result {
  error_code error;                 // the step that failed, if one did
  long verify_result = X509_V_OK;   // the client's verdict on the server's certificate
  std::vector<response> responses;  // one per request answered before any failure
};

// Sends each request in turn over one TLS connection to 127.0.0.1, verifying the server the way
// the broker does: a chosen CA, SNI and a host name check.
asio::awaitable<void> run_exchange(std::uint16_t port, asio::ssl::context& tls,
                                   const client_options& options, std::vector<request> requests,
                                   exchange_result& result) {
  const auto on_error = asio::as_tuple(asio::use_awaitable);
  beast::ssl_stream<beast::tcp_stream> stream(co_await asio::this_coro::executor, tls);
  auto& transport = beast::get_lowest_layer(stream);
  transport.expires_after(options.deadline);

  const tcp::endpoint server(asio::ip::make_address("127.0.0.1"), port);
  auto [connect_error] = co_await transport.async_connect(server, on_error);
  if (connect_error) {
    result.error = connect_error;
    co_return;
  }

  if (!SSL_set_tlsext_host_name(stream.native_handle(), "localhost")) {
    throw std::runtime_error("cannot set SNI");
  }
  stream.set_verify_callback(asio::ssl::host_name_verification(options.verify_host));
  auto [handshake_error] =
      co_await stream.async_handshake(asio::ssl::stream_base::client, on_error);
  if (handshake_error) {
    result.error = handshake_error;
    result.verify_result = SSL_get_verify_result(stream.native_handle());
    co_return;
  }

  beast::flat_buffer buffer;
  for (auto& next : requests) {
    next.set(http::field::host, "localhost:" + std::to_string(port));
    next.prepare_payload();
    auto [write_error, written] = co_await http::async_write(stream, next, on_error);
    if (write_error) {
      result.error = write_error;
      co_return;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(options.body_limit);
    auto [read_error, read] = co_await http::async_read(stream, buffer, parser, on_error);
    if (read_error) {
      result.error = read_error;
      co_return;
    }
    result.responses.push_back(parser.release());
  }
  // No close_notify exchange: the answers are complete, and the fake must cope with peers
  // that just drop the connection.
}

exchange_result exchange_requests(std::uint16_t port, std::vector<request> requests,
                                  const client_options& options = {}) {
  asio::io_context io;
  asio::ssl::context tls(asio::ssl::context::tls_client);
  tls.add_certificate_authority(asio::buffer(options.trusted_ca_pem));
  tls.set_verify_mode(asio::ssl::verify_peer);

  exchange_result result;
  const auto rethrow = [](const std::exception_ptr& failure) {
    if (failure) std::rethrow_exception(failure);
  };
  asio::co_spawn(io, run_exchange(port, tls, options, std::move(requests), result), rethrow);
  io.run();
  return result;
}

exchange_result exchange(std::uint16_t port, const std::vector<std::string>& targets,
                         const client_options& options = {}) {
  std::vector<request> requests;
  for (const auto& target : targets) requests.emplace_back(http::verb::get, target, 11);
  return exchange_requests(port, std::move(requests), options);
}

exchange_result fetch(const fake_wecom& fake, const std::string& target,
                      const client_options& options = {}) {
  return exchange(fake.port(), {target}, options);
}

// One gettoken call that must come back as HTTP 200 JSON; its body, parsed.
nlohmann::json gettoken(const fake_wecom& fake, const std::string& secret,
                        const std::string& id = corpid) {
  const auto result = fetch(fake, gettoken_target(id, secret));
  EXPECT_FALSE(result.error) << result.error.message();
  if (result.responses.size() != 1) return nullptr;
  const auto& answer = result.responses.front();
  EXPECT_EQ(answer.result(), http::status::ok);
  EXPECT_TRUE(answer[http::field::content_type].starts_with("application/json"));
  return nlohmann::json::parse(answer.body());
}

bool is_token_character(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
}

constexpr ticket_kind both_kinds[] = {ticket_kind::jsapi, ticket_kind::agent_config};

std::string ticket_target(ticket_kind kind, const std::string& access_token) {
  return kind == ticket_kind::jsapi
             ? "/cgi-bin/get_jsapi_ticket?access_token=" + access_token
             : "/cgi-bin/ticket/get?access_token=" + access_token + "&type=agent_config";
}

// One JSON answer over TLS, as gettoken() does: its raw body.
std::string json_body(const fake_wecom& fake, const std::string& target) {
  const auto result = fetch(fake, target);
  EXPECT_FALSE(result.error) << result.error.message();
  if (result.responses.size() != 1) return {};
  const auto& answer = result.responses.front();
  EXPECT_EQ(answer.result(), http::status::ok);
  EXPECT_TRUE(answer[http::field::content_type].starts_with("application/json"));
  return answer.body();
}

nlohmann::json get_ticket(const fake_wecom& fake, ticket_kind kind,
                          const std::string& access_token) {
  return nlohmann::json::parse(json_body(fake, ticket_target(kind, access_token)));
}

std::string token_of(const fake_wecom& fake, const std::string& secret) {
  return gettoken(fake, secret)["access_token"].get<std::string>();
}

std::string ticket_of(const fake_wecom& fake, ticket_kind kind, const std::string& access_token) {
  return get_ticket(fake, kind, access_token)["ticket"].get<std::string>();
}

// The fake's lifetimes run in real time: a test that must see one end polls for it.
template <class Condition>
bool eventually(Condition done, steady_clock::duration limit = 3s) {
  const auto deadline = steady_clock::now() + limit;
  while (!done()) {
    if (steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

TEST(fake_wecom, answers_gettoken_in_wecom_shape) {
  const auto fake = start_fake();
  const auto answer = gettoken(*fake, secret_a);

  EXPECT_EQ(answer["errcode"], 0);
  EXPECT_EQ(answer["errmsg"], "ok");
  EXPECT_EQ(answer["expires_in"], 7200);
  const auto token = answer["access_token"].get<std::string>();
  EXPECT_GE(token.size(), 64u);
  EXPECT_TRUE(std::all_of(token.begin(), token.end(), is_token_character)) << token;
  EXPECT_EQ(fake->check(token), token_status::valid);
}

TEST(fake_wecom, base_url_names_localhost_and_the_bound_port) {
  const auto fake = start_fake();
  EXPECT_NE(fake->port(), 0);
  EXPECT_EQ(fake->base_url(), "https://localhost:" + std::to_string(fake->port()));
}

TEST(fake_wecom, serves_under_a_path_prefix_and_url_decodes_parameters) {
  const auto fake = start_fake();
  fake->add_app("ww corp", "s3cr+t/&=%");

  const auto result = fetch(
      *fake, "/private/gateway/cgi-bin/gettoken?corpid=ww+corp&corpsecret=s3cr%2Bt%2F%26%3D%25");
  ASSERT_FALSE(result.error) << result.error.message();
  ASSERT_EQ(result.responses.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(result.responses[0].body())["errcode"], 0);
  EXPECT_EQ(fake->gettoken_calls("s3cr+t/&=%"), 1);
}

TEST(fake_wecom, rejects_bad_credentials_like_wecom) {
  const auto fake = start_fake();
  EXPECT_EQ(gettoken(*fake, secret_a, "wwunknown")["errcode"], 40013);
  EXPECT_EQ(gettoken(*fake, "wrong-secret")["errcode"], 40001);

  const auto no_corpid = fetch(*fake, "/cgi-bin/gettoken?corpsecret=" + secret_a);
  ASSERT_EQ(no_corpid.responses.size(), 1u);
  EXPECT_EQ(no_corpid.responses[0].result(), http::status::ok);
  EXPECT_EQ(no_corpid.responses[0].body(), R"({"errcode":41002,"errmsg":"corpid missing"})");

  const auto no_secret = fetch(*fake, "/cgi-bin/gettoken?corpid=" + corpid);
  ASSERT_EQ(no_secret.responses.size(), 1u);
  EXPECT_EQ(no_secret.responses[0].body(), R"({"errcode":41004,"errmsg":"corpsecret missing"})");
}

TEST(fake_wecom, same_token_keeps_expiry_repeats_full_lifetime_until_the_token_expires) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry, 2s);
  const auto first = gettoken(*fake, secret_a);
  const auto issued_by = steady_clock::now();
  EXPECT_EQ(first["expires_in"], 2);

  std::this_thread::sleep_for(1200ms);
  const auto second = gettoken(*fake, secret_a);
  EXPECT_EQ(second["access_token"], first["access_token"]);
  EXPECT_EQ(second["expires_in"], 2);  // yet the token's expiry has not moved:

  std::this_thread::sleep_until(issued_by + 2050ms);
  EXPECT_EQ(fake->check(first["access_token"]), token_status::expired);
  const auto third = gettoken(*fake, secret_a);
  EXPECT_NE(third["access_token"], first["access_token"]);
  EXPECT_EQ(third["expires_in"], 2);
}

TEST(fake_wecom, expires_at_is_the_issued_expiry_whatever_later_answers_claim) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry, 60s);
  const auto before = std::chrono::system_clock::now();
  const auto token = gettoken(*fake, secret_a)["access_token"].get<std::string>();
  const auto after = std::chrono::system_clock::now();
  const auto issued_expiry = fake->expires_at(token);
  ASSERT_TRUE(issued_expiry.has_value());
  EXPECT_GE(*issued_expiry, before + 60s);
  EXPECT_LE(*issued_expiry, after + 60s);

  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(gettoken(*fake, secret_a)["expires_in"], 60);  // the answer claims a full lifetime
  EXPECT_EQ(fake->expires_at(token), issued_expiry);
  EXPECT_FALSE(fake->expires_at("never-issued").has_value());
}

TEST(fake_wecom, same_token_seconds_left_answers_whole_seconds_remaining) {
  const auto fake = start_fake(expiry_behaviour::same_token_seconds_left, 2s);
  const auto first = gettoken(*fake, secret_a);
  EXPECT_EQ(first["expires_in"], 2);

  std::this_thread::sleep_for(600ms);
  const auto second = gettoken(*fake, secret_a);
  EXPECT_EQ(second["access_token"], first["access_token"]);
  EXPECT_EQ(second["expires_in"], 1);  // 1.4 s left, floored
}

TEST(fake_wecom, new_token_each_call_leaves_older_tokens_valid) {
  const auto fake = start_fake(expiry_behaviour::new_token_each_call, 60s);
  const auto first = gettoken(*fake, secret_a);
  const auto second = gettoken(*fake, secret_a);

  EXPECT_NE(first["access_token"], second["access_token"]);
  EXPECT_EQ(second["expires_in"], 60);
  EXPECT_EQ(fake->check(first["access_token"]), token_status::valid);
  EXPECT_EQ(fake->check(second["access_token"]), token_status::valid);
}

TEST(fake_wecom, secrets_have_tokens_of_their_own) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry);
  EXPECT_NE(gettoken(*fake, secret_a)["access_token"], gettoken(*fake, secret_b)["access_token"]);
}

TEST(fake_wecom, set_behaviour_and_set_lifetime_apply_to_later_calls) {
  const auto fake = start_fake(expiry_behaviour::new_token_each_call);
  fake->set_behaviour(expiry_behaviour::same_token_keeps_expiry);
  fake->set_lifetime(30s);
  const auto first = gettoken(*fake, secret_a);
  EXPECT_EQ(first["expires_in"], 30);
  EXPECT_EQ(gettoken(*fake, secret_a)["access_token"], first["access_token"]);
}

TEST(fake_wecom, check_reports_expired_after_the_lifetime) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry, 1s);
  const auto token = gettoken(*fake, secret_a)["access_token"].get<std::string>();
  std::this_thread::sleep_for(1100ms);

  EXPECT_EQ(fake->check(token), token_status::expired);
  const auto result = fetch(*fake, "/cgi-bin/user/get?access_token=" + token);
  ASSERT_EQ(result.responses.size(), 1u);
  EXPECT_EQ(result.responses[0].body(), R"({"errcode":42001,"errmsg":"access_token expired"})");
}

TEST(fake_wecom, user_get_answers_the_user_like_wecom) {
  const auto fake = start_fake();
  const auto token = gettoken(*fake, secret_a)["access_token"].get<std::string>();

  const auto result = exchange(
      fake->port(), {"/cgi-bin/user/get?access_token=" + token + "&userid=zhangsan",
                     "/cgi-bin/user/get?access_token=made-up&userid=x",
                     "/cgi-bin/user/get?userid=x", "/cgi-bin/user/get?access_token=" + token,
                     "/prefix/cgi-bin/user/get?access_token=" + token + "&userid=lisi"});
  ASSERT_EQ(result.responses.size(), 5u);
  EXPECT_EQ(result.responses[0].body(),
            R"({"errcode":0,"errmsg":"ok","userid":"zhangsan","name":"Fake User zhangsan"})");
  EXPECT_EQ(result.responses[1].body(), R"({"errcode":40014,"errmsg":"invalid access_token"})");
  EXPECT_EQ(result.responses[2].body(), R"({"errcode":41001,"errmsg":"access_token missing"})");
  EXPECT_EQ(result.responses[3].body(), R"({"errcode":41009,"errmsg":"missing userid"})");
  EXPECT_EQ(nlohmann::json::parse(result.responses[4].body())["userid"], "lisi");
  EXPECT_EQ(fake->check("made-up"), token_status::invalid);
  EXPECT_EQ(to_string(token_status::expired), "expired");
}

TEST(fake_wecom, revoke_invalidates_tokens_and_the_next_call_issues_a_new_one) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry);
  const auto before = gettoken(*fake, secret_a)["access_token"].get<std::string>();
  const auto other_app = gettoken(*fake, secret_b)["access_token"].get<std::string>();

  fake->revoke_tokens(secret_a);
  EXPECT_EQ(fake->check(before), token_status::invalid);
  EXPECT_EQ(fake->check(other_app), token_status::valid);

  const auto after = gettoken(*fake, secret_a)["access_token"].get<std::string>();
  EXPECT_NE(after, before);
  EXPECT_EQ(fake->check(after), token_status::valid);
}

TEST(fake_wecom, errcode_fault_answers_the_scripted_error_then_recovers) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.errcode = 45009, .errmsg = "api freq out of limit"}});

  const auto failed = gettoken(*fake, secret_a);
  EXPECT_EQ(failed["errcode"], 45009);
  EXPECT_EQ(failed["errmsg"], "api freq out of limit");
  EXPECT_FALSE(failed.contains("access_token"));
  EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], 0);
}

TEST(fake_wecom, html_fault_answers_an_html_page) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::html}});

  const auto result = fetch(*fake, gettoken_target(corpid, secret_a));
  ASSERT_EQ(result.responses.size(), 1u);
  EXPECT_EQ(result.responses[0].result(), http::status::ok);
  EXPECT_TRUE(result.responses[0][http::field::content_type].starts_with("text/html"));
  EXPECT_TRUE(result.responses[0].body().starts_with("<!DOCTYPE html>"));
}

TEST(fake_wecom, truncated_json_fault_cuts_the_body) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::truncated_json}});

  const auto result = fetch(*fake, gettoken_target(corpid, secret_a));
  ASSERT_EQ(result.responses.size(), 1u);
  EXPECT_EQ(result.responses[0].result(), http::status::ok);
  EXPECT_TRUE(result.responses[0][http::field::content_type].starts_with("application/json"));
  EXPECT_TRUE(result.responses[0].body().starts_with(R"({"errcode":0)"));
  EXPECT_FALSE(nlohmann::json::accept(result.responses[0].body()));
}

TEST(fake_wecom, http_500_fault_answers_500) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::http_500}});

  const auto result = fetch(*fake, gettoken_target(corpid, secret_a));
  ASSERT_EQ(result.responses.size(), 1u);
  EXPECT_EQ(result.responses[0].result(), http::status::internal_server_error);
}

TEST(fake_wecom, drop_connection_fault_closes_without_an_answer) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::drop_connection}});

  const auto result = fetch(*fake, gettoken_target(corpid, secret_a));
  EXPECT_TRUE(result.responses.empty());
  EXPECT_TRUE(result.error == http::error::end_of_stream ||
              result.error == asio::ssl::error::stream_truncated)
      << result.error.message();
}

TEST(fake_wecom, delay_fault_answers_normally_after_the_delay) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::delay, .delay = 300ms}});

  const auto started = steady_clock::now();
  const auto answer = gettoken(*fake, secret_a);
  const auto took = steady_clock::now() - started;
  EXPECT_EQ(answer["errcode"], 0);
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 3s);
}

TEST(fake_wecom, delay_fault_holds_back_one_connection_only) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::delay, .delay = 1s}});

  std::thread slow([&] { EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], 0); });
  while (fake->gettoken_calls(secret_a) == 0) std::this_thread::sleep_for(5ms);
  const auto started = steady_clock::now();
  EXPECT_EQ(gettoken(*fake, secret_b)["errcode"], 0);
  EXPECT_LT(steady_clock::now() - started, 500ms);
  slow.join();
}

TEST(fake_wecom, hang_fault_never_answers) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::hang}});

  const auto result =
      fetch(*fake, gettoken_target(corpid, secret_a), client_options{.deadline = 500ms});
  EXPECT_EQ(result.error, beast::error::timeout) << result.error.message();
  EXPECT_TRUE(result.responses.empty());
  EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], 0);  // the fake itself is not stuck
}

TEST(fake_wecom, destruction_does_not_wait_for_a_hung_connection) {
  auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::hang}});

  exchange_result result;
  std::thread client(
      [&, port = fake->port()] { result = exchange(port, {gettoken_target(corpid, secret_a)}); });
  while (fake->gettoken_calls(secret_a) == 0) std::this_thread::sleep_for(5ms);

  const auto started = steady_clock::now();
  fake.reset();
  EXPECT_LT(steady_clock::now() - started, 1s);
  client.join();
  EXPECT_TRUE(result.error);
  EXPECT_NE(result.error, beast::error::timeout);  // the peer saw the connection close
}

TEST(fake_wecom, faults_are_per_secret_and_in_order) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.errcode = -1, .errmsg = "system busy"},
                                 fault{.errcode = 45009, .errmsg = "api freq out of limit"}});

  EXPECT_EQ(gettoken(*fake, secret_b)["errcode"], 0);
  EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], -1);
  EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], 45009);
  EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], 0);
}

TEST(fake_wecom, counts_every_gettoken_call) {
  const auto fake = start_fake();
  fake->script_faults(secret_a, {fault{.kind = fault_kind::http_500}});

  fetch(*fake, gettoken_target(corpid, secret_a));  // faulty
  gettoken(*fake, secret_a);
  gettoken(*fake, secret_b);
  gettoken(*fake, "wrong-secret");
  fetch(*fake, "/cgi-bin/user/get?access_token=x");  // not a gettoken call

  EXPECT_EQ(fake->gettoken_calls(secret_a), 2);
  EXPECT_EQ(fake->gettoken_calls(secret_b), 1);
  EXPECT_EQ(fake->gettoken_calls("never-used"), 0);
  EXPECT_EQ(fake->gettoken_calls(), 4);
}

TEST(fake_wecom, keeps_a_connection_alive_across_requests) {
  const auto fake = start_fake();
  const auto result = exchange(
      fake->port(), {gettoken_target(corpid, secret_a), gettoken_target(corpid, secret_b)});
  ASSERT_FALSE(result.error) << result.error.message();
  EXPECT_EQ(result.responses.size(), 2u);
  EXPECT_EQ(fake->gettoken_calls(), 2);
}

TEST(fake_wecom, counts_tls_handshakes_once_per_connection) {
  const auto fake = start_fake();
  exchange(fake->port(),
           {gettoken_target(corpid, secret_a), gettoken_target(corpid, secret_b)});  // one
  gettoken(*fake, secret_a);                                                         // two
  fetch(*fake, gettoken_target(corpid, secret_a),
        client_options{.trusted_ca_pem = generate_tls_material().ca_pem});  // refused: none
  EXPECT_EQ(fake->tls_handshakes(), 2);

  // The stats request's own connection counts too: the third.
  const auto stats = fetch(*fake, "/fake/stats");
  ASSERT_EQ(stats.responses.size(), 1u);
  const auto body = nlohmann::json::parse(stats.responses[0].body());
  EXPECT_EQ(body["tls_handshakes"], 3);
  EXPECT_EQ(body["gettoken_calls"], 3);
}

TEST(fake_wecom, answers_404_elsewhere) {
  const auto fake = start_fake();
  const auto result = fetch(*fake, "/cgi-bin/gettoken/extra?corpid=x");
  ASSERT_EQ(result.responses.size(), 1u);
  EXPECT_EQ(result.responses[0].result(), http::status::not_found);
  EXPECT_EQ(fake->gettoken_calls(), 0);
}

TEST(fake_wecom, certificate_is_valid_for_127_0_0_1_too) {
  const auto fake = start_fake();
  const auto result =
      fetch(*fake, gettoken_target(corpid, secret_a), client_options{.verify_host = "127.0.0.1"});
  EXPECT_FALSE(result.error) << result.error.message();
}

TEST(fake_wecom, client_trusting_another_ca_fails_verification) {
  const auto fake = start_fake();
  const auto other = generate_tls_material();

  const auto result = fetch(*fake, gettoken_target(corpid, secret_a),
                            client_options{.trusted_ca_pem = other.ca_pem});
  EXPECT_EQ(result.error.category(), asio::error::get_ssl_category()) << result.error.message();
  EXPECT_EQ(result.verify_result, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  EXPECT_EQ(fake->gettoken_calls(), 0);
}

TEST(fake_wecom, answers_both_ticket_endpoints_in_wecom_shape) {
  const auto fake = start_fake();
  const auto token = token_of(*fake, secret_a);
  for (const auto kind : both_kinds) {
    SCOPED_TRACE(to_string(kind));
    const auto answer = get_ticket(*fake, kind, token);
    EXPECT_EQ(answer["errcode"], 0);
    EXPECT_EQ(answer["errmsg"], "ok");
    EXPECT_EQ(answer["expires_in"], 7200);
    const auto ticket = answer["ticket"].get<std::string>();
    EXPECT_TRUE(ticket.starts_with(kind == ticket_kind::jsapi ? "jsapi-" : "agent-"));
    EXPECT_GE(ticket.size(), 64u);
    EXPECT_TRUE(std::all_of(ticket.begin(), ticket.end(), is_token_character));
    EXPECT_EQ(fake->check_ticket(kind, ticket), token_status::valid);
    EXPECT_TRUE(fake->expires_at(ticket).has_value());
    EXPECT_EQ(fake->issued_tickets(secret_a, kind), std::vector{ticket});
    EXPECT_EQ(fake->ticket_calls(secret_a, kind), 1);
  }
  EXPECT_EQ(fake->ticket_calls(), 2);
  EXPECT_EQ(fake->gettoken_calls(), 1);
}

TEST(fake_wecom, tickets_are_apart_by_app_and_kind) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry);
  const auto token_a = token_of(*fake, secret_a);
  const auto jsapi_a = ticket_of(*fake, ticket_kind::jsapi, token_a);
  const auto agent_a = ticket_of(*fake, ticket_kind::agent_config, token_a);
  const auto jsapi_b = ticket_of(*fake, ticket_kind::jsapi, token_of(*fake, secret_b));

  EXPECT_NE(jsapi_a, agent_a);
  EXPECT_NE(jsapi_a, jsapi_b);
  // A ticket is good only as what it is: not as the other kind, not as an access token.
  EXPECT_EQ(fake->check_ticket(ticket_kind::agent_config, jsapi_a), token_status::invalid);
  EXPECT_EQ(fake->check_ticket(ticket_kind::jsapi, agent_a), token_status::invalid);
  EXPECT_EQ(fake->check_ticket(ticket_kind::jsapi, token_a), token_status::invalid);
  EXPECT_EQ(fake->check(jsapi_a), token_status::invalid);
  EXPECT_EQ(json_body(*fake, "/cgi-bin/user/get?access_token=" + jsapi_a),
            R"({"errcode":40014,"errmsg":"invalid access_token"})");
  EXPECT_EQ(get_ticket(*fake, ticket_kind::jsapi, jsapi_a)["errcode"], 40014);

  EXPECT_EQ(fake->ticket_calls(secret_a, ticket_kind::jsapi), 1);
  EXPECT_EQ(fake->ticket_calls(secret_a, ticket_kind::agent_config), 1);
  EXPECT_EQ(fake->ticket_calls(secret_b, ticket_kind::jsapi), 1);
  EXPECT_EQ(fake->ticket_calls(secret_b, ticket_kind::agent_config), 0);
}

TEST(fake_wecom, same_token_keeps_expiry_repeats_the_ticket_with_the_full_lifetime) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry);
  for (const auto kind : both_kinds) {
    SCOPED_TRACE(to_string(kind));
    const auto first = get_ticket(*fake, kind, token_of(*fake, secret_a));
    const auto ticket = first["ticket"].get<std::string>();
    const auto issued_expiry = fake->expires_at(ticket);
    const auto second = get_ticket(*fake, kind, token_of(*fake, secret_a));
    EXPECT_EQ(second["ticket"], ticket);
    // A full lifetime claimed although time has passed: (b) would answer 7199 here.
    EXPECT_EQ(second["expires_in"], 7200);
    EXPECT_EQ(fake->expires_at(ticket), issued_expiry);
  }
}

TEST(fake_wecom, same_token_keeps_expiry_issues_a_new_ticket_once_it_expires) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry);
  fake->set_ticket_lifetime(1s);  // the token lives on: only the tickets expire
  const auto token = token_of(*fake, secret_a);
  std::map<ticket_kind, std::string> first;
  for (const auto kind : both_kinds) first[kind] = ticket_of(*fake, kind, token);
  for (const auto kind : both_kinds) {
    EXPECT_EQ(get_ticket(*fake, kind, token)["ticket"], first[kind]);
  }

  ASSERT_TRUE(eventually([&] {
    return fake->check_ticket(ticket_kind::jsapi, first[ticket_kind::jsapi]) ==
               token_status::expired &&
           fake->check_ticket(ticket_kind::agent_config, first[ticket_kind::agent_config]) ==
               token_status::expired;
  }));
  for (const auto kind : both_kinds) {
    SCOPED_TRACE(to_string(kind));
    const auto next = get_ticket(*fake, kind, token);
    EXPECT_NE(next["ticket"], first[kind]);
    EXPECT_EQ(next["expires_in"], 1);
    EXPECT_EQ(fake->check(token), token_status::valid);
  }
}

TEST(fake_wecom, same_token_seconds_left_repeats_the_ticket_with_the_seconds_left) {
  const auto fake = start_fake(expiry_behaviour::same_token_seconds_left);
  const auto token = token_of(*fake, secret_a);
  for (const auto kind : both_kinds) {
    SCOPED_TRACE(to_string(kind));
    const auto ticket = ticket_of(*fake, kind, token);
    const auto expiry = fake->expires_at(ticket).value();
    const auto before = std::chrono::system_clock::now();
    const auto second = get_ticket(*fake, kind, token);
    const auto after = std::chrono::system_clock::now();
    EXPECT_EQ(second["ticket"], ticket);
    // Whole seconds left when the fake answered, floored: already below the full 7200.
    const auto left = second["expires_in"].get<long>();
    EXPECT_LT(left, 7200);
    EXPECT_GE(left, std::chrono::duration_cast<std::chrono::seconds>(expiry - after).count());
    EXPECT_LE(left, std::chrono::duration_cast<std::chrono::seconds>(expiry - before).count());
  }
}

TEST(fake_wecom, new_token_each_call_issues_a_new_ticket_and_older_ones_stay_valid) {
  const auto fake = start_fake(expiry_behaviour::new_token_each_call);
  const auto token = token_of(*fake, secret_a);
  for (const auto kind : both_kinds) {
    SCOPED_TRACE(to_string(kind));
    const auto first = ticket_of(*fake, kind, token);
    const auto answer = get_ticket(*fake, kind, token);
    const auto second = answer["ticket"].get<std::string>();
    EXPECT_NE(second, first);
    EXPECT_EQ(answer["expires_in"], 7200);
    EXPECT_EQ(fake->check_ticket(kind, first), token_status::valid);
    EXPECT_EQ(fake->check_ticket(kind, second), token_status::valid);
    EXPECT_EQ(fake->issued_tickets(secret_a, kind), (std::vector{first, second}));
  }
}

TEST(fake_wecom, ticket_calls_with_an_expired_token_answer_42001) {
  const auto fake = start_fake();
  fake->set_lifetime(0s);  // issued already expired: no waiting
  const auto token = token_of(*fake, secret_a);
  ASSERT_EQ(fake->check(token), token_status::expired);
  for (const auto kind : both_kinds) {
    EXPECT_EQ(json_body(*fake, ticket_target(kind, token)),
              R"({"errcode":42001,"errmsg":"access_token expired"})");
    EXPECT_EQ(fake->ticket_calls(secret_a, kind), 1);  // refused, and counted
    EXPECT_TRUE(fake->issued_tickets(secret_a, kind).empty());
  }
}

TEST(fake_wecom, ticket_calls_with_an_unknown_revoked_or_missing_token_are_refused) {
  const auto fake = start_fake();
  const auto revoked = token_of(*fake, secret_a);
  fake->revoke_tokens(secret_a);
  for (const auto kind : both_kinds) {
    SCOPED_TRACE(to_string(kind));
    EXPECT_EQ(json_body(*fake, ticket_target(kind, revoked)),
              R"({"errcode":40014,"errmsg":"invalid access_token"})");
    EXPECT_EQ(json_body(*fake, ticket_target(kind, "made-up")),
              R"({"errcode":40014,"errmsg":"invalid access_token"})");
    EXPECT_EQ(get_ticket(*fake, kind, "")["errcode"], 41001);
    // The revoked token still names its app; the made-up and missing ones name none.
    EXPECT_EQ(fake->ticket_calls(secret_a, kind), 1);
    EXPECT_EQ(fake->ticket_calls(kind), 3);
  }
  EXPECT_EQ(get_ticket(*fake, ticket_kind::jsapi, token_of(*fake, secret_a))["errcode"], 0);
}

TEST(fake_wecom, ticket_get_without_the_agent_config_type_answers_invalid_args) {
  const auto fake = start_fake();
  const auto token = token_of(*fake, secret_a);
  for (const auto& query : {std::string{}, std::string{"&type=jsapi"}}) {
    const auto answer = json_body(*fake, "/cgi-bin/ticket/get?access_token=" + token + query);
    EXPECT_EQ(answer, R"({"errcode":40097,"errmsg":"invalid args"})");
  }
  EXPECT_EQ(fake->ticket_calls(), 2);
  EXPECT_EQ(fake->ticket_calls(ticket_kind::agent_config), 0);
  EXPECT_EQ(fake->ticket_calls(ticket_kind::jsapi), 0);
}

TEST(fake_wecom, revoke_tickets_revokes_that_app_and_kind_and_the_next_call_issues_anew) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry);
  const auto token_a = token_of(*fake, secret_a);
  const auto jsapi_a = ticket_of(*fake, ticket_kind::jsapi, token_a);
  const auto agent_a = ticket_of(*fake, ticket_kind::agent_config, token_a);
  const auto jsapi_b = ticket_of(*fake, ticket_kind::jsapi, token_of(*fake, secret_b));
  const auto before_revocation = std::chrono::system_clock::now();

  fake->revoke_tickets(secret_a, ticket_kind::jsapi);
  EXPECT_EQ(fake->check_ticket(ticket_kind::jsapi, jsapi_a), token_status::invalid);
  // Good when a signature made before the revocation used it.
  EXPECT_EQ(fake->check_ticket(ticket_kind::jsapi, jsapi_a, before_revocation),
            token_status::valid);
  EXPECT_EQ(fake->check_ticket(ticket_kind::agent_config, agent_a), token_status::valid);
  EXPECT_EQ(fake->check_ticket(ticket_kind::jsapi, jsapi_b), token_status::valid);
  EXPECT_EQ(fake->check(token_a), token_status::valid);

  const auto renewed = ticket_of(*fake, ticket_kind::jsapi, token_a);
  EXPECT_NE(renewed, jsapi_a);
  EXPECT_EQ(fake->check_ticket(ticket_kind::jsapi, renewed), token_status::valid);
  EXPECT_EQ(ticket_of(*fake, ticket_kind::agent_config, token_a), agent_a);
  EXPECT_EQ(fake->issued_tickets(secret_a, ticket_kind::jsapi), (std::vector{jsapi_a, renewed}));
}

TEST(fake_wecom, ticket_calls_beyond_the_hourly_quota_answer_45009) {
  const auto fake = start_fake(expiry_behaviour::same_token_keeps_expiry);
  fake->set_ticket_quota(3);
  const auto token_a = token_of(*fake, secret_a);
  for (int call = 1; call <= 3; ++call) {
    EXPECT_EQ(get_ticket(*fake, ticket_kind::jsapi, token_a)["errcode"], 0) << call;
  }
  EXPECT_EQ(json_body(*fake, ticket_target(ticket_kind::jsapi, token_a)),
            R"({"errcode":45009,"errmsg":"api freq out of limit"})");
  EXPECT_EQ(get_ticket(*fake, ticket_kind::jsapi, token_a)["errcode"], 45009);
  EXPECT_EQ(fake->ticket_calls(secret_a, ticket_kind::jsapi), 5);  // refused ones included

  // The quota is per app and kind.
  EXPECT_EQ(get_ticket(*fake, ticket_kind::agent_config, token_a)["errcode"], 0);
  EXPECT_EQ(get_ticket(*fake, ticket_kind::jsapi, token_of(*fake, secret_b))["errcode"], 0);
}

TEST(fake_wecom, ticket_faults_are_per_app_and_kind_and_refused_calls_do_not_consume_them) {
  const auto fake = start_fake();
  fake->script_ticket_faults(
      secret_a, ticket_kind::jsapi,
      {fault{.errcode = -1, .errmsg = "system busy"}, fault{.kind = fault_kind::truncated_json}});
  const auto token_a = token_of(*fake, secret_a);

  EXPECT_EQ(get_ticket(*fake, ticket_kind::jsapi, "made-up")["errcode"], 40014);
  EXPECT_EQ(get_ticket(*fake, ticket_kind::agent_config, token_a)["errcode"], 0);
  EXPECT_EQ(get_ticket(*fake, ticket_kind::jsapi, token_of(*fake, secret_b))["errcode"], 0);
  EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], 0);

  EXPECT_EQ(json_body(*fake, ticket_target(ticket_kind::jsapi, token_a)),
            R"({"errcode":-1,"errmsg":"system busy"})");
  const auto truncated = json_body(*fake, ticket_target(ticket_kind::jsapi, token_a));
  EXPECT_TRUE(truncated.starts_with(R"({"errcode":0)")) << truncated;
  EXPECT_FALSE(nlohmann::json::accept(truncated));
  EXPECT_EQ(get_ticket(*fake, ticket_kind::jsapi, token_a)["errcode"], 0);
  EXPECT_EQ(fake->ticket_calls(secret_a, ticket_kind::jsapi), 3);
}

TEST(fake_wecom, ticket_calls_meet_the_answer_delay) {
  const auto fake =
      std::make_unique<fake_wecom>(fake_options{.answer_delay = 200ms, .tls = shared_tls()});
  fake->add_app(corpid, secret_a);
  const auto token = token_of(*fake, secret_a);
  for (const auto kind : both_kinds) {
    const auto started = steady_clock::now();
    EXPECT_EQ(get_ticket(*fake, kind, token)["errcode"], 0);
    EXPECT_GE(steady_clock::now() - started, 200ms);
  }
}

TEST(fake_wecom, stats_count_ticket_calls_by_kind_and_name_no_value) {
  const auto fake = start_fake();
  const auto token = token_of(*fake, secret_a);
  const auto jsapi = ticket_of(*fake, ticket_kind::jsapi, token);
  get_ticket(*fake, ticket_kind::jsapi, "made-up");
  const auto agent = ticket_of(*fake, ticket_kind::agent_config, token);
  json_body(*fake, "/cgi-bin/ticket/get?access_token=" + token);  // no type: only the total

  const auto stats = json_body(*fake, "/fake/stats");
  const auto body = nlohmann::json::parse(stats);
  EXPECT_EQ(body["ticket_calls"], 4);
  EXPECT_EQ(body["ticket_calls_by_kind"], (nlohmann::json{{"jsapi", 2}, {"agent_config", 1}}));
  EXPECT_EQ(body["gettoken_calls"], 1);
  for (const auto& value : {token, jsapi, agent, secret_a}) {
    EXPECT_EQ(stats.find(value), std::string::npos);
  }
}

TEST(fake_wecom, ticket_status_endpoint_answers_a_tickets_status_for_its_kind) {
  const auto fake = start_fake();
  const auto token = token_of(*fake, secret_a);
  const auto jsapi = ticket_of(*fake, ticket_kind::jsapi, token);
  fake->set_ticket_lifetime(0s);  // issued already expired: no waiting
  const auto expired = ticket_of(*fake, ticket_kind::agent_config, token);

  const auto status = [&](const std::string& ticket, const std::string& kind) {
    return json_body(*fake, "/fake/ticket_status?ticket=" + ticket + "&kind=" + kind);
  };
  EXPECT_EQ(status(jsapi, "jsapi"), R"({"status":"valid"})");
  EXPECT_EQ(status(jsapi, "agent_config"), R"({"status":"invalid"})");
  EXPECT_EQ(status(expired, "agent_config"), R"({"status":"expired"})");
  EXPECT_EQ(status("made-up", "jsapi"), R"({"status":"invalid"})");
  EXPECT_EQ(status(token, "jsapi"), R"({"status":"invalid"})");

  const auto bad_kind = fetch(*fake, "/fake/ticket_status?ticket=" + jsapi + "&kind=other");
  ASSERT_EQ(bad_kind.responses.size(), 1u);
  EXPECT_EQ(bad_kind.responses[0].result(), http::status::bad_request);
  EXPECT_EQ(fake->ticket_calls(), 2);  // status checks are not ticket calls
}

// --- Ordinary APIs, as a gateway's tests see them upstream ---

request api_request(http::verb verb, const std::string& target, const std::string& content_type,
                    std::string body) {
  request call{verb, target, 11};
  if (!content_type.empty()) call.set(http::field::content_type, content_type);
  call.body() = std::move(body);
  return call;
}

// One call over TLS that must be answered; its answer.
response call_api(const fake_wecom& fake, request call, const client_options& options = {}) {
  std::vector<request> requests;
  requests.push_back(std::move(call));
  auto result = exchange_requests(fake.port(), std::move(requests), options);
  EXPECT_FALSE(result.error) << result.error.message();
  if (result.responses.size() != 1) return response{};
  return std::move(result.responses.front());
}

response post(const fake_wecom& fake, const std::string& target, const std::string& content_type,
              std::string body) {
  return call_api(fake, api_request(http::verb::post, target, content_type, std::move(body)));
}

nlohmann::json json_of(const response& answer) {
  EXPECT_EQ(answer.result(), http::status::ok);
  EXPECT_TRUE(answer[http::field::content_type].starts_with("application/json"));
  return nlohmann::json::parse(answer.body(), nullptr, /*allow_exceptions=*/false);
}

const std::string boundary = "----fake-boundary-7MA4YWxk";

// A multipart/form-data body with a text field first and the file in "media", as SDKs send it.
std::string form_data(const std::string& filename, const std::string& file_type,
                      const std::string& bytes) {
  return "--" + boundary +
         "\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nnot the file\r\n--" + boundary +
         "\r\nContent-Disposition: form-data; name=\"media\"; filename=\"" + filename +
         "\"; filelength=" + std::to_string(bytes.size()) + "\r\nContent-Type: " + file_type +
         "\r\n\r\n" + bytes + "\r\n--" + boundary + "--\r\n";
}

// Bytes a careless parser would trip on: NULs, CRLFs, a delimiter-like line without the boundary.
constexpr char awkward_literal[] = "PK\0\x01\r\n--\r\n\r\n--not-the-boundary\xff";
const std::string awkward_bytes(awkward_literal, sizeof awkward_literal - 1);

TEST(fake_wecom, message_send_takes_a_json_object_and_refuses_anything_else) {
  const auto fake = start_fake();
  const auto target = "/cgi-bin/message/send?access_token=" + token_of(*fake, secret_a);

  const auto sent = json_of(post(*fake, target, "application/json",
                                 R"({"touser":"a","msgtype":"text","text":{"content":"hi"}})"));
  EXPECT_EQ(sent["errcode"], 0);
  EXPECT_EQ(sent["errmsg"], "ok");
  EXPECT_FALSE(sent["msgid"].get<std::string>().empty());
  EXPECT_EQ(post(*fake, target, "application/json", "{not json").body(),
            R"({"errcode":47001,"errmsg":"data format error"})");
  EXPECT_EQ(json_of(post(*fake, target, "application/json", "[1]"))["errcode"], 47001);
}

TEST(fake_wecom, media_upload_stores_the_multipart_file_and_media_get_returns_it) {
  const auto fake = start_fake();
  const auto token = token_of(*fake, secret_a);
  const auto before = std::chrono::system_clock::now();

  // A quoted boundary parameter, and a file name with a quote and a ';' in it.
  const auto uploaded =
      json_of(post(*fake, "/cgi-bin/media/upload?access_token=" + token + "&type=file",
                   "multipart/form-data; charset=utf-8; boundary=\"" + boundary + "\"",
                   form_data(R"(report \"q1\"; final.pdf)", "application/pdf", awkward_bytes)));
  EXPECT_EQ(uploaded["errcode"], 0);
  EXPECT_EQ(uploaded["errmsg"], "ok");
  EXPECT_EQ(uploaded["type"], "file");
  EXPECT_EQ(uploaded["media_id"], sha256_hex(awkward_bytes));
  const auto created_at = std::stoll(uploaded["created_at"].get<std::string>());
  EXPECT_GE(created_at, std::chrono::system_clock::to_time_t(before));
  EXPECT_LE(created_at, std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()));

  const auto file = call_api(*fake, api_request(http::verb::get,
                                                "/cgi-bin/media/get?access_token=" + token +
                                                    "&media_id=" + sha256_hex(awkward_bytes),
                                                "", ""));
  EXPECT_EQ(file.result(), http::status::ok);
  EXPECT_EQ(file.body(), awkward_bytes);
  EXPECT_EQ(file[http::field::content_type], "application/pdf");
  EXPECT_EQ(file[http::field::content_disposition],
            R"(attachment; filename="report \"q1\"; final.pdf")");
}

TEST(fake_wecom, media_upload_refuses_what_carries_no_media_file) {
  const auto fake = start_fake();
  const auto target = "/cgi-bin/media/upload?access_token=" + token_of(*fake, secret_a);
  const auto form_type = "multipart/form-data; boundary=" + boundary;
  const auto upload = [&](const std::string& query, const std::string& content_type,
                          const std::string& body) {
    return json_of(post(*fake, target + query, content_type, body))["errcode"];
  };

  EXPECT_EQ(upload("&type=file", form_type, form_data("a.bin", "text/plain", "abc")), 0);
  EXPECT_EQ(upload("&type=sticker", form_type, form_data("a.bin", "text/plain", "abc")), 40004);
  EXPECT_EQ(upload("", form_type, form_data("a.bin", "text/plain", "abc")), 40004);
  EXPECT_EQ(upload("&type=file", "application/octet-stream", "abc"), 41005);
  EXPECT_EQ(upload("&type=file", "multipart/form-data; boundary=other",
                   form_data("a.bin", "text/plain", "abc")),
            41005);
  auto unterminated = form_data("a.bin", "text/plain", "abc");
  unterminated.resize(unterminated.size() - 4);  // the close delimiter cut short
  unterminated.resize(unterminated.rfind("\r\n"));
  EXPECT_EQ(upload("&type=file", form_type, unterminated), 41005);
  EXPECT_EQ(upload("&type=file", form_type, form_data("a.bin", "text/plain", "")), 44001);
}

TEST(fake_wecom, media_get_sends_generated_bodies_and_refuses_unknown_ids) {
  const auto fake = start_fake();
  const auto target = "/cgi-bin/media/get?access_token=" + token_of(*fake, secret_a) + "&media_id=";
  constexpr std::size_t size = 3 * 1024 * 1024 + 5;  // several chunks and a ragged end

  const auto file =
      call_api(*fake, api_request(http::verb::get, target + "generated-3145733", "", ""),
               client_options{.body_limit = size});
  EXPECT_EQ(file.result(), http::status::ok);
  EXPECT_EQ(file[http::field::content_type], "application/octet-stream");
  EXPECT_EQ(file[http::field::content_disposition],
            R"(attachment; filename="generated-3145733.bin")");
  EXPECT_EQ(file.body().size(), size);
  EXPECT_EQ(file.body(), generated_media(0, size));
  EXPECT_EQ(generated_media(1000003, 17), generated_media(0, 1000020).substr(1000003));
  EXPECT_EQ(call_api(*fake, api_request(http::verb::get, target + "generated-0", "", "")).body(),
            "");

  const auto unknown = R"({"errcode":40007,"errmsg":"invalid media_id"})";
  for (const auto& media_id : {std::string{"nope"}, std::string{"generated-67108865"},
                               std::string{"generated-12x"}, std::string{"generated-"}}) {
    EXPECT_EQ(json_body(*fake, target + media_id), unknown) << media_id;
  }
}

TEST(fake_wecom, api_calls_refuse_unknown_revoked_and_expired_tokens) {
  const auto fake = start_fake();
  const auto revoked = token_of(*fake, secret_a);
  fake->revoke_tokens(secret_a);
  fake->set_lifetime(0s);  // issued already expired: no waiting
  const auto expired = token_of(*fake, secret_b);
  const auto send = [&](const std::string& token) {
    return post(*fake, "/cgi-bin/message/send?access_token=" + token, "application/json", "{}")
        .body();
  };

  EXPECT_EQ(send(revoked), R"({"errcode":40014,"errmsg":"invalid access_token"})");
  EXPECT_EQ(send("made-up"), R"({"errcode":40014,"errmsg":"invalid access_token"})");
  EXPECT_EQ(send(expired), R"({"errcode":42001,"errmsg":"access_token expired"})");
  EXPECT_EQ(
      json_body(*fake, "/cgi-bin/media/get?access_token=" + revoked + "&media_id=generated-1"),
      R"({"errcode":40014,"errmsg":"invalid access_token"})");

  const auto calls = fake->api_calls();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_FALSE(calls[0].token_ok);
  EXPECT_EQ(calls[0].token_app, corpid);  // revoked, yet still the corp's
  EXPECT_EQ(calls[1].token_app, std::nullopt);
  EXPECT_EQ(calls[2].token_app, corpid);
  EXPECT_EQ(calls[3].errcode, 40014);
}

TEST(fake_wecom, api_calls_are_recorded_without_their_token) {
  const auto fake = start_fake();
  const auto token = token_of(*fake, secret_a);
  const std::string body = R"({"touser":"a","msgtype":"text"})";
  auto send = api_request(http::verb::post,
                          "/cgi-bin/message/send?debug=1&access_token=" + token + "&access_token=x",
                          "application/json; charset=utf-8", body);
  send.set(http::field::authorization, "Bearer client-key");
  send.set(http::field::cookie, "session=1");
  EXPECT_EQ(json_of(call_api(*fake, std::move(send)))["errcode"], 0);
  json_body(*fake, "/cgi-bin/user/get?access_token=made-up&userid=x");

  const auto listed = json_body(*fake, "/fake/api_calls");
  EXPECT_EQ(listed.find(token), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(listed), nlohmann::json::parse(R"([
      {"method":"POST","path":"/cgi-bin/message/send",
       "query_keys":["access_token","access_token","debug"],"token_ok":true,
       "token_app":")" + corpid + R"(","content_type":"application/json; charset=utf-8",
       "body_sha256":")" + sha256_hex(body) + R"(","body_size":)" +
                                                                 std::to_string(body.size()) + R"(,
       "headers":["authorization","content-length","content-type","cookie","host"],
       "errcode":0},
      {"method":"GET","path":"/cgi-bin/user/get","query_keys":["access_token","userid"],
       "token_ok":false,"token_app":null,"content_type":"",
       "body_sha256":")" + sha256_hex("") + R"(","body_size":0,"headers":["host"],
       "errcode":40014}])"));
  const auto stats = nlohmann::json::parse(json_body(*fake, "/fake/stats"));
  EXPECT_EQ(stats["api_calls"], 2);
  EXPECT_EQ(stats["api_calls_by_path"],
            (nlohmann::json{{"/cgi-bin/message/send", 1}, {"/cgi-bin/user/get", 1}}));
  EXPECT_EQ(fake->api_calls_by_path(),
            (std::map<std::string, int>{{"/cgi-bin/message/send", 1}, {"/cgi-bin/user/get", 1}}));

  const auto cleared = call_api(*fake, api_request(http::verb::delete_, "/fake/api_calls", "", ""));
  EXPECT_EQ(cleared.result(), http::status::no_content);
  EXPECT_EQ(json_body(*fake, "/fake/api_calls"), "[]");
  EXPECT_EQ(nlohmann::json::parse(json_body(*fake, "/fake/stats"))["api_calls"], 0);
  EXPECT_EQ(fake->gettoken_calls(), 1);  // credential calls are not API calls
}

TEST(fake_wecom, api_limit_holds_per_corp_and_path_within_a_minute) {
  const auto fake = start_fake();
  fake->add_app("wwother", "secret-c");
  const auto token = token_of(*fake, secret_a);
  const auto other_corp = gettoken(*fake, "secret-c", "wwother")["access_token"].get<std::string>();
  const auto user_get = [&](const std::string& access_token) {
    return json_body(*fake, "/cgi-bin/user/get?userid=x&access_token=" + access_token);
  };

  fake->set_api_limit(corpid, "/cgi-bin/user/get", 2);
  EXPECT_EQ(nlohmann::json::parse(user_get("made-up"))["errcode"], 40014);  // uses no allowance
  EXPECT_EQ(nlohmann::json::parse(user_get(token))["errcode"], 0);
  // The same corp with another app's token, under a base_url prefix: the same allowance.
  EXPECT_EQ(
      json_body(*fake, "/p/cgi-bin/user/get?userid=x&access_token=" + token_of(*fake, secret_b))
          .find(R"("errcode":0)"),
      1u);
  EXPECT_EQ(user_get(token), R"({"errcode":45009,"errmsg":"api freq out of limit"})");
  EXPECT_EQ(nlohmann::json::parse(user_get(other_corp))["errcode"], 0);
  EXPECT_EQ(json_of(post(*fake, "/cgi-bin/message/send?access_token=" + token, "application/json",
                         "{}"))["errcode"],
            0);

  fake->set_api_limit(corpid, "/cgi-bin/user/get", std::nullopt);
  EXPECT_EQ(nlohmann::json::parse(user_get(token))["errcode"], 0);
}

TEST(fake_wecom, hang_holds_api_calls_until_released_and_spares_credential_calls) {
  const auto fake = start_fake();
  const auto token = token_of(*fake, secret_a);
  const auto target = "/cgi-bin/user/get?userid=x&access_token=" + token;
  fake->hang_api_calls(true);

  const auto timed_out = fetch(*fake, target, client_options{.deadline = 300ms});
  EXPECT_EQ(timed_out.error, beast::error::timeout) << timed_out.error.message();
  EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], 0);

  // Two calls on one connection: the one held, then the next, as a gateway's pool reuses it.
  exchange_result held;
  std::thread client([&] { held = exchange(fake->port(), {target, target}); });
  ASSERT_TRUE(eventually([&] { return fake->api_calls().size() == 2; }));
  const auto released_at = steady_clock::now();
  fake->hang_api_calls(false);
  client.join();
  EXPECT_LT(steady_clock::now() - released_at, 1s);
  ASSERT_EQ(held.responses.size(), 2u) << held.error.message();
  EXPECT_EQ(nlohmann::json::parse(held.responses[0].body())["errcode"], 0);
  EXPECT_EQ(nlohmann::json::parse(held.responses[1].body())["errcode"], 0);
}

TEST(fake_wecom, api_delay_holds_back_api_answers_only) {
  const auto fake = start_fake();
  const auto token = token_of(*fake, secret_a);
  fake->set_api_delay(300ms);

  auto started = steady_clock::now();
  EXPECT_EQ(gettoken(*fake, secret_a)["errcode"], 0);
  EXPECT_LT(steady_clock::now() - started, 300ms);
  started = steady_clock::now();
  EXPECT_EQ(
      json_body(*fake, "/cgi-bin/user/get?userid=x&access_token=" + token).find(R"({"errcode":0,)"),
      0u);
  EXPECT_GE(steady_clock::now() - started, 300ms);
}

TEST(fake_wecom, apis_it_does_not_serve_are_404_and_not_recorded) {
  const auto fake = start_fake();
  const auto answer = fetch(*fake, "/cgi-bin/agent/list?access_token=" + token_of(*fake, secret_a));
  ASSERT_EQ(answer.responses.size(), 1u);
  EXPECT_EQ(answer.responses[0].result(), http::status::not_found);
  EXPECT_TRUE(fake->api_calls().empty());
}

}  // namespace
}  // namespace token_broker::fake
