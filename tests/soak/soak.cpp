// The fault soak (issue 6): two broker replicas on one real Redis, 6-second tokens, clients
// hammering both while the chaos injects every upstream fault class, revokes tokens early,
// restarts Redis and SIGKILLs one replica; then the figures and one verdict per assertion.
//
//   fault_soak [seconds]      default 180; SOAK_SEED replays a run's chaos schedule,
//                             SOAK_VERBOSE=1 prints the chaos as it happens, SOAK_LOG_DIR
//                             keeps the brokers' logs, Redis's and the timeline there.
// Exit status: 0 when every assertion holds, 1 when one fails, 2 when the soak could not run.
#include <signal.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "broker_fixture.hpp"  // corpid
#include "broker_process.hpp"
#include "chaos.hpp"
#include "clients.hpp"
#include "event_log.hpp"
#include "fake_wecom.hpp"
#include "findings.hpp"
#include "ledger.hpp"
#include "parse_number.hpp"
#include "redis_process.hpp"
#include "redis_reader.hpp"
#include "replica.hpp"
#include "sanitizers.hpp"

namespace token_broker::soak {
namespace {

using nlohmann::json;
using std::chrono::seconds;

// The setting under test: tokens live 6 s, so a 3-minute soak spans 30 lifetimes.
constexpr seconds token_lifetime{6};
constexpr int app_count = 4;
constexpr int client_threads = 4;
const std::string key_prefix = "soak:";
// The broker's refresh settings, scaled to 6-second tokens:
//  - ahead_s 3 (capped at half the lifetime anyway), jitter_s 0: refresh at mid-life, so two
//    gettoken calls per lifetime, and 2.4 s for retries before the token's last 0.6 s;
//  - upstream timeout 2 s, which is also how long callers wait for a token: longer than the
//    gap the broker must leave at the end of a token's life when upstream repeats tokens
//    (behaviours a, b: it stops serving 0.6 s before the expiry, and an adopted token is not
//    replaceable before 1 s past it), as the default 5 s is for real tokens; a hung call
//    still leaves a retry inside the 2.4 s before the token's last 0.6 s;
//  - retry 100 ms doubling to 1 s (a configuration errcode waits the full 1 s);
//  - min_interval_s 1, the smallest floor the config takes above none.
const json refresh_settings = {{"ahead_s", 3},
                               {"jitter_s", 0},
                               {"retry_min_ms", 100},
                               {"retry_max_ms", 1000},
                               {"min_interval_s", 1}};
// SPEC §1's three ways upstream may answer a repeated gettoken, each for a sixth of the soak:
// (c) a new token each call, (a) the same token with the full expires_in but its original
// expiry, (b) the same token with the seconds left.
const std::vector<std::pair<fake::expiry_behaviour, std::string>> phases = {
    {fake::expiry_behaviour::new_token_each_call, "(c) new token each call"},
    {fake::expiry_behaviour::same_token_keeps_expiry, "(a) same token, full expires_in"},
    {fake::expiry_behaviour::same_token_seconds_left, "(b) same token, seconds left"},
    {fake::expiry_behaviour::new_token_each_call, "(c) new token each call"},
    {fake::expiry_behaviour::same_token_keeps_expiry, "(a) same token, full expires_in"},
    {fake::expiry_behaviour::same_token_seconds_left, "(b) same token, seconds left"},
};
// Memory is measured from here on: start-up, the first tokens and TLS are warm.
constexpr seconds warm_up{20};
// Resident memory of the never-killed replica may grow this much from warm-up to the end.
// Measured: 16 to 60 KiB over 160 s (allocator noise, the metrics' errcode series as classes
// first appear) on 12.4 MiB. At 25,000 requests/s, 1 MiB catches a leak of a quarter byte per
// request, or of 1 KiB per refresh. Under ASan it is not judged: its quarantine holds freed
// memory by design.
constexpr long rss_growth_bound_kib = 1024;
constexpr bool judge_memory = !testing::under_address_sanitizer;

std::string random_secret() {
  std::random_device random;
  std::ostringstream secret;
  secret << "soak-";
  for (int i = 0; i < 4; ++i) secret << std::hex << std::setw(8) << std::setfill('0') << random();
  return secret.str();
}

json broker_config(std::uint16_t port, const std::string& base_url,
                   const std::filesystem::path& ca_file, std::uint16_t redis_port,
                   const std::vector<std::pair<std::string, std::filesystem::path>>& secrets) {
  json config = {
      {"listen", "127.0.0.1:" + std::to_string(port)},
      {"threads", 2},
      {"log_level", "info"},
      {"upstream",
       {{"base_url", base_url},
        {"ca_file", ca_file.string()},
        {"timeout_ms", upstream_timeout.count()}}},
      {"refresh", refresh_settings},
      {"redis",
       {{"url", "redis://127.0.0.1:" + std::to_string(redis_port) + "/0"},
        {"key_prefix", key_prefix}}},
      {"apps", json::object()},
  };
  for (const auto& [id, secret_file] : secrets) {
    config["apps"][id] = {{"corpid", testing::corpid}, {"secret_file", secret_file.string()}};
  }
  return config;
}

// The level is the second field of each line ("<time> <level> <message>").
std::vector<std::string> alarming_lines(const std::string& log) {
  std::vector<std::string> alarms;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    const auto level_at = line.find(' ');
    const auto level = level_at == std::string::npos ? std::string{} : line.substr(level_at + 1, 9);
    if (level.starts_with("error ") || level.starts_with("critical ") ||
        line.find("AddressSanitizer") != std::string::npos ||
        line.find("LeakSanitizer") != std::string::npos ||
        line.find("runtime error:") != std::string::npos) {
      alarms.push_back(line.substr(0, 240));
    }
  }
  return alarms;
}

void check_logs(const replica& broker, const std::vector<soak_app>& apps, findings& found) {
  int life = 0;
  for (const auto& log : broker.logs()) {
    const auto who = "replica " + broker.name() + "/" + std::to_string(life++) + " log: ";
    for (const auto& alarm : alarming_lines(log)) found.add(no_crash, who + alarm);
    for (const auto& app : apps) {
      if (log.find(app.secret) != std::string::npos) {
        found.add(no_crash, who + "the secret of " + app.id + " was logged");
      }
    }
    if (log.find("corpsecret") != std::string::npos) {
      found.add(no_crash, who + "a gettoken URL was logged");
    }
  }
}

void keep_logs(const std::filesystem::path& directory, const replica& a, const replica& b,
               const testing::redis_process& redis, const std::string& report) {
  std::filesystem::create_directories(directory);
  for (const auto* broker : {&a, &b}) {
    int life = 0;
    for (const auto& log : broker->logs()) {
      std::ofstream(directory /
                    ("broker-" + broker->name() + "-" + std::to_string(life++) + ".log"))
          << log;
    }
  }
  std::ofstream(directory / "redis.log") << redis.log();
  std::ofstream timeline(directory / "timeline.log");
  for (const auto& line : event_log().lines) timeline << line << "\n";
  std::ofstream(directory / "report.txt") << report;
}

int run(int duration_s, std::uint32_t seed) {
  const auto duration = seconds{duration_s};
  soak_started = steady::now();
  const testing::scratch_directory scratch;
  const auto tls = fake::generate_tls_material();
  fake::fake_wecom fake(fake::fake_options{
      .behaviour = phases.front().first, .lifetime = token_lifetime, .tls = tls});
  const auto ca_file = scratch.write("ca.pem", tls.ca_pem);

  std::vector<soak_app> apps;
  std::vector<std::pair<std::string, std::filesystem::path>> secret_files;
  for (int i = 1; i <= app_count; ++i) {
    soak_app app{"app" + std::to_string(i), random_secret()};
    fake.add_app(testing::corpid, app.secret);
    secret_files.emplace_back(app.id, scratch.write("secret-" + app.id, app.secret));
    apps.push_back(std::move(app));
  }

  testing::redis_process redis(testing::free_port(), scratch.path());
  const auto port_a = testing::free_port();
  const auto port_b = testing::free_port();
  replica a(
      "A",
      scratch.write(
          "config-a.json",
          broker_config(port_a, fake.base_url(), ca_file, redis.port(), secret_files).dump(2)),
      port_a);
  replica b(
      "B",
      scratch.write(
          "config-b.json",
          broker_config(port_b, fake.base_url(), ca_file, redis.port(), secret_files).dump(2)),
      port_b);
  const auto brokers_started = steady::now();
  a.start();
  b.start();
  log_event("replicas A and B started");

  findings found;
  ledger tokens(fake);
  const std::vector<replica*> replicas{&a, &b};
  std::vector<std::string> app_ids;
  for (const auto& app : apps) app_ids.push_back(app.id);
  client_fleet clients(replicas, app_ids, fake, tokens, found);
  chaos disorder(fake, redis, replicas, b, apps, tokens, found);
  redis_reader reader(redis.port(), key_prefix, apps, replicas, fake, tokens, found);
  clients.start(client_threads, seed);
  reader.start();
  disorder.start(seed + 7919);

  // Memory at warm-up, progress now and then, until the time is up.
  long rss_start = -1;
  const auto soak_from = steady::now();
  const auto soak_until = soak_from + duration;
  auto next_progress = soak_from + 30s;
  std::size_t phase = 0;
  while (steady::now() < soak_until) {
    std::this_thread::sleep_for(200ms);
    // Upstream's way with repeated calls changes by phase: the broker must be right in all.
    const auto due_phase =
        static_cast<std::size_t>((steady::now() - soak_from) * phases.size() / duration) %
        phases.size();
    if (due_phase != phase) {
      phase = due_phase;
      fake.set_behaviour(phases[phase].first);
      log_event("upstream behaviour: " + phases[phase].second);
    }
    if (rss_start < 0 && steady::now() - soak_from >= warm_up) {
      rss_start = resident_kib(a.pid());
      log_event("RSS of A after warm-up: " + std::to_string(rss_start) + " KiB");
    }
    if (steady::now() >= next_progress) {
      next_progress += 30s;
      std::cout << at_time(steady::now()) << " requests " << clients.requests() << ", faults "
                << disorder.injected_total() << ", findings "
                << found.count(no_dead_token) + found.count(no_needless_failure) +
                       found.count(redis_readers) + found.count(no_crash)
                << std::endl;
    }
  }
  log_event("time is up: stopping the chaos (the event under way completes)");
  disorder.stop();
  clients.stop();
  reader.stop();
  const auto counted_at = steady::now();
  const long rss_end = resident_kib(a.pid());
  const auto lived = std::chrono::duration<double>(counted_at - brokers_started).count();
  const int lifetimes =
      static_cast<int>(std::ceil(lived / static_cast<double>(token_lifetime.count())));

  std::ostringstream report;
  report << std::fixed << std::setprecision(1);
  report << "\n=== fault soak: " << duration_s << " s of chaos (brokers up " << lived
         << " s), seed " << seed << "\n"
         << app_count << " apps, tokens of " << token_lifetime.count()
         << " s (upstream behaviour c, a, b, c, a, b by sixths), 2 replicas on one Redis, "
         << client_threads << " client threads on keep-alive connections\n"
         << "broker settings: upstream.timeout_ms " << upstream_timeout.count() << ", refresh "
         << refresh_settings.dump() << "\n\n";

  // Assertion 3: gettoken calls per app.
  report << "gettoken calls per app (allowance = 2 x ceil(" << lived
         << " s / 6 s) = " << 2 * lifetimes << ", + chaos that may cost the app a call):\n";
  for (const auto& app : apps) {
    const int calls = fake.gettoken_calls(app.secret);
    const int allowance = 2 * lifetimes + disorder.may_cost(app.id);
    report << "  " << app.id << ": " << calls << " calls, allowance " << allowance << " (+"
           << disorder.may_cost(app.id) << ")\n";
    if (calls > allowance) {
      found.add(gettoken_budget, app.id + ": " + std::to_string(calls) +
                                     " gettoken calls, allowance " + std::to_string(allowance));
    }
  }

  // Assertion 4: both replicas run, stop cleanly, and logged nothing alarming.
  for (auto* broker : replicas) {
    if (!broker->running()) {
      found.add(no_crash, "replica " + broker->name() + " was not running at the end");
      continue;
    }
    const int exit_code = broker->stop();
    if (exit_code != 0) {
      found.add(no_crash, "replica " + broker->name() + " exited " + std::to_string(exit_code) +
                              " on SIGTERM");
    }
  }
  for (const auto* broker : replicas) check_logs(*broker, apps, found);

  // Assertion 5: memory of the replica never killed.
  const long rss_growth = rss_end - rss_start;
  if (rss_start < 0 || rss_end < 0) {
    found.add(flat_memory, "VmRSS could not be read");
  } else if (judge_memory && rss_growth > rss_growth_bound_kib) {
    found.add(flat_memory, "VmRSS grew " + std::to_string(rss_growth) + " KiB");
  }

  report << "\nrequests and answers:\n";
  long total_requests = 0, total_checked = 0;
  for (std::size_t i = 0; i < replicas.size(); ++i) {
    const auto& figures = clients.figures(i);
    total_requests += figures.requests;
    total_checked += figures.checked;
    report << "  replica " << replicas[i]->name() << ": " << figures.requests << " requests, "
           << figures.checked << " tokens checked with upstream, " << figures.invalidations
           << " invalidations, " << figures.revoked_before_told
           << " revoked tokens served before the replica was told, " << figures.killed_connections
           << " failures on a killed instance (expected), " << figures.unknowable_expiry
           << " expiries overstated that nobody could know (expected)\n";
    const std::scoped_lock lock(figures.mutex);
    report << "    failures: " << figures.failures_no_valid_token
           << " while no valid token existed";
    for (const auto& [kind, times] : figures.failures) report << "; " << kind << " x" << times;
    report << "\n";
    for (const auto& example : figures.tolerated) report << "      e.g. " << example << "\n";
  }
  report << "  total: " << total_requests << " requests (" << std::setprecision(0)
         << static_cast<double>(total_requests) / duration_s << "/s), " << total_checked
         << " tokens checked\n"
         << std::setprecision(1);
  report << "  Redis reader: " << reader.reads() << " reads, " << reader.missing_reads()
         << " found no key, " << reader.revoked_reads() << " found a revoked token\n";

  report << "\nchaos: " << disorder.injected_total() << " events:";
  for (const auto& [name, times] : disorder.injected())
    report << " " << name << " x" << times << ";";
  report << "\n\nVmRSS of replica A (never killed): " << rss_start << " KiB after "
         << warm_up.count() << " s, " << rss_end << " KiB at the end: growth " << rss_growth
         << " KiB (bound " << rss_growth_bound_kib << " KiB"
         << (judge_memory ? ")" : ", not judged under ASan)") << "\n\n";

  const std::vector<std::pair<assertion, std::string>> verdicts = {
      {no_dead_token,
       "1 no token served that upstream rejects (expired or overstated: only when nobody could "
       "know; revoked: only before told)"},
      {no_needless_failure, "2 no request failed while a valid token existed"},
      {gettoken_budget, "3 gettoken calls within the allowance"},
      {no_crash, "4 no crash: both replicas run and exit 0, logs clean"},
      {flat_memory, "5 memory flat"},
      {redis_readers, "6 Redis readers see valid tokens, caught up after a restart"},
  };
  bool passed = true;
  for (const auto& [which, title] : verdicts) {
    const int count = found.count(which);
    passed = passed && count == 0;
    report << (count == 0 ? "PASS " : "FAIL ") << title;
    if (count > 0) report << ": " << count << " violation(s)";
    report << "\n";
    for (const auto& example : found.examples(which)) report << "       " << example << "\n";
  }
  report << (passed ? "\nRESULT: PASS\n" : "\nRESULT: FAIL\n");
  std::cout << report.str() << std::flush;

  if (const char* directory = std::getenv("SOAK_LOG_DIR"); directory && *directory) {
    keep_logs(directory, a, b, redis, report.str());
    std::cout << "logs kept in " << directory << "\n";
  }
  return passed ? 0 : 1;
}

}  // namespace
}  // namespace token_broker::soak

int main(int argc, char** argv) {
  using namespace token_broker;
  try {
    const int duration_s =
        argc > 1 ? static_cast<int>(parse_number("seconds", argv[1], 30, 3600)) : 180;
    std::uint32_t seed = std::random_device{}();
    if (const char* given = std::getenv("SOAK_SEED"); given && *given) {
      seed = static_cast<std::uint32_t>(parse_number("SOAK_SEED", given, 0, 4294967295L));
    }
    const char* verbose = std::getenv("SOAK_VERBOSE");
    soak::event_log().verbose = verbose && *verbose && std::string(verbose) != "0";
    std::cout << "fault soak: " << duration_s << " s, SOAK_SEED=" << seed << std::endl;
    // A client writing to a connection the broker just closed must see an error, not die.
    signal(SIGPIPE, SIG_IGN);
    return soak::run(duration_s, seed);
  } catch (const std::exception& failure) {
    std::cerr << "fault soak could not run: " << failure.what() << "\n";
    return 2;
  }
}
