#include "redis_reader.hpp"

#include <map>
#include <memory>
#include <optional>
#include <set>

#include "redis_test_client.hpp"

namespace token_broker::soak {

using std::chrono::system_clock;

namespace {

constexpr auto read_interval = 100ms;
// A key may be missing this long while Redis is whole and a replica holds a valid token: a
// refresh writes in milliseconds, and a replica reconnecting to a returned Redis catches it
// up at once. (Shorter than a refresh period, 3 s, so that the next refresh cannot hide a
// replica that does not catch Redis up.)
constexpr auto missing_allowance = 1s;

double seconds(steady::duration span) {
  return std::chrono::duration<double>(span).count();
}

}  // namespace

redis_reader::redis_reader(std::uint16_t port, std::string key_prefix, std::vector<soak_app> apps,
                           std::vector<replica*> replicas, const fake::fake_wecom& fake,
                           ledger& tokens, findings& found)
    : port_(port),
      key_prefix_(std::move(key_prefix)),
      apps_(std::move(apps)),
      replicas_(std::move(replicas)),
      fake_(fake),
      tokens_(tokens),
      found_(found) {}

void redis_reader::start() {
  thread_ = std::thread([this] { run(); });
}

void redis_reader::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void redis_reader::run() {
  std::unique_ptr<testing::redis_client> redis;
  std::map<std::string, steady::time_point> missing_since;  // per app, while missing
  std::set<std::string> reported_missing;                   // apps, per missing spell
  std::set<std::string> reported_revoked;                   // tokens
  const auto alive = [this](instance by) {
    const auto& replica = *replicas_[static_cast<std::size_t>(by.replica)];
    return !replica.down() && replica.incarnation() == by.incarnation;
  };

  while (!stopping_) {
    std::this_thread::sleep_for(read_interval);
    const auto whole_since = tokens_.redis_whole_since();
    if (!whole_since) {  // Redis is away: nothing to read, and nothing missing yet
      redis.reset();
      missing_since.clear();
      continue;
    }
    try {
      if (!redis) redis = std::make_unique<testing::redis_client>(port_);
      for (const auto& app : apps_) {
        const auto read_from = system_clock::now();
        const auto now = steady::now();
        const auto stored = redis->get_with_pttl(key_prefix_ + "access_token:" + app.id);
        ++reads_;
        const auto where = at_time(now) + " app " + app.id + ": Redis ";
        if (!stored.value) {
          ++missing_reads_;
          const auto since =
              std::max(missing_since.try_emplace(app.id, now).first->second, *whole_since);
          if (now - since <= missing_allowance || reported_missing.contains(app.id)) continue;
          const auto valid =
              tokens_.valid_token(app.id, now, [&](instance by, steady::time_point first) {
                return alive(by) && first + missing_allowance < now;
              });
          if (valid) {
            reported_missing.insert(app.id);
            found_.add(redis_readers, where + "has had no token for " +
                                          std::to_string(seconds(now - since)) +
                                          " s while a live replica holds one: " + *valid);
          }
          continue;
        }
        missing_since.erase(app.id);
        reported_missing.erase(app.id);

        const auto& token = *stored.value;
        const auto true_expiry = fake_.expires_at(token);
        if (!true_expiry) {
          found_.add(redis_readers, where + "holds a token upstream never issued");
          continue;
        }
        if (stored.pttl < 0) {
          found_.add(redis_readers, where + "holds a token with no expiry");
        } else if (const auto promised = read_from + std::chrono::milliseconds{stored.pttl};
                   promised > *true_expiry + expiry_precision) {
          found_.add(redis_readers,
                     where + "keeps a token " +
                         std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            promised - *true_expiry)
                                            .count()) +
                         " ms past its true expiry");
        }
        if (fake_.check(token) != fake::token_status::invalid) continue;
        ++revoked_reads_;
        if (tokens_.replaced_long_before(token, now) && reported_revoked.insert(token).second) {
          found_.add(redis_readers,
                     where + "still holds a revoked token that a replica replaced before");
        }
      }
    } catch (const std::runtime_error&) {
      redis.reset();  // Redis went away meanwhile; the next round reconnects
    }
  }
}

}  // namespace token_broker::soak
