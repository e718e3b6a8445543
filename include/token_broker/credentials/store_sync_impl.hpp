// basic_store_sync's definitions, included with the engine's (engine_impl.hpp).
#pragma once

#include <spdlog/spdlog.h>

#include "token_broker/credentials/engine.hpp"
#include "token_broker/credentials/store_sync.hpp"

namespace token_broker {
namespace store_sync_detail {

// Events are lost while the subscription is down, and a key can vanish without one (an
// operator, eviction): a slow sweep catches up with what no event announced. Its cost is a
// script per thousand credentials per period.
constexpr std::chrono::seconds sweep_period{60};

// Another replica's write-back after a Redis restart announces its credentials one message
// each: the messages that arrive this close together are compared as one batch.
constexpr std::chrono::milliseconds event_gathering{10};

}  // namespace store_sync_detail

template <class Clock>
basic_store_sync<Clock>::basic_store_sync(basic_engine<Clock>& engine)
    : engine_(engine), wake_(engine.strand()) {}

template <class Clock>
void basic_store_sync<Clock>::notice(std::optional<credential_id> id) {
  if (id) {
    named_.insert(std::move(*id));
  } else {
    sweep_due_ = true;
  }
  if (idle_) wake_.cancel();
}

template <class Clock>
void basic_store_sync<Clock>::stop() {
  stopping_ = true;
  wake_.cancel();
}

template <class Clock>
asio::awaitable<void> basic_store_sync<Clock>::run() {
  using namespace store_sync_detail;
  auto next_sweep_at = Clock::now() + sweep_period;
  while (!stopping_) {
    if (!sweep_due_ && named_.empty()) {
      idle_ = true;
      wake_.expires_at(next_sweep_at);
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
      idle_ = false;
      if (Clock::now() >= next_sweep_at) sweep_due_ = true;
      continue;
    }
    if (!sweep_due_) {
      wake_.expires_after(event_gathering);
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
      if (stopping_) break;
    }

    const bool sweep = std::exchange(sweep_due_, false);
    const auto named = std::exchange(named_, {});
    if (sweep) next_sweep_at = Clock::now() + sweep_period;
    std::vector<std::shared_ptr<refresher>> compared;
    if (sweep) {
      compared = engine_.all();
    } else {
      for (const auto& id : named) {
        if (auto found = engine_.find(id)) compared.push_back(std::move(found));
      }
    }
    co_await compare(std::move(compared), sweep);
  }
}

template <class Clock>
asio::awaitable<void> basic_store_sync<Clock>::compare(
    std::vector<std::shared_ptr<refresher>> credentials, bool sweep) {
  if (credentials.empty()) co_return;
  auto& store = engine_.store();
  std::vector<credential_id> ids;
  ids.reserve(credentials.size());
  for (const auto& each : credentials) ids.push_back(each->id());
  const auto stored = co_await store.digests(std::move(ids));
  // Unreachable: its return is noticed, and compares everything.
  if (!stored || stopping_) co_return;

  const auto now = Clock::now();
  std::vector<std::pair<credential_id, stored_token>> behind;
  std::vector<refresher*> behind_credentials;
  std::size_t loading = 0;
  for (std::size_t i = 0; i < credentials.size(); ++i) {
    // Not started yet: its first task looks at the store anyway, a bounded number at once.
    if (!credentials[i]->started()) continue;
    const auto view = credentials[i]->view();
    const token* held = view->servable(now);
    switch (compare_with_store(held, (*stored)[i])) {
      case store_difference::store_is_newer:
        engine_.load_from_store(*credentials[i]);
        ++loading;
        break;
      case store_difference::store_is_behind:
        behind.push_back({credentials[i]->id(), stored_token{held->value, held->expires_at}});
        behind_credentials.push_back(credentials[i].get());
        break;
      case store_difference::none:
        break;
    }
  }

  std::size_t written = 0, unavailable = 0;
  if (!behind.empty()) {
    const auto outcomes = co_await store.save_all(std::move(behind));
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
      if (outcomes[i] == save_outcome::written) ++written;
      if (outcomes[i] == save_outcome::unavailable) ++unavailable;
      if (outcomes[i] == save_outcome::store_knows_better) {  // another replica wrote meanwhile
        engine_.load_from_store(*behind_credentials[i]);
        ++loading;
      }
    }
  }
  const auto level = written > 0 || unavailable > 0 || (sweep && loading > 0)
                         ? spdlog::level::info
                         : spdlog::level::debug;
  spdlog::log(level, "store {}: {} compared, {} loading the store's value, {} written back{}",
              sweep ? "sweep" : "events", credentials.size(), loading, written,
              unavailable > 0 ? fmt::format(", {} not written (store unreachable)", unavailable)
                              : std::string());
}

}  // namespace token_broker
