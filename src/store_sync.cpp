#include "token_broker/store_sync.hpp"

#include <spdlog/spdlog.h>

#include "token_broker/app_refresher.hpp"
#include "token_broker/broker.hpp"
#include "token_broker/logging.hpp"

namespace token_broker {
namespace {

using std::chrono::steady_clock;

// Events are lost while the subscription is down, and a key can vanish without one (an
// operator, eviction): a slow sweep catches up with what no event announced. Its cost is a
// script per thousand apps per period.
constexpr std::chrono::seconds sweep_period{60};

// Another replica's write-back after a Redis restart announces its apps one message each:
// the messages that arrive this close together are compared as one batch.
constexpr std::chrono::milliseconds event_gathering{10};

}  // namespace

store_difference compare_with_store(const token* held, const stored_digest& stored) {
  if (!held) return stored.present ? store_difference::store_is_newer : store_difference::none;
  if (!stored.present) return store_difference::store_is_behind;
  if (stored.digest != token_digest(held->value)) {
    // The save script decides again, atomically: a different token replaces only one that
    // ends sooner.
    return stored.expires_at > held->expires_at ? store_difference::store_is_newer
                                                : store_difference::store_is_behind;
  }
  if (stored.expires_at < held->expires_at - expiry_rounding) {
    return store_difference::store_is_newer;
  }
  if (stored.expires_at > held->expires_at + expiry_rounding) {
    return store_difference::store_is_behind;
  }
  return store_difference::none;
}

store_sync::store_sync(asio::any_io_executor executor, token_store& store,
                       const published<app_set>& apps)
    : strand_(asio::make_strand(executor)), store_(store), apps_(apps), wake_(strand_) {}

void store_sync::start() {
  asio::co_spawn(strand_, run(), log_unexpected_end("store sync"));
}

void store_sync::stop() {
  asio::post(strand_, [self = shared_from_this()] {
    self->stopping_ = true;
    self->wake_.cancel();
  });
}

void store_sync::notice(const std::string& app_id) {
  asio::post(strand_, [self = shared_from_this(), app_id] {
    if (app_id.empty()) {
      self->sweep_due_ = true;
    } else {
      self->named_.insert(app_id);
    }
    if (self->idle_) self->wake_.cancel();
  });
}

asio::awaitable<void> store_sync::run() {
  const auto self = shared_from_this();  // the coroutine keeps its sync alive
  auto next_sweep_at = steady_clock::now() + sweep_period;
  while (!stopping_) {
    if (!sweep_due_ && named_.empty()) {
      idle_ = true;
      wake_.expires_at(next_sweep_at);
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
      idle_ = false;
      if (steady_clock::now() >= next_sweep_at) sweep_due_ = true;
      continue;
    }
    if (!sweep_due_) {
      wake_.expires_after(event_gathering);
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
      if (stopping_) break;
    }

    const bool sweep = std::exchange(sweep_due_, false);
    const auto named = std::exchange(named_, {});
    if (sweep) next_sweep_at = steady_clock::now() + sweep_period;
    const auto apps = apps_.load();
    std::vector<std::shared_ptr<app_refresher>> compared;
    if (sweep) {
      compared = apps->in_order();
    } else {
      for (const auto& app_id : named) {
        if (auto* app = apps->find(app_id)) compared.push_back(app->shared_from_this());
      }
    }
    co_await compare(std::move(compared), sweep);
  }
}

asio::awaitable<void> store_sync::compare(std::vector<std::shared_ptr<app_refresher>> apps,
                                          bool sweep) {
  if (apps.empty()) co_return;
  std::vector<std::string> app_ids;
  app_ids.reserve(apps.size());
  for (const auto& app : apps) app_ids.push_back(app->app().id);
  const auto stored = co_await store_.digests(std::move(app_ids));
  // Unreachable: its return is noticed, and compares every app.
  if (!stored || stopping_) co_return;

  const auto now = clock::now();
  std::vector<std::pair<std::string, stored_token>> behind;
  std::vector<app_refresher*> behind_apps;
  std::size_t loading = 0;
  for (std::size_t i = 0; i < apps.size(); ++i) {
    const auto view = apps[i]->view();
    const token* held = view->servable(now);
    switch (compare_with_store(held, (*stored)[i])) {
      case store_difference::store_is_newer:
        apps[i]->store_changed();
        ++loading;
        break;
      case store_difference::store_is_behind:
        behind.push_back({apps[i]->app().id, stored_token{held->value, held->expires_at}});
        behind_apps.push_back(apps[i].get());
        break;
      case store_difference::none:
        break;
    }
  }

  std::size_t written = 0, unavailable = 0;
  if (!behind.empty()) {
    const auto outcomes = co_await store_.save_all(std::move(behind));
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
      if (outcomes[i] == save_outcome::written) ++written;
      if (outcomes[i] == save_outcome::unavailable) ++unavailable;
      if (outcomes[i] == save_outcome::newer_kept) {  // written meanwhile by another replica
        behind_apps[i]->store_changed();
        ++loading;
      }
    }
  }
  const auto level = written > 0 || unavailable > 0 || (sweep && loading > 0)
                         ? spdlog::level::info
                         : spdlog::level::debug;
  spdlog::log(level, "store {}: {} apps compared, {} loading the store's token, {} written back{}",
              sweep ? "sweep" : "events", apps.size(), loading, written,
              unavailable > 0 ? fmt::format(", {} not written (store unreachable)", unavailable)
                              : std::string());
}

}  // namespace token_broker
