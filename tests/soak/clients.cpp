#include "clients.hpp"

#include <nlohmann/json.hpp>

namespace token_broker::soak {

using std::chrono::system_clock;

namespace {

// Longer than any wait the broker may impose (about twice upstream.timeout_ms), so that a
// timeout here means the broker hung.
constexpr auto request_timeout = 8000ms;
// A replica being restarted refuses connections; no need to spin on it.
constexpr auto reconnect_pause = 20ms;
// A report's answer may itself be a revoked token (revoked again meanwhile); report that too,
// a few times at most.
constexpr int max_report_depth = 3;
// Failures with no valid token are allowed; the report shows a few so they can be judged.
constexpr std::size_t tolerated_examples = 5;

std::int64_t unix_seconds_floor(system_clock::time_point at) {
  return std::chrono::floor<std::chrono::seconds>(at.time_since_epoch()).count();
}

steady::time_point on_steady_clock(system_clock::time_point at) {
  return steady::now() - std::chrono::duration_cast<steady::duration>(system_clock::now() - at);
}

std::string short_token(const std::string& token) {
  return token.substr(0, 6) + "…";
}

}  // namespace

client_fleet::client_fleet(std::vector<replica*> replicas, std::vector<std::string> apps,
                           const fake::fake_wecom& fake, ledger& tokens, findings& found)
    : replicas_(std::move(replicas)),
      apps_(std::move(apps)),
      fake_(fake),
      tokens_(tokens),
      found_(found) {
  for (std::size_t i = 0; i < replicas_.size(); ++i) {
    figures_.push_back(std::make_unique<replica_figures>());
  }
}

void client_fleet::start(int threads, std::uint32_t seed) {
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this, seed, i] { run(seed + static_cast<std::uint32_t>(i)); });
  }
}

void client_fleet::stop() {
  stopping_ = true;
  for (auto& thread : threads_) thread.join();
  threads_.clear();
}

long client_fleet::requests() const {
  long total = 0;
  for (const auto& figures : figures_) total += figures->requests;
  return total;
}

void client_fleet::run(std::uint32_t seed) {
  std::mt19937 random(seed);
  std::deque<connection> connections;  // not moved once made: each owns an io_context
  for (const auto* replica : replicas_) connections.emplace_back(replica->port());
  std::uniform_int_distribution<std::size_t> pick_app(0, apps_.size() - 1);
  for (std::size_t turn = 0; !stopping_; ++turn) {
    ask(connections, turn % replicas_.size(), apps_[pick_app(random)]);
  }
}

void client_fleet::ask(std::deque<connection>& connections, std::size_t replica,
                       const std::string& app) {
  auto& to = connections[replica];
  if (!to.client.connected()) to.incarnation = replicas_[replica]->incarnation();
  const auto sent = steady::now();
  const auto result =
      to.client.exchange(http::verb::get, "/v1/apps/" + app + "/token", "", request_timeout);
  const answer_context context{replica, instance{static_cast<int>(replica), to.incarnation}, app,
                               sent, steady::now()};
  ++figures_[replica]->requests;
  if (result.status != 200) return failed(context, result);
  if (const auto revoked = judge(context, result.body, nullptr)) {
    report_rejected(connections, replica, app, *revoked, 1);
  }
}

void client_fleet::report_rejected(std::deque<connection>& connections, std::size_t replica,
                                   const std::string& app, const std::string& token, int depth) {
  auto& to = connections[replica];
  if (!to.client.connected()) to.incarnation = replicas_[replica]->incarnation();
  const auto sent = steady::now();
  const auto result =
      to.client.exchange(http::verb::post, "/v1/apps/" + app + "/token/invalidate",
                         nlohmann::json{{"access_token", token}}.dump(), request_timeout);
  const answer_context context{replica, instance{static_cast<int>(replica), to.incarnation}, app,
                               sent, steady::now()};
  ++figures_[replica]->requests;
  ++figures_[replica]->invalidations;
  if (result.status != 0) {
    // Any answer means the replica heard the report; only a new token reaches the other
    // replica (through Redis).
    const bool replaced = result.status == 200 && result.body.find(token) == std::string::npos;
    tokens_.told(token, context.from, context.received, replaced);
  }
  if (result.status != 200) return failed(context, result);
  const auto revoked_again = judge(context, result.body, &token);
  if (revoked_again && depth < max_report_depth) {
    report_rejected(connections, replica, app, *revoked_again, depth + 1);
  }
}

std::optional<std::string> client_fleet::judge(const answer_context& context,
                                               const std::string& body,
                                               const std::string* reported) {
  const auto answer = nlohmann::json::parse(body, nullptr, false);
  if (!answer.is_object() || !answer.contains("access_token") ||
      !answer["access_token"].is_string() || !answer.contains("expires_at") ||
      !answer["expires_at"].is_number_integer() || answer.value("app", "") != context.app) {
    found_.add(no_dead_token, at_time(context.received) + " replica " +
                                  replicas_[context.replica]->name() + " app " + context.app +
                                  ": malformed token answer");
    return std::nullopt;
  }
  const auto token = answer["access_token"].get<std::string>();
  const auto status = fake_.check(token);  // at once: the token's state as the client gets it
  ++figures_[context.replica]->checked;
  tokens_.handed(context.app, token, context.from, context.received);

  const auto where = at_time(context.received) + " replica " + replicas_[context.replica]->name() +
                     "/" + std::to_string(context.from.incarnation) + " app " + context.app +
                     ": token " + short_token(token);
  const auto true_expiry = fake_.expires_at(token);
  if (!true_expiry) {
    found_.add(no_dead_token, where + " was never issued by upstream");
    return std::nullopt;
  }
  // A token whose one record was lost (its fetcher killed, Redis emptied) comes back from
  // upstream in behaviour (a) with its full lifetime, and nobody can know better.
  const auto unknowable = [&] {
    const auto issued = fake_.issued_if_repeated_in_full(token);
    // The answer was made at some moment before it arrived: the latest is given the benefit.
    return issued && tokens_.expiry_knowledge_lost(on_steady_clock(*issued), context.received);
  };
  const bool promised_too_much = answer["expires_at"].get<std::int64_t>() >
                                 unix_seconds_floor(*true_expiry + expiry_precision);
  if (promised_too_much && unknowable()) {
    ++figures_[context.replica]->unknowable_expiry;
  } else if (promised_too_much) {
    found_.add(no_dead_token, where + " promised an expiry later than upstream's");
  }
  if (reported && token == *reported) {
    found_.add(no_dead_token, where + " was answered to the report of that very token");
  }
  switch (status) {
    case fake::token_status::valid:
      return std::nullopt;
    case fake::token_status::expired:
      if (unknowable()) {
        ++figures_[context.replica]->unknowable_expiry;
      } else {
        found_.add(no_dead_token, where + " had expired");
      }
      return std::nullopt;
    case fake::token_status::invalid:
      break;
  }
  // Revoked (it was issued): fine until the replica has been told.
  if (tokens_.was_told(token, context.from, context.sent)) {
    found_.add(no_dead_token, where + " is revoked and the replica had been told");
  } else {
    ++figures_[context.replica]->revoked_before_told;
  }
  return token;
}

void client_fleet::failed(const answer_context& context, const http_result& result) {
  auto& figures = *figures_[context.replica];
  const auto& replica = *replicas_[context.replica];
  if (result.status == 0 && (replica.down() || context.from.incarnation != replica.incarnation())) {
    ++figures.killed_connections;
    if (result.connect_failed) std::this_thread::sleep_for(reconnect_pause);
    return;
  }
  const std::string kind = result.status != 0 ? "HTTP " + std::to_string(result.status)
                                              : result.error.substr(0, result.error.find(':'));
  {
    const std::scoped_lock lock(figures.mutex);
    ++figures.failures[kind];
  }
  const auto detail = at_time(context.received) + " replica " + replica.name() + "/" +
                      std::to_string(context.from.incarnation) + " app " + context.app + ": " +
                      kind + " (" +
                      (result.status != 0 ? result.body.substr(0, 160) : result.error) + ")";
  const auto valid = tokens_.valid_token_for_failure(context.app, context.from, context.received);
  if (!valid) {
    ++figures.failures_no_valid_token;
    const std::scoped_lock lock(figures.mutex);
    if (figures.tolerated.size() < tolerated_examples) figures.tolerated.push_back(detail);
    return;
  }
  found_.add(no_needless_failure, detail + " while " + *valid);
}

}  // namespace token_broker::soak
