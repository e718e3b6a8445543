// The broker's apps and their credentials across a reload (SPEC §2 SIGHUP): tickets added to
// an app start, tickets dropped stop, and the app's token is kept through both.
#include "token_broker/broker.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

namespace token_broker {
namespace {

using namespace std::chrono_literals;

class broker_test : public ::testing::Test {
 protected:
  void SetUp() override {
    level_ = spdlog::get_level();
    spdlog::set_level(spdlog::level::off);
    // Values with hours left: the refreshers adopt them and call nothing (upstream is a
    // closed port).
    settings_.upstream.base_url = "https://127.0.0.1:9";
    settings_.upstream.host = "127.0.0.1";
    settings_.upstream.port = "9";
    auto store = std::make_unique<memory_token_store>();
    stored_.reserve(3);  // save() takes its arguments by reference until io_ runs it
    for (const auto kind : {credential_kind::access_token, credential_kind::jsapi_ticket,
                            credential_kind::agent_ticket}) {
      stored_.push_back(
          {{kind, "hr"}, {"STORED-" + std::string(to_string(kind)), clock::now() + 2h}});
      asio::co_spawn(io_, store->save(stored_.back().first, stored_.back().second), asio::detached);
    }
    io_.run();
    io_.restart();
    store_ = std::move(store);
  }
  void TearDown() override { spdlog::set_level(level_); }

  app_config hr(bool jsapi, bool agent) const {
    return app_config{.id = "hr",
                      .corpid = "ww0123456789abcdef",
                      .agentid = 1000002,
                      .jsapi_ticket = jsapi,
                      .agent_ticket = agent,
                      .secret = "s"};
  }
  bool run_until(auto done) {
    const auto give_up_at = std::chrono::steady_clock::now() + 2s;
    while (!done() && std::chrono::steady_clock::now() < give_up_at) io_.run_one_for(10ms);
    return done();
  }
  static bool served(const credential_refresher* credential) {
    return credential && credential->view()->servable(clock::now());
  }

  asio::io_context io_;
  config settings_;
  std::unique_ptr<token_store> store_;
  std::vector<std::pair<credential_id, stored_token>> stored_;
  spdlog::level::level_enum level_{};
};

TEST_F(broker_test, a_reload_starts_and_stops_tickets_and_keeps_the_token) {
  settings_.apps = {hr(false, false)};
  broker apps(io_.get_executor(), settings_, std::move(store_));
  apps.start();
  ASSERT_TRUE(run_until([&] { return served(apps.apps()->entry("hr")->token.get()); }));
  const auto token = apps.apps()->entry("hr")->token;
  EXPECT_FALSE(apps.apps()->entry("hr")->jsapi_ticket) << "only configured tickets";

  auto next = settings_;
  next.apps = {hr(true, true)};
  const auto added = apps.reload(next);
  EXPECT_EQ(added.kept, 1u);
  const auto* entry = apps.apps()->entry("hr");
  EXPECT_EQ(entry->token, token) << "the token is kept";
  ASSERT_TRUE(run_until([&] { return served(entry->jsapi_ticket.get()); }));
  ASSERT_TRUE(run_until([&] { return served(entry->agent_ticket.get()); }));
  EXPECT_EQ(entry->jsapi_ticket->view()->current->value, "STORED-jsapi_ticket");
  EXPECT_EQ(entry->agent_ticket->view()->current->value, "STORED-agent_ticket");
  const auto jsapi = entry->jsapi_ticket;
  const auto agent = entry->agent_ticket;

  next.apps = {hr(true, false)};
  apps.reload(next);
  io_.run_for(50ms);
  entry = apps.apps()->entry("hr");
  EXPECT_EQ(entry->token, token);
  EXPECT_EQ(entry->jsapi_ticket, jsapi) << "a ticket still listed is kept";
  EXPECT_FALSE(entry->agent_ticket);
  EXPECT_TRUE(agent->ended()) << "a ticket no longer listed stops";
  EXPECT_FALSE(jsapi->ended());

  apps.stop();
  io_.run_for(50ms);
}

TEST_F(broker_test, new_credentials_start_every_credential_of_the_app_over) {
  settings_.apps = {hr(true, false)};
  broker apps(io_.get_executor(), settings_, std::move(store_));
  apps.start();
  ASSERT_TRUE(run_until([&] { return served(apps.apps()->entry("hr")->jsapi_ticket.get()); }));
  const auto before = *apps.apps()->entry("hr");

  auto next = settings_;
  next.apps = {hr(true, false)};
  next.apps[0].secret = "a new secret";
  const auto changed = apps.reload(next);
  EXPECT_EQ(changed.credentials_changed, std::vector<std::string>{"hr"});
  const auto* entry = apps.apps()->entry("hr");
  EXPECT_NE(entry->token, before.token);
  EXPECT_NE(entry->jsapi_ticket, before.jsapi_ticket);
  io_.run_for(50ms);
  EXPECT_TRUE(before.token->ended());
  EXPECT_TRUE(before.jsapi_ticket->ended());
  EXPECT_FALSE(served(entry->jsapi_ticket.get()))
      << "not adopted from the store: the old credentials' ticket proves nothing";

  apps.stop();
  io_.run_for(50ms);
}

}  // namespace
}  // namespace token_broker
