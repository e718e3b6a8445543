// JS-SDK tickets through the real binary against the fake of WeCom (issue 14, SPEC §3–§6):
// cold fan-in, every signature checked against the tickets WeCom holds valid through 20 s of
// 6-second lifetimes, the call budget, the drop-ins, bad input, client keys and what operators
// see. No ticket or token may reach the broker's output (ticket_fixture).
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "broker_fixture.hpp"
#include "ticket_fixture.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using fake::expiry_behaviour;
using fake::fault;
using fake::fault_kind;
using fake::ticket_kind;
using fake::token_status;
using nlohmann::json;
using std::chrono::steady_clock;
using std::chrono::system_clock;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(system_clock::now().time_since_epoch())
      .count();
}

struct signed_part {
  const char* name;  // in the jssdk_signature answer
  ticket_kind kind;
};
constexpr signed_part signed_parts[] = {{"config", ticket_kind::jsapi},
                                        {"agent_config", ticket_kind::agent_config}};

// What a real client sees: curl's output for a GET of `url`, and its exit code.
struct curl_result {
  int exit_code = -1;
  std::string output;
};
curl_result curl_get(const std::string& url) {
  const std::string command = "curl --silent --show-error --max-time 10 '" + url + "' 2>&1";
  curl_result result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  char chunk[4096];
  for (std::size_t read; (read = fread(chunk, 1, sizeof chunk, pipe)) > 0;) {
    result.output.append(chunk, read);
  }
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// An error answer as SPEC §4 has them: JSON with "error" (and a "message"), never cached.
void expect_error(const http_answer& answer, unsigned status, const std::string& error,
                  const std::string& what) {
  EXPECT_EQ(answer.status, status) << what << ": " << answer.body;
  const auto body = json::parse(answer.body, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(body.is_object()) << what << ": not JSON: " << answer.body;
  EXPECT_EQ(body.value("error", ""), error) << what << ": " << answer.body;
  EXPECT_TRUE(body.contains("message") && body["message"].is_string()) << what;
  EXPECT_EQ(answer.headers.count("cache-control") ? answer.headers.at("cache-control") : "",
            "no-store")
      << what;
}

int wecom_errcode(const http_answer& answer) {
  EXPECT_EQ(answer.status, 200u) << "the drop-ins answer HTTP 200, as WeCom does";
  return json::parse(answer.body).at("errcode").get<int>();
}

class tickets_test : public ticket_fixture {};

TEST_F(tickets_test, cold_fan_in_of_tickets_and_signatures_makes_one_call_of_each_kind) {
  const auto hr = add_app("hr");
  // A slow first gettoken keeps the broker cold while the requests pile up.
  fake_->script_faults(hr.secret, {fault{.kind = fault_kind::delay, .delay = 800ms}});
  const auto& broker = start_broker(make_config(free_port(), both_tickets_for("hr")));

  std::vector<http_exchange> requests;
  for (int i = 0; i < 50; ++i) {
    requests.push_back({.target = "/v1/apps/hr/jsapi_ticket"});
    requests.push_back({.target = "/v1/apps/hr/agent_ticket"});
    json body{{"url", "https://h5.example.com/app/page-" + std::to_string(i) + "?tab=1#section"}};
    if (i % 2 == 1) {  // half bring their own nonce and time, as a page server may
      body["noncestr"] = "nonce" + std::to_string(i);
      body["timestamp"] = i % 4 == 1 ? json(1414587457) : json("1414587457");
    }
    requests.push_back(signature_request("hr", body));
  }
  const auto answers = http_concurrently(broker.port(), requests);

  std::map<ticket_kind, std::set<std::string>> served;
  int waited = 0, signatures = 0;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    const auto& answer = answers[i];
    ASSERT_EQ(answer.status, 200u) << requests[i].target << ": " << answer.error << answer.body;
    if (answer.took >= 200ms) ++waited;
    const auto body = json::parse(answer.body);
    EXPECT_EQ(body["app"], "hr");
    switch (i % 3) {
      case 0:
        served[ticket_kind::jsapi].insert(ticket_of(answer));
        break;
      case 1:
        served[ticket_kind::agent_config].insert(ticket_of(answer));
        break;
      default: {
        const auto asked = json::parse(requests[i].body);
        EXPECT_EQ(body["corpid"], corpid);
        EXPECT_EQ(body["agentid"], hr_agentid);
        EXPECT_EQ(body["url"], asked["url"].get<std::string>().substr(
                                   0, asked["url"].get<std::string>().find('#')))
            << "the #fragment is not signed";
        if (asked.contains("noncestr")) {
          EXPECT_EQ(body["noncestr"], asked["noncestr"]);
          EXPECT_EQ(body["timestamp"], 1414587457);
        } else {
          EXPECT_EQ(body["noncestr"].get<std::string>().size(), 16u);
          EXPECT_NEAR(body["timestamp"].get<double>(), static_cast<double>(unix_now()), 5);
        }
        for (const auto& part : signed_parts) {
          const auto ticket = signing_ticket(*fake_, hr.secret, part.kind, body, part.name);
          ASSERT_TRUE(ticket) << part.name << ": signed with no ticket WeCom issued";
          served[part.kind].insert(*ticket);
        }
        ++signatures;
      }
    }
  }
  std::cout << "[ figures  ] " << answers.size() << " concurrent ticket/signature requests ("
            << signatures << " signatures checked), " << waited
            << " waited for the cold broker; upstream calls: gettoken "
            << fake_->gettoken_calls(hr.secret) << ", jsapi "
            << fake_->ticket_calls(hr.secret, ticket_kind::jsapi) << ", agent_config "
            << fake_->ticket_calls(hr.secret, ticket_kind::agent_config) << "\n";
  EXPECT_GE(waited, 100) << "the requests must have arrived while the broker was cold";
  EXPECT_EQ(fake_->gettoken_calls(hr.secret), 1);
  for (const auto& part : signed_parts) {
    EXPECT_EQ(fake_->ticket_calls(hr.secret, part.kind), 1) << part.name;
    ASSERT_EQ(served[part.kind].size(), 1u) << part.name << ": one ticket served and signed with";
    EXPECT_EQ(fake_->check_ticket(part.kind, *served[part.kind].begin()), token_status::valid);
  }
}

class tickets_lifetime_test : public tickets_test,
                              public ::testing::WithParamInterface<expiry_behaviour> {};

// 20 s of 6-second tokens and tickets under load: every signature is made with a ticket WeCom
// holds valid when the answer arrives, so is every ticket the drop-ins serve, no request fails,
// and upstream sees at most two calls per lifetime of each. Half-way, WeCom revokes the token
// early and a front end reports both tickets: their refreshes meet the revoked token, report it,
// and succeed with the new one.
TEST_P(tickets_lifetime_test, every_signature_is_made_with_a_ticket_wecom_holds_valid) {
  constexpr auto lifetime = 6s;
  constexpr auto duration = 20s;
  constexpr auto revoke_after = 10s;
  fake_->set_behaviour(GetParam());
  fake_->set_lifetime(lifetime);
  const auto hr = add_app("hr");
  auto changes = both_tickets_for("hr");
  changes["refresh"] = {{"min_interval_s", 1}};
  const auto& broker = start_broker(make_config(free_port(), changes));
  ASSERT_EQ(await_ok(broker, "/v1/apps/hr/jsapi_ticket", 5s).status, 200u);
  ASSERT_EQ(await_ok(broker, "/v1/apps/hr/agent_ticket", 5s).status, 200u);
  const int gettoken_at_start = fake_->gettoken_calls(hr.secret);
  std::map<ticket_kind, int> calls_at_start;
  for (const auto& part : signed_parts) {
    calls_at_start[part.kind] = fake_->ticket_calls(hr.secret, part.kind);
  }
  const auto started = steady_clock::now();

  std::atomic<int> signatures{0}, dropin_tickets{0}, failed{0}, invalid{0};
  // The first few of each are reported; the counts say how many there were.
  const auto fail = [](std::atomic<int>& counter, const std::string& what) {
    if (++counter <= 5) ADD_FAILURE() << what;
  };
  std::vector<std::jthread> clients;
  for (int client = 0; client < 3; ++client) {
    clients.emplace_back([&, client] {
      for (int n = 0; steady_clock::now() - started < duration; ++n) {
        json body{{"url", "https://h5.example.com/app/page-" + std::to_string(n) +
                              "?from=" + std::to_string(client) + "#top"}};
        if (n % 2 == 1) {
          body["noncestr"] = std::to_string(client * 1'000'000 + n);
          body["timestamp"] = unix_now();
        }
        const auto answer = http_call(broker.port(), signature_request("hr", body));
        const auto received_at = system_clock::now();
        if (answer.status != 200) {
          fail(failed, "signature request failed: " + std::to_string(answer.status) + " " +
                           answer.error + " " + answer.body);
          continue;
        }
        const auto signed_answer = json::parse(answer.body);
        for (const auto& part : signed_parts) {
          const auto ticket =
              signing_ticket(*fake_, hr.secret, part.kind, signed_answer, part.name);
          if (!ticket) {
            fail(invalid, std::string(part.name) + " signed with no ticket WeCom issued");
            continue;
          }
          if (const auto status = fake_->check_ticket(part.kind, *ticket, received_at);
              status != token_status::valid) {
            fail(invalid, std::string(part.name) + " signed with a ticket that is " +
                              fake::to_string(status) + " at WeCom");
          }
        }
        ++signatures;
      }
    });
  }
  // An unmodified SDK: a token from the broker, then tickets through the drop-ins keyed by it,
  // holding on to the token for a while as SDKs cache it (replaced ones stay good 5 min).
  clients.emplace_back([&] {
    std::string token;
    for (int n = 0; steady_clock::now() - started < duration; ++n) {
      if (n % 40 == 0) {
        const auto answer = get_token(broker, "hr");
        if (answer.status != 200) {
          fail(failed, "token request failed: " + answer.error + " " + answer.body);
          continue;
        }
        token = seen_token(answer);
      }
      const auto kind = n % 2 == 0 ? ticket_kind::jsapi : ticket_kind::agent_config;
      const auto answer = http_get(
          broker.port(), kind == ticket_kind::jsapi
                             ? "/cgi-bin/get_jsapi_ticket?access_token=" + token
                             : "/cgi-bin/ticket/get?access_token=" + token + "&type=agent_config");
      const auto received_at = system_clock::now();
      const auto body = json::parse(answer.body, nullptr, /*allow_exceptions=*/false);
      if (answer.status != 200 || !body.is_object() || body.value("errcode", -2) != 0) {
        fail(failed, "drop-in " + fake::to_string(kind) + " ticket request failed: " +
                         std::to_string(answer.status) + " " + answer.error + " " + answer.body);
        continue;
      }
      if (const auto status = fake_->check_ticket(kind, body.value("ticket", ""), received_at);
          status != token_status::valid) {
        fail(invalid, "the drop-in served a " + fake::to_string(kind) + " ticket that is " +
                          fake::to_string(status) + " at WeCom");
      }
      ++dropin_tickets;
    }
  });

  // The clients keep going meanwhile: these are events at a time, not synchronisation.
  std::this_thread::sleep_until(started + revoke_after);
  const int gettoken_before_revocation = fake_->gettoken_calls(hr.secret);
  fake_->revoke_tokens(hr.secret);
  std::vector<http_exchange> reports;
  for (const auto* kind : {"jsapi_ticket", "agent_ticket"}) {
    const auto current = http_get(broker.port(), std::string("/v1/apps/hr/") + kind);
    ASSERT_EQ(current.status, 200u) << current.body;
    reports.push_back({.method = "POST",
                       .target = std::string("/v1/apps/hr/") + kind + "/invalidate",
                       .body = json{{"ticket", ticket_of(current)}}.dump()});
  }
  const auto reported = http_concurrently(broker.port(), reports);
  for (std::size_t i = 0; i < reported.size(); ++i) {
    ASSERT_EQ(reported[i].status, 200u) << reports[i].target << ": " << reported[i].body;
    EXPECT_EQ(fake_->check_ticket(signed_parts[i].kind, ticket_of(reported[i])),
              token_status::valid)
        << reports[i].target;
  }
  clients.clear();  // joins

  const auto elapsed = std::chrono::duration<double>(steady_clock::now() - started);
  const double lifetimes = elapsed.count() / std::chrono::duration<double>(lifetime).count();
  const int gettoken = fake_->gettoken_calls(hr.secret) - gettoken_at_start;
  std::map<ticket_kind, int> calls;
  for (const auto& part : signed_parts) {
    calls[part.kind] = fake_->ticket_calls(hr.secret, part.kind) - calls_at_start[part.kind];
  }
  std::cout << "[ figures  ] " << ::testing::UnitTest::GetInstance()->current_test_info()->name()
            << ": over " << lifetimes << " lifetimes: gettoken=" << gettoken
            << " jsapi_ticket calls=" << calls[ticket_kind::jsapi]
            << " agent_config ticket calls=" << calls[ticket_kind::agent_config] << " ("
            << calls[ticket_kind::jsapi] / lifetimes << " and "
            << calls[ticket_kind::agent_config] / lifetimes
            << " per lifetime); signatures checked=" << signatures
            << " (2 each), drop-in tickets checked=" << dropin_tickets << ", failed=" << failed
            << ", invalid=" << invalid << "\n";
  RecordProperty("signatures_checked", signatures.load());
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(invalid, 0);
  EXPECT_GT(signatures, 300);
  EXPECT_GT(dropin_tickets, 100);

  // The revoked token was reported by a ticket refresh, which then went through with the new
  // token: WeCom saw the revoked token rejected and a gettoken after the revocation.
  EXPECT_NE(broker.log().find("upstream rejected the access_token it was called with (errcode "
                              "40014); reporting it"),
            std::string::npos);
  EXPECT_GT(fake_->gettoken_calls(hr.secret), gettoken_before_revocation);
  EXPECT_EQ(fake_->check(seen_token(get_token(broker, "hr"))), token_status::valid)
      << "the broker serves the token that replaced the revoked one";
  // Two calls per lifetime at most, plus the reports: the rejected call and its retry.
  const int ceiling = static_cast<int>(2 * lifetimes) + 1 + 2;
  EXPECT_LE(gettoken, ceiling);
  for (const auto& part : signed_parts) EXPECT_LE(calls[part.kind], ceiling) << part.name;
}

INSTANTIATE_TEST_SUITE_P(behaviours, tickets_lifetime_test,
                         ::testing::Values(expiry_behaviour::same_token_keeps_expiry,
                                           expiry_behaviour::same_token_seconds_left,
                                           expiry_behaviour::new_token_each_call),
                         [](const auto& test) {
                           return behaviour_test_name(test.param, "ticket");
                         });

// The budget holds whatever the reports: of 20 back-to-back invalidations, only those within
// ticket_calls_per_hour reach WeCom; the rest are answered with the held ticket, served until
// its expiry, and then 503 with Retry-After (when the budget allows a call again).
TEST_F(tickets_test, the_budget_holds_under_twenty_invalidations_then_503_after_expiry) {
  constexpr int budget = 3;
  fake_->set_ticket_lifetime(3s);
  const auto hr = add_app("hr");
  auto changes = tickets_for("hr", {"jsapi"});
  changes["refresh"] = {{"ticket_calls_per_hour", budget}, {"min_interval_s", 0}};
  const auto& broker = start_broker(make_config(free_port(), changes));
  const auto first = await_ok(broker, "/v1/apps/hr/jsapi_ticket", 5s);
  ASSERT_EQ(first.status, 200u) << first.body;

  auto held = ticket_of(first);
  std::set<std::string> answered;
  for (int i = 0; i < 20; ++i) {
    const auto answer = http_call(broker.port(), {.method = "POST",
                                                  .target = "/v1/apps/hr/jsapi_ticket/invalidate",
                                                  .body = json{{"ticket", held}}.dump()});
    ASSERT_EQ(answer.status, 200u) << "invalidation " << i << ": " << answer.body;
    held = ticket_of(answer);
    answered.insert(held);
    EXPECT_EQ(fake_->check_ticket(ticket_kind::jsapi, held), token_status::valid) << i;
  }
  const int calls = fake_->ticket_calls(hr.secret, ticket_kind::jsapi);
  std::cout << "[ figures  ] 20 back-to-back invalidations with ticket_calls_per_hour=" << budget
            << ": " << calls << " ticket calls, " << answered.size()
            << " distinct tickets answered\n";
  EXPECT_EQ(calls, budget) << "the first fetch and two invalidations, then none";
  EXPECT_EQ(answered.size(), static_cast<std::size_t>(budget - 1));

  // The reported ticket is served on while it lives; then 503 until the budget allows a call.
  const auto expires_at = json::parse(http_get(broker.port(), "/v1/apps/hr/jsapi_ticket").body)
                              .at("expires_at")
                              .get<std::int64_t>();
  const auto give_up_at = steady_clock::now() + 10s;
  http_answer answer;
  while (steady_clock::now() < give_up_at) {
    answer = http_get(broker.port(), "/v1/apps/hr/jsapi_ticket");
    if (answer.status != 200) break;
    ASSERT_TRUE(ticket_of(answer) == held) << "the held ticket is served";
    ASSERT_EQ(fake_->check_ticket(ticket_kind::jsapi, held), token_status::valid)
        << "served past its expiry";
    std::this_thread::sleep_for(20ms);
  }
  expect_error(answer, 503u, "unavailable", "after the held ticket's expiry");
  EXPECT_GE(unix_now(), expires_at - 1) << "not before the held ticket's end";
  ASSERT_TRUE(answer.headers.contains("retry-after"));
  const int retry_after = std::stoi(answer.headers.at("retry-after"));
  EXPECT_GT(retry_after, 3000) << "the budget's hour, counted from the first call";
  EXPECT_LE(retry_after, 3600);
  const auto body = json::parse(answer.body);
  EXPECT_NE(body["message"].get<std::string>().find("budget"), std::string::npos) << answer.body;
  EXPECT_NE(body["errmsg"].get<std::string>().find("ticket_calls_per_hour"), std::string::npos);
  EXPECT_EQ(fake_->ticket_calls(hr.secret, ticket_kind::jsapi), budget);
  // So do the signature and the drop-in: nothing valid to sign or serve with.
  expect_error(
      http_call(broker.port(), signature_request("hr", {{"url", "https://h5.example.com/"}})), 503u,
      "unavailable", "signature without a ticket");
  const auto dropin = http_get(broker.port(), "/cgi-bin/get_jsapi_ticket?access_token=" +
                                                  seen_token(get_token(broker, "hr")));
  EXPECT_NE(wecom_errcode(dropin), 0);
  EXPECT_EQ(fake_->ticket_calls(hr.secret, ticket_kind::jsapi), budget);
}

TEST_F(tickets_test, the_dropins_serve_the_tickets_to_tokens_the_broker_handed_out) {
  const auto hr = add_app("hr");
  add_app("crm");  // no tickets
  const auto& broker = start_broker(make_config(free_port(), both_tickets_for("hr")));
  const auto jsapi = await_ok(broker, "/v1/apps/hr/jsapi_ticket", 5s);
  const auto agent = await_ok(broker, "/v1/apps/hr/agent_ticket", 5s);
  ASSERT_EQ(jsapi.status, 200u);
  ASSERT_EQ(agent.status, 200u);
  const auto gettoken =
      json::parse(http_get(broker.port(), "/cgi-bin/gettoken?corpid=" + std::string(corpid) +
                                              "&corpsecret=" + hr.secret)
                      .body);
  ASSERT_EQ(gettoken["errcode"], 0);
  const auto token = gettoken["access_token"].get<std::string>();
  seen_token(get_token(broker, "hr"));
  const auto get_jsapi = [&](const std::string& with) {
    return http_get(broker.port(), "/cgi-bin/get_jsapi_ticket?access_token=" + with);
  };
  const auto get_agent = [&](const std::string& with) {
    return http_get(broker.port(),
                    "/cgi-bin/ticket/get?access_token=" + with + "&type=agent_config");
  };
  // WeCom's exact shape, the same ticket as the /v1 routes.
  const auto expect_same = [](const http_answer& dropin, const http_answer& v1) {
    ASSERT_EQ(dropin.status, 200u);
    const auto body = json::parse(dropin.body);
    EXPECT_EQ(body.size(), 4u) << "errcode, errmsg, ticket, expires_in";
    EXPECT_EQ(body["errcode"], 0);
    EXPECT_EQ(body["errmsg"], "ok");
    EXPECT_TRUE(body["ticket"] == ticket_of(v1)) << "not the ticket /v1 serves";
    EXPECT_NEAR(body["expires_in"].get<double>(), json::parse(v1.body)["expires_in"].get<double>(),
                2);
  };
  expect_same(get_jsapi(token), jsapi);
  expect_same(get_agent(token), agent);

  // A real client: curl, as a page server's SDK would call WeCom.
  const auto curled = curl_get("http://127.0.0.1:" + std::to_string(broker.port()) +
                               "/cgi-bin/ticket/get?access_token=" + token + "&type=agent_config");
  ASSERT_EQ(curled.exit_code, 0) << "curl failed (scripts/install-deps.sh installs it)";
  const auto curled_body = json::parse(curled.output, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(curled_body.is_object()) << "not JSON";
  EXPECT_EQ(curled_body["errcode"], 0);
  EXPECT_TRUE(curled_body["ticket"] == ticket_of(agent));

  // The token is replaced (reported by a service); a client still holding it keeps getting
  // tickets for the next 5 minutes, and so does the new one.
  const auto replaced = http_call(broker.port(), {.method = "POST",
                                                  .target = "/v1/apps/hr/token/invalidate",
                                                  .body = json{{"access_token", token}}.dump()});
  ASSERT_EQ(replaced.status, 200u) << replaced.body;
  const auto new_token = seen_token(replaced);
  ASSERT_TRUE(new_token != token) << "the fake issues a new token each call";
  expect_same(get_jsapi(token), jsapi);
  expect_same(get_agent(new_token), agent);
  const auto curled_old = curl_get("http://127.0.0.1:" + std::to_string(broker.port()) +
                                   "/cgi-bin/get_jsapi_ticket?access_token=" + token);
  ASSERT_EQ(curled_old.exit_code, 0);
  EXPECT_EQ(json::parse(curled_old.output)["errcode"], 0);

  // WeCom's errors, HTTP 200.
  EXPECT_EQ(wecom_errcode(get_jsapi("not-a-token-this-broker-handed-out")), 40014);
  EXPECT_EQ(wecom_errcode(get_agent("not-a-token-this-broker-handed-out")), 40014);
  const auto crm_token = seen_token(await_token(broker, "crm", 5s));
  EXPECT_EQ(wecom_errcode(get_jsapi(crm_token)), 48002);
  EXPECT_EQ(wecom_errcode(get_agent(crm_token)), 48002);
  EXPECT_EQ(wecom_errcode(http_get(broker.port(), "/cgi-bin/get_jsapi_ticket")), 41001);
  EXPECT_EQ(wecom_errcode(http_get(broker.port(), "/cgi-bin/ticket/get?type=agent_config")), 41001);
  EXPECT_EQ(wecom_errcode(http_get(broker.port(), "/cgi-bin/ticket/get?access_token=" + token)),
            40097);
  EXPECT_EQ(wecom_errcode(http_get(broker.port(),
                                   "/cgi-bin/ticket/get?access_token=" + token + "&type=jsapi")),
            40097);
  EXPECT_EQ(fake_->ticket_calls(hr.secret, ticket_kind::jsapi), 1) << "all from the cache";
  EXPECT_EQ(fake_->ticket_calls(hr.secret, ticket_kind::agent_config), 1);
}

TEST_F(tickets_test, bad_input_is_refused_with_a_json_error) {
  const auto hr = add_app("hr");
  add_app("crm");  // no tickets
  add_app("web");  // the jsapi ticket alone, and no agentid
  auto changes = both_tickets_for("hr");
  changes["apps"]["web"] = {{"tickets", {"jsapi"}}};
  const auto& broker = start_broker(make_config(free_port(), changes));
  ASSERT_EQ(await_ok(broker, "/v1/apps/hr/jsapi_ticket", 5s).status, 200u);
  const auto sign = [&](const std::string& app, const std::string& body) {
    return http_call(
        broker.port(),
        {.method = "POST", .target = "/v1/apps/" + app + "/jssdk_signature", .body = body});
  };
  const auto sign_url = [&](const std::string& url) {
    return sign("hr", json{{"url", url}}.dump());
  };

  expect_error(sign("hr", "{}"), 400u, "bad_request", "missing url");
  expect_error(sign("hr", R"({"url":42})"), 400u, "bad_request", "url not a string");
  expect_error(sign_url("/app/page?x=1"), 400u, "bad_request", "relative url");
  expect_error(sign_url("h5.example.com/app"), 400u, "bad_request", "url without a scheme");
  expect_error(sign_url("ftp://h5.example.com/app"), 400u, "bad_request", "not http(s)");
  expect_error(sign_url("https:///app"), 400u, "bad_request", "url without a host");
  const std::string base = "https://h5.example.com/app?q=";
  const auto of_size = [&](std::size_t size) {
    return base + std::string(size - base.size(), 'x');
  };
  expect_error(sign_url(of_size(2049)), 400u, "bad_request", "2049-byte url");
  EXPECT_EQ(sign_url(of_size(2048)).status, 200u) << "2048 bytes is allowed";
  expect_error(sign("hr", "{\"url\":"), 400u, "bad_request", "truncated JSON");
  expect_error(sign("hr", "url=https://h5.example.com/"), 400u, "bad_request", "a form body");
  expect_error(sign("hr", R"(["https://h5.example.com/"])"), 400u, "bad_request", "an array");
  expect_error(sign("hr", R"({"url":"https://h5.example.com/","timestamp":-5})"), 400u,
               "bad_request", "negative timestamp");
  expect_error(sign("hr", R"({"url":"https://h5.example.com/","noncestr":"a b"})"), 400u,
               "bad_request", "noncestr with a space");
  expect_error(sign("payroll", R"({"url":"https://h5.example.com/"})"), 404u, "unknown_app",
               "unknown app");
  expect_error(sign("crm", R"({"url":"https://h5.example.com/"})"), 404u, "not_configured",
               "an app without tickets");

  // An app with the jsapi ticket alone signs wx.config only.
  const auto web = sign("web", R"({"url":"https://h5.example.com/"})");
  ASSERT_EQ(web.status, 200u) << web.body;
  const auto web_body = json::parse(web.body);
  EXPECT_TRUE(web_body.contains("config"));
  EXPECT_FALSE(web_body.contains("agent_config"));
  EXPECT_TRUE(web_body["agentid"].is_null());

  expect_error(http_get(broker.port(), "/v1/apps/web/agent_ticket"), 404u, "not_configured",
               "agent_ticket of an app with jsapi alone");
  expect_error(http_get(broker.port(), "/v1/apps/crm/jsapi_ticket"), 404u, "not_configured",
               "jsapi_ticket of an app without tickets");
  expect_error(http_get(broker.port(), "/v1/apps/payroll/jsapi_ticket"), 404u, "unknown_app",
               "jsapi_ticket of an unknown app");
  const auto invalidate = [&](const std::string& target, const std::string& body) {
    return http_call(broker.port(), {.method = "POST", .target = target, .body = body});
  };
  for (const auto* body : {"{not json", R"({"ticket":5})", R"({"access_token":"x"})", "[]", ""}) {
    expect_error(invalidate("/v1/apps/hr/jsapi_ticket/invalidate", body), 400u, "bad_request",
                 std::string("jsapi invalidate with ") + body);
    expect_error(invalidate("/v1/apps/hr/agent_ticket/invalidate", body), 400u, "bad_request",
                 std::string("agent invalidate with ") + body);
  }
  expect_error(invalidate("/v1/apps/crm/jsapi_ticket/invalidate", R"({"ticket":"x"})"), 404u,
               "not_configured", "invalidate on an app without tickets");
  expect_error(http_call(broker.port(), {.method = "GET", .target = "/v1/apps/hr/jssdk_signature"}),
               405u, "method_not_allowed", "GET of the signature");
  EXPECT_EQ(fake_->ticket_calls(hr.secret, ticket_kind::jsapi), 1) << "bad input calls nothing";
}

TEST_F(tickets_test, a_client_allowed_an_app_reads_its_tickets_and_signatures_others_do_not) {
  add_app("hr");
  add_app("crm");
  auto changes = both_tickets_for("hr");
  changes["apps"]["crm"] = {{"tickets", {"jsapi"}}};
  changes["clients"] = {{"billing", {{"key_sha256", hex_sha256("billing-key")}, {"apps", {"hr"}}}},
                        {"crm-only", {{"key_sha256", hex_sha256("crm-key")}, {"apps", {"crm"}}}}};
  const auto& broker = start_broker(make_config(free_port(), changes));
  forbid_in_logs("billing-key", "a client key");
  forbid_in_logs("crm-key", "a client key");
  const auto as = [&](const std::string& key, http_exchange exchange) {
    if (!key.empty()) exchange.headers["Authorization"] = "Bearer " + key;
    return http_call(broker.port(), exchange);
  };
  const std::vector<http_exchange> hr_calls = {
      {.target = "/v1/apps/hr/jsapi_ticket"},
      {.target = "/v1/apps/hr/agent_ticket"},
      signature_request("hr", {{"url", "https://h5.example.com/"}}),
  };
  for (const auto& call : hr_calls) {
    EXPECT_EQ(as("billing-key", call).status, 200u) << call.target;
    expect_error(as("crm-key", call), 403u, "forbidden", "crm-only on " + call.target);
    expect_error(as("", call), 401u, "unauthorized", "no key on " + call.target);
    expect_error(as("wrong-key", call), 401u, "unauthorized", "a wrong key on " + call.target);
  }
  const auto held = as("billing-key", {.target = "/v1/apps/hr/jsapi_ticket"});
  for (const auto* kind : {"jsapi_ticket", "agent_ticket"}) {
    const http_exchange report{.method = "POST",
                               .target = std::string("/v1/apps/hr/") + kind + "/invalidate",
                               .body = R"({"ticket":"stale"})"};
    expect_error(as("crm-key", report), 403u, "forbidden", std::string("crm-only reports ") + kind);
    EXPECT_EQ(as("billing-key", report).status, 200u) << kind;
  }
  EXPECT_EQ(as("crm-key", {.target = "/v1/apps/crm/jsapi_ticket"}).status, 200u);
  const auto listing = json::parse(as("billing-key", {.target = "/v1/apps"}).body);
  ASSERT_EQ(listing.size(), 1u);
  EXPECT_EQ(listing[0]["app"], "hr");
  EXPECT_TRUE(listing[0]["tickets"].contains("jsapi_ticket"));
  EXPECT_TRUE(ticket_of(as("billing-key", {.target = "/v1/apps/hr/jsapi_ticket"})) ==
              ticket_of(held))
      << "a stale report does not replace the ticket";
}

TEST_F(tickets_test, metrics_apps_and_readyz_show_the_tickets_and_a_failing_one) {
  const auto hr = add_app("hr");
  // The first jsapi ticket call fails with a configuration error, retried at retry_max_ms.
  fake_->script_ticket_faults(
      hr.secret, ticket_kind::jsapi,
      {fault{.kind = fault_kind::errcode, .errcode = 48002, .errmsg = "api forbidden"}});
  auto changes = both_tickets_for("hr");
  changes["refresh"] = {{"retry_max_ms", 3000}};
  changes["upstream"] = {{"timeout_ms", 1000}};
  const auto& broker = start_broker(make_config(free_port(), changes));
  ASSERT_EQ(await_token(broker, "hr", 5s).status, 200u);
  ASSERT_EQ(await_ok(broker, "/v1/apps/hr/agent_ticket", 5s).status, 200u);
  const std::string failures =
      R"(token_broker_refresh_failures_total{app="hr",kind="jsapi_ticket",errcode="48002"})";
  const auto give_up_at = steady_clock::now() + 3s;
  while (metric_sample(http_get(broker.port(), "/metrics").body, failures) < 1 &&
         steady_clock::now() < give_up_at) {
    std::this_thread::sleep_for(20ms);
  }

  // While the jsapi ticket cannot be had.
  const auto unready = http_get(broker.port(), "/readyz");
  EXPECT_EQ(unready.status, 503u);
  EXPECT_EQ(json::parse(unready.body)["failing"], json::array({"hr/jsapi_ticket"})) << unready.body;
  const auto missing = http_get(broker.port(), "/v1/apps/hr/jsapi_ticket");
  expect_error(missing, 503u, "unavailable", "the failing ticket");
  EXPECT_EQ(json::parse(missing.body)["errcode"], 48002);
  EXPECT_TRUE(missing.headers.contains("retry-after"));
  auto listing = json::parse(http_get(broker.port(), "/v1/apps").body);
  EXPECT_EQ(listing[0]["state"], "fresh");
  EXPECT_EQ(listing[0]["tickets"]["jsapi_ticket"]["state"], "failing") << listing.dump();
  EXPECT_TRUE(listing[0]["tickets"]["jsapi_ticket"]["expires_at"].is_null());
  EXPECT_EQ(listing[0]["tickets"]["agent_ticket"]["state"], "fresh");
  EXPECT_EQ(metric_sample(http_get(broker.port(), "/metrics").body, failures), 1);

  // Once it can.
  const auto ready = await_ok(broker, "/readyz", 6s);
  EXPECT_EQ(ready.status, 200u) << ready.body;
  const auto jsapi = http_get(broker.port(), "/v1/apps/hr/jsapi_ticket");
  const auto agent = http_get(broker.port(), "/v1/apps/hr/agent_ticket");
  ASSERT_EQ(jsapi.status, 200u);
  listing = json::parse(http_get(broker.port(), "/v1/apps").body);
  EXPECT_EQ(listing[0]["tickets"]["jsapi_ticket"]["state"], "fresh");
  EXPECT_EQ(listing[0]["tickets"]["jsapi_ticket"]["expires_at"],
            json::parse(jsapi.body)["expires_at"]);
  EXPECT_EQ(listing[0]["tickets"]["agent_ticket"]["expires_at"],
            json::parse(agent.body)["expires_at"]);

  const auto page = http_get(broker.port(), "/metrics").body;
  const auto sample = [&](const std::string& series) { return metric_sample(page, series); };
  for (const auto* kind : {"access_token", "jsapi_ticket", "agent_ticket"}) {
    const std::string labels = std::string(R"(app="hr",kind=")") + kind + "\"";
    EXPECT_EQ(sample("token_broker_upstream_requests_total{" + labels + R"(,result="ok"})"), 1)
        << kind;
  }
  EXPECT_EQ(
      sample(
          R"(token_broker_upstream_requests_total{app="hr",kind="jsapi_ticket",result="error"})"),
      1);
  EXPECT_EQ(sample(failures), 1);
  EXPECT_EQ(sample(R"(token_broker_token_expiry_timestamp_seconds{app="hr",kind="jsapi_ticket"})"),
            json::parse(jsapi.body)["expires_at"].get<double>());
  EXPECT_EQ(sample(R"(token_broker_token_expiry_timestamp_seconds{app="hr",kind="agent_ticket"})"),
            json::parse(agent.body)["expires_at"].get<double>());
  EXPECT_GT(sample(R"(token_broker_token_expiry_timestamp_seconds{app="hr",kind="access_token"})"),
            0);
  EXPECT_GE(sample(R"(token_broker_requests_total{route="jsapi_ticket",code="503"})"), 1);
  for (const auto& ticket : {ticket_of(jsapi), ticket_of(agent)}) {
    EXPECT_EQ(page.find(ticket), std::string::npos) << "a ticket in the metrics";
  }
  EXPECT_EQ(fake_->ticket_calls(hr.secret, ticket_kind::jsapi), 2);
}

}  // namespace
}  // namespace token_broker::testing
