// Third-party credentials through the real binary (issue 16, SPEC §3–§7): WeCom's callback
// (URL verification, suite_ticket, create_auth, cancel_auth) reaching one replica and serving
// every replica through a real Redis; provider, suite and corp tokens; dynamic corps surviving
// a restart; one get_corp_token for many cold requests over two replicas; and no secret,
// callback key or permanent code in any log, answer, metric or Redis value.
//
// The tests share the redis-server of the CTest fixture and keep apart by key prefix.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "broker_fixture.hpp"
#include "redis_keyspace_fixture.hpp"
#include "redis_test_client.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::steady_clock;

constexpr const char* provider_corpid = "wwprovider0000001";
constexpr const char* suite_id = "wwsuite0000000001";
constexpr const char* static_corp = "wwcorpStatic00001";
constexpr const char* dynamic_corp = "wwcorpDynamic0001";
const std::string suite_path = "/v1/suites/crm-suite";

// Polls `done` until it holds or `limit` passes: a bounded wait on something observable.
template <class Check>
bool eventually(Check done, std::chrono::milliseconds limit = 10s) {
  const auto deadline = steady_clock::now() + limit;
  while (steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return done();
}

std::string random_word(std::size_t size) {
  static std::mt19937_64 random{std::random_device{}()};
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string word(size, 'a');
  for (auto& c : word) c = alphabet[random() % (sizeof alphabet - 1)];
  return word;
}

class suites_redis_test : public with_redis_keyspace<broker_fixture> {
 protected:
  void SetUp() override {
    with_redis_keyspace<broker_fixture>::SetUp();
    auto& service = fake_->service();
    service.add_provider(provider_corpid, provider_secret_);
    service.add_suite(suite_id, suite_secret_, callback_token_, aes_key_);
    static_code_ = service.authorize(suite_id, static_corp);
    for (const auto& [text, what] :
         {std::pair{provider_secret_, "the provider secret"},
          std::pair{suite_secret_, "the suite secret"},
          std::pair{callback_token_, "the callback token"},
          std::pair{aes_key_, "the EncodingAESKey"}, std::pair{static_code_, "a permanent code"}}) {
      forbid_in_logs(text, what);
    }
  }

  json suite_config() {
    return json{
        {"redis",
         {{"url", "redis://127.0.0.1:" + std::to_string(keys_->port()) + "/0"},
          {"key_prefix", prefix_}}},
        {"providers",
         {{"isv",
           {{"corpid", provider_corpid},
            {"provider_secret_file", scratch_.write("provider", provider_secret_).string()}}}}},
        {"suites",
         {{"crm-suite",
           {{"suite_id", suite_id},
            {"suite_secret_file", scratch_.write("suite", suite_secret_).string()},
            {"callback",
             {{"token_file", scratch_.write("callback-token", callback_token_).string()},
              {"encoding_aes_key_file", scratch_.write("aes-key", aes_key_).string()}}},
            {"store_key_file", scratch_.write("store-key", store_key_).string()},
            {"corps",
             {{static_corp,
               {{"permanent_code_file", scratch_.write("code", static_code_).string()}}}}}}}}}};
  }

  broker_process& start_replica() { return start_broker(make_config(free_port(), suite_config())); }

  static http_answer post(const broker_process& broker, const std::string& target,
                          const std::string& body) {
    return http_call(broker.port(), {.method = "POST", .target = target, .body = body});
  }

  // A ticket callback posted to `broker`, answered "success".
  void push_ticket_by_callback(const broker_process& broker) {
    const auto callback = fake_->service().suite_ticket_callback(suite_id);
    const auto answer = post(broker, suite_path + "/callback?" + callback.query, callback.body);
    ASSERT_EQ(answer.status, 200u) << answer.body;
    ASSERT_EQ(answer.body, "success");
  }

  static http_answer await_ok(const broker_process& broker, const std::string& target) {
    http_answer answer;
    eventually([&] {
      answer = http_get(broker.port(), target);
      return answer.status == 200;
    });
    return answer;
  }

  // Every key of the test's prefix with its value(s), as a reader of Redis would find them.
  std::string redis_contents() {
    std::string contents;
    const auto keys = keys_->client().command({"KEYS", prefix_ + "*"});
    for (const auto& key : keys.elements) {
      const auto type = keys_->client().command({"TYPE", key.string}).string;
      contents += key.string + "=";
      if (type == "string") contents += keys_->client().get(key.string).value_or("");
      if (type == "hash") {
        for (const auto& part : keys_->client().command({"HGETALL", key.string}).elements) {
          contents += part.string + ",";
        }
      }
      contents += "\n";
    }
    return contents;
  }

  std::string provider_secret_ = random_word(32);
  std::string suite_secret_ = random_word(32);
  std::string callback_token_ = random_word(12);
  // Its last character carries 2 bits of padding, which must be 0: "A" has none set.
  std::string aes_key_ = random_word(42) + "A";
  std::string store_key_ = random_word(32);
  std::string static_code_;
};

TEST_F(suites_redis_test, a_ticket_callback_to_one_replica_serves_the_suite_token_on_the_other) {
  auto& a = start_replica();
  auto& b = start_replica();

  // URL verification: the decrypted echostr, as text.
  const auto verified =
      http_get(a.port(), suite_path + "/callback?" +
                             fake_->service().verification_query(suite_id, "1616140317555161061"));
  EXPECT_EQ(verified.status, 200u) << verified.body;
  EXPECT_EQ(verified.body, "1616140317555161061");
  EXPECT_EQ(verified.headers.at("content-type"), "text/plain; charset=utf-8");

  // No ticket yet: WeCom's own reason, and no call upstream.
  const auto cold = http_get(b.port(), suite_path + "/token");
  EXPECT_EQ(cold.status, 503u) << cold.body;
  EXPECT_EQ(json::parse(cold.body).value("errcode", 0), 40085) << cold.body;

  // A bad signature is refused and changes nothing.
  auto forged = fake_->service().suite_ticket_callback(suite_id);
  const auto signature_at = forged.query.find("msg_signature=") + 14;
  forged.query[signature_at] = forged.query[signature_at] == '0' ? '1' : '0';
  const auto refused = post(a, suite_path + "/callback?" + forged.query, forged.body);
  EXPECT_EQ(refused.status, 403u) << refused.body;
  const auto garbage = fake_->service().sign(suite_id, "AAAA");
  const auto undecryptable = post(a, suite_path + "/callback?" + garbage.query, garbage.body);
  EXPECT_EQ(undecryptable.status, 400u) << undecryptable.body;
  EXPECT_FALSE(keys_->client().get(prefix_ + "suite_ticket:crm-suite"));
  EXPECT_EQ(fake_->service().calls("get_suite_token"), 0);

  push_ticket_by_callback(a);
  const auto served = await_ok(b, suite_path + "/token");
  ASSERT_EQ(served.status, 200u) << served.body;
  const auto body = json::parse(served.body);
  EXPECT_EQ(body.at("suite"), "crm-suite");
  EXPECT_GT(body.at("expires_in").get<int>(), 7000);
  const auto on_a = await_ok(a, suite_path + "/token");
  EXPECT_EQ(json::parse(on_a.body).at("suite_access_token"), body.at("suite_access_token"));
  EXPECT_EQ(fake_->service().calls("get_suite_token"), 1) << "one call for the fleet";
  EXPECT_GT(keys_->client().pttl(prefix_ + "suite_ticket:crm-suite"), 29 * 60 * 1000);

  // The drop-in, with the suite secret: the same token in WeCom's shape; a wrong secret is 40001.
  const auto drop_in = post(
      b, "/cgi-bin/service/get_suite_token",
      json{{"suite_id", suite_id}, {"suite_secret", suite_secret_}, {"suite_ticket", "ignored"}}
          .dump());
  EXPECT_EQ(json::parse(drop_in.body).value("suite_access_token", ""),
            body.at("suite_access_token"));
  const auto wrong = post(b, "/cgi-bin/service/get_suite_token",
                          json{{"suite_id", suite_id}, {"suite_secret", "nope"}}.dump());
  EXPECT_EQ(json::parse(wrong.body).value("errcode", 0), 40001);

  // The provider's token, and its drop-in.
  const auto provider = await_ok(a, "/v1/providers/isv/token");
  EXPECT_EQ(json::parse(provider.body).at("provider"), "isv");
  const auto provider_drop_in =
      post(a, "/cgi-bin/service/get_provider_token",
           json{{"corpid", provider_corpid}, {"provider_secret", provider_secret_}}.dump());
  EXPECT_EQ(json::parse(provider_drop_in.body).value("provider_access_token", ""),
            json::parse(provider.body).at("provider_access_token"));
  EXPECT_EQ(fake_->service().calls("get_provider_token"), 1);

  // /readyz counts every credential of the suite, and the metrics label a corp suite/corpid.
  EXPECT_TRUE(eventually([&] { return http_get(a.port(), "/readyz").status == 200; }));
  const auto metrics = http_get(a.port(), "/metrics").body;
  EXPECT_GT(metric_sample(metrics, "token_broker_token_expiry_timestamp_seconds{app=\"crm-suite/" +
                                       std::string(static_corp) + "\",kind=\"corp_token\"}"),
            0)
      << metrics;
}

TEST_F(suites_redis_test, create_auth_adds_a_corp_on_every_replica_and_cancel_auth_removes_it) {
  auto& a = start_replica();
  auto& b = start_replica();
  push_ticket_by_callback(a);
  ASSERT_EQ(await_ok(b, suite_path + "/token").status, 200u);

  const auto created = fake_->service().create_auth_callback(suite_id, dynamic_corp);
  const auto answered = post(a, suite_path + "/callback?" + created.query, created.body);
  EXPECT_EQ(answered.body, "success");
  EXPECT_LT(answered.took, 1s) << "WeCom wants its answer within a second";
  const auto corp_path = suite_path + "/corps/" + dynamic_corp + "/token";
  const auto on_b = await_ok(b, corp_path);
  ASSERT_EQ(on_b.status, 200u) << on_b.body;
  const auto token = json::parse(on_b.body).at("access_token").get<std::string>();
  EXPECT_TRUE(fake_->service().corp_token_valid(token));
  EXPECT_EQ(json::parse(await_ok(a, corp_path).body).at("access_token"), token);
  const auto code = fake_->service().permanent_code(suite_id, dynamic_corp);
  ASSERT_TRUE(code);
  forbid_in_logs(*code, "a permanent code from get_permanent_code");

  // The drop-in, keyed by the suite token the broker serves, checked by the permanent code.
  const auto suite_token =
      json::parse(http_get(a.port(), suite_path + "/token").body).at("suite_access_token");
  const auto corp_drop_in = [&](const std::string& key, const std::string& permanent_code) {
    return json::parse(
        post(a, "/cgi-bin/service/get_corp_token?suite_access_token=" + key,
             json{{"auth_corpid", dynamic_corp}, {"permanent_code", permanent_code}}.dump())
            .body);
  };
  EXPECT_EQ(corp_drop_in(suite_token, *code).value("access_token", ""), token);
  EXPECT_EQ(corp_drop_in(suite_token, "wrong").value("errcode", 0), 40084);
  EXPECT_EQ(corp_drop_in("unknown", *code).value("errcode", 0), 40082);

  const auto listing = http_get(b.port(), suite_path + "/corps").body;
  for (const auto& answer : {listing, on_b.body}) {
    EXPECT_EQ(answer.find(*code), std::string::npos) << "never a permanent code in an answer";
  }
  const auto corps = json::parse(listing);
  ASSERT_EQ(corps.size(), 2u) << corps;
  for (const auto& corp : corps) {
    EXPECT_EQ(corp.at("source"), corp.at("corpid") == dynamic_corp ? "callback" : "config");
  }
  // Kept sealed: neither the code nor anything else secret is readable in Redis.
  const auto stored = redis_contents();
  EXPECT_NE(stored.find("suite_corps:crm-suite"), std::string::npos) << stored;
  for (const auto& secret :
       {*code, static_code_, suite_secret_, provider_secret_, callback_token_, aes_key_}) {
    EXPECT_EQ(stored.find(secret), std::string::npos);
  }

  // The same auth code again (a replay) changes nothing: WeCom refuses it (single use).
  EXPECT_EQ(post(b, suite_path + "/callback?" + created.query, created.body).body, "success");

  const auto cancelled = fake_->service().cancel_auth_callback(suite_id, dynamic_corp);
  EXPECT_EQ(post(b, suite_path + "/callback?" + cancelled.query, cancelled.body).body, "success");
  for (const auto* replica : {&a, &b}) {
    EXPECT_TRUE(eventually([&] { return http_get(replica->port(), corp_path).status == 404; }))
        << http_get(replica->port(), corp_path).body;
  }
  EXPECT_EQ(json::parse(http_get(a.port(), suite_path + "/corps").body).size(), 1u);
  EXPECT_TRUE(eventually([&] {
    return !keys_->client().get(prefix_ + "corp_token:crm-suite:" + dynamic_corp) &&
           keys_->client().command({"HLEN", prefix_ + "suite_corps:crm-suite"}).integer == 0;
  }));
  const auto metrics = http_get(a.port(), "/metrics").body;
  EXPECT_EQ(metrics.find(*code), std::string::npos);
  EXPECT_EQ(metrics.find(dynamic_corp), std::string::npos) << "its series went with it";
}

TEST_F(suites_redis_test, a_restart_keeps_the_authorized_corps_without_another_upstream_call) {
  auto& first = start_replica();
  push_ticket_by_callback(first);
  ASSERT_EQ(await_ok(first, suite_path + "/token").status, 200u);
  const auto created = fake_->service().create_auth_callback(suite_id, dynamic_corp);
  post(first, suite_path + "/callback?" + created.query, created.body);
  const auto corp_path = suite_path + "/corps/" + dynamic_corp + "/token";
  const auto before = await_ok(first, corp_path);
  ASSERT_EQ(before.status, 200u) << before.body;
  forbid_in_logs(fake_->service().permanent_code(suite_id, dynamic_corp).value(),
                 "a permanent code");
  EXPECT_EQ(first.stop(SIGTERM, 5s), 0);

  const auto calls_before = fake_->service().corp_token_calls_by_corpid();
  auto& second = start_replica();
  const auto after = await_ok(second, corp_path);
  ASSERT_EQ(after.status, 200u) << after.body;
  EXPECT_EQ(token_of(after), token_of(before));
  EXPECT_EQ(fake_->service().corp_token_calls_by_corpid(), calls_before);
  EXPECT_EQ(fake_->service().calls("get_permanent_code"), 1);
  EXPECT_EQ(fake_->service().calls("get_suite_token"), 1);
}

TEST_F(suites_redis_test, fifty_cold_corp_token_requests_over_two_replicas_make_one_call) {
  // Each get_corp_token is in flight for a second: every request arrives while it is.
  fake_->service().set_corp_token_delay(1s);
  auto config = make_config(free_port(), suite_config());
  config["upstream"]["timeout_ms"] = 5000;
  auto& a = start_broker(config);
  config["listen"] = "127.0.0.1:" + std::to_string(free_port());
  auto& b = start_broker(config);

  // A service that decrypts callbacks itself hands the ticket over (client-authenticated when
  // clients are configured; this API is open on loopback).
  const auto ticket = fake_->service().issue_suite_ticket(suite_id);
  const auto put = http_call(a.port(), {.method = "PUT",
                                        .target = suite_path + "/suite_ticket",
                                        .body = json{{"suite_ticket", ticket}}.dump()});
  ASSERT_EQ(put.status, 200u) << put.body;

  const auto corp_path = suite_path + "/corps/" + static_corp + "/token";
  std::vector<http_answer> answers_a, answers_b;
  {
    const std::vector<http_exchange> requests(25, http_exchange{.target = corp_path});
    std::jthread on_a([&] { answers_a = http_concurrently(a.port(), requests); });
    std::jthread on_b([&] { answers_b = http_concurrently(b.port(), requests); });
  }
  std::set<std::string> tokens;
  auto longest = 0ms;
  for (const auto* answers : {&answers_a, &answers_b}) {
    for (const auto& answer : *answers) {
      ASSERT_EQ(answer.status, 200u) << answer.body;
      tokens.insert(token_of(answer));
      longest = std::max(longest, answer.took);
    }
  }
  EXPECT_EQ(tokens.size(), 1u);
  EXPECT_GT(longest, 200ms) << "the requests waited for the call in flight";
  EXPECT_EQ(fake_->service().calls("get_corp_token"), 1);
}

// WeCom ends a suite token early: the next corp call meets 42009, reports the suite token (one
// refresh) and is made again with the new one.
TEST_F(suites_redis_test, a_corp_call_refused_for_its_suite_token_renews_that_token_and_retries) {
  auto& broker = start_replica();
  push_ticket_by_callback(broker);
  const auto corp_path = suite_path + "/corps/" + static_corp + "/token";
  const auto first = await_ok(broker, corp_path);
  ASSERT_EQ(first.status, 200u) << first.body;
  ASSERT_EQ(fake_->service().calls("get_suite_token"), 1);

  fake_->service().expire_suite_tokens(suite_id);
  const auto renewed =
      post(broker, corp_path + "/invalidate", json{{"access_token", token_of(first)}}.dump());
  ASSERT_EQ(renewed.status, 200u) << renewed.body;
  EXPECT_NE(token_of(renewed), token_of(first));
  EXPECT_TRUE(fake_->service().corp_token_valid(token_of(renewed)));
  EXPECT_EQ(fake_->service().calls("get_suite_token"), 2);
  EXPECT_EQ(fake_->service().calls("get_corp_token"), 3) << "the refused call, then the retry";
}

// A 代开发 template's corp gets its token from gettoken, its permanent code as the secret.
TEST_F(suites_redis_test, a_template_corp_token_comes_from_gettoken_with_the_permanent_code) {
  const std::string corp = "wwcorpTemplate001";
  const auto code = random_word(43);
  fake_->add_app(corp, code);
  forbid_in_logs(code, "a template's permanent code");
  auto config = make_config(free_port(), suite_config());
  config["suites"]["tpl-suite"] = {
      {"suite_id", "wwtemplate0000001"},
      {"template", true},
      {"suite_secret_file", scratch_.write("template-secret", suite_secret_).string()},
      {"corps",
       {{corp, {{"permanent_code_file", scratch_.write("template-code", code).string()}}}}}};
  auto& broker = start_broker(config);
  const auto answer = await_ok(broker, "/v1/suites/tpl-suite/corps/" + corp + "/token");
  ASSERT_EQ(answer.status, 200u) << answer.body;
  EXPECT_EQ(json::parse(answer.body).at("corpid"), corp);
  EXPECT_EQ(fake_->check(token_of(answer)), fake::token_status::valid);
  EXPECT_EQ(fake_->gettoken_calls(code), 1);
  EXPECT_EQ(fake_->service().calls("get_corp_token"), 0);
}

class corp_lifetime_test : public suites_redis_test,
                           public ::testing::WithParamInterface<fake::expiry_behaviour> {};

// Two lifetimes of 6-second suite and corp tokens over two replicas, under each of upstream's
// expiry behaviours: every corp token served is one WeCom accepts, no request fails, and the
// fleet makes at most two get_corp_token calls per lifetime.
TEST_P(corp_lifetime_test, every_corp_token_served_is_valid_and_calls_stay_at_the_floor) {
  constexpr auto lifetime = 6s;
  constexpr auto duration = 12s;
  fake_->set_behaviour(GetParam());
  fake_->set_lifetime(lifetime);
  auto& a = start_replica();
  auto& b = start_replica();
  push_ticket_by_callback(a);
  const auto corp_path = suite_path + "/corps/" + static_corp + "/token";
  ASSERT_EQ(await_ok(b, corp_path).status, 200u);
  const int calls_at_start = fake_->service().calls("get_corp_token");

  int served = 0;
  const auto started = steady_clock::now();
  while (steady_clock::now() - started < duration) {
    for (const auto* replica : {&a, &b}) {
      const auto answer = http_get(replica->port(), corp_path);
      ASSERT_EQ(answer.status, 200u) << answer.body;
      ASSERT_TRUE(fake_->service().corp_token_valid(token_of(answer)))
          << "served a corp token WeCom rejects";
      ++served;
    }
  }
  const int calls = fake_->service().calls("get_corp_token") - calls_at_start;
  std::cout << "[ figures  ] served=" << served << " get_corp_token=" << calls << "\n";
  EXPECT_GT(served, 100);
  EXPECT_LE(calls, 2 * static_cast<int>(duration / lifetime) + 1);
}

INSTANTIATE_TEST_SUITE_P(behaviours, corp_lifetime_test,
                         ::testing::Values(fake::expiry_behaviour::same_token_keeps_expiry,
                                           fake::expiry_behaviour::same_token_seconds_left,
                                           fake::expiry_behaviour::new_token_each_call),
                         [](const auto& test) { return behaviour_test_name(test.param, "token"); });

// Clients read the suites and providers their ACL lists; WeCom's callback needs no key (its
// signature is the authentication).
TEST_F(suites_redis_test,
       clients_read_only_their_suites_and_providers_and_the_callback_needs_no_key) {
  auto config = make_config(free_port(), suite_config());
  config["clients"] = {
      {"isv-svc", {{"key_sha256", hex_sha256("isv-key")}, {"suites", {"crm-suite"}}}},
      {"ops", {{"key_sha256", hex_sha256("ops-key")}, {"providers", {"*"}}}}};
  auto& broker = start_broker(config);
  const auto as = [&](const std::string& key, const std::string& method, const std::string& target,
                      const std::string& body = {}) {
    return http_call(broker.port(), {.method = method,
                                     .target = target,
                                     .body = body,
                                     .headers = {{"Authorization", "Bearer " + key}}});
  };
  const auto ticket = json{{"suite_ticket", fake_->service().issue_suite_ticket(suite_id)}}.dump();
  EXPECT_EQ(http_call(broker.port(),
                      {.method = "PUT", .target = suite_path + "/suite_ticket", .body = ticket})
                .status,
            401u);
  EXPECT_EQ(as("ops-key", "PUT", suite_path + "/suite_ticket", ticket).status, 403u);
  EXPECT_EQ(as("isv-key", "PUT", suite_path + "/suite_ticket", ticket).status, 200u);
  EXPECT_EQ(as("isv-key", "GET", "/v1/providers/isv/token").status, 403u);
  EXPECT_EQ(as("ops-key", "GET", "/v1/providers/isv/token").status, 200u);
  EXPECT_EQ(as("isv-key", "GET", "/v1/suites/other/token").status, 404u);
  EXPECT_TRUE(
      eventually([&] { return as("isv-key", "GET", suite_path + "/token").status == 200; }));
  EXPECT_EQ(http_get(broker.port(), suite_path + "/callback?" +
                                        fake_->service().verification_query(suite_id, "echo"))
                .body,
            "echo");
  push_ticket_by_callback(broker);
  EXPECT_EQ(broker.log().find("isv-key"), std::string::npos);
}

}  // namespace
}  // namespace token_broker::testing
