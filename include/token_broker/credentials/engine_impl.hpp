// basic_engine's definitions, included where it is instantiated: src/credentials/ for the
// daemon's clock, the simulated-time tests for theirs.
#pragma once

#include <spdlog/spdlog.h>

#include "token_broker/core/memory.hpp"
#include "token_broker/credentials/engine.hpp"
#include "token_broker/credentials/refresher_impl.hpp"
#include "token_broker/credentials/store_sync_impl.hpp"

namespace token_broker {
namespace engine_detail {

// The scheduler re-plans at least this often: a timer sleeps on CLOCK_MONOTONIC, which stands
// still while the host is suspended, but credential time (CLOCK_BOOTTIME) does not.
constexpr std::chrono::milliseconds max_sleep{30000};

// Tasks of credentials running at once. A task holds a coroutine frame and buffers while it
// waits for Redis or an upstream slot (16): a start with 100,000 credentials due at once
// starting them all would hold them all, and the heap would keep that peak long after.
constexpr std::size_t max_running = 64;

// So many tasks ending make a burst worth giving memory back after.
constexpr std::size_t burst = 1000;

}  // namespace engine_detail

template <class Clock>
basic_engine<Clock>::basic_engine(asio::any_io_executor executor, const refresh_config& refresh,
                                  std::chrono::milliseconds wait_limit,
                                  std::shared_ptr<upstream_caller> upstream, token_store& store)
    : strand_(asio::make_strand(std::move(executor))),
      store_(store),
      refresh_(refresh),
      wait_limit_(wait_limit),
      upstream_(std::move(upstream)),
      wake_(strand_) {
  if (store.shared()) sync_.emplace(*this);
}

template <class Clock>
void basic_engine<Clock>::start(supervisor& tasks) {
  tasks.spawn(strand_, "scheduler", "credential scheduler", [this] { return run(); });
  if (sync_) tasks.spawn(strand_, "store-sync", "store sync", [this] { return sync_->run(); });
}

template <class Clock>
void basic_engine<Clock>::stop() {
  asio::dispatch(strand_, [this] {
    stopping_ = true;
    wake_.cancel();
    if (sync_) sync_->stop();
    due_.clear();
    for (auto& [id, credential] : registry_) {
      credential->queued_at().reset();
      credential->end();
    }
  });
}

template <class Clock>
void basic_engine<Clock>::add(std::shared_ptr<refresher> credential) {
  asio::dispatch(strand_, [this, credential = std::move(credential)] {
    if (stopping_) return;
    auto& slot = registry_[credential->id()];
    if (slot) {
      unqueue(*slot);
      slot->end();
      forget_dependency(*slot);
    }
    slot = credential;
    if (const auto needed = credential->source().dependency()) {
      dependents_.emplace(*needed, credential->id());
    }
    credential->begin();
  });
}

template <class Clock>
void basic_engine<Clock>::remove(credential_id id) {
  asio::dispatch(strand_, [this, id = std::move(id)] {
    const auto found = registry_.find(id);
    if (found == registry_.end()) return;
    unqueue(*found->second);
    found->second->end();
    forget_dependency(*found->second);
    registry_.erase(found);
  });
}

template <class Clock>
void basic_engine<Clock>::forget_dependency(const refresher& credential) {
  const auto needed = credential.source().dependency();
  if (!needed) return;
  const auto [first, last] = dependents_.equal_range(*needed);
  for (auto each = first; each != last; ++each) {
    if (each->second == credential.id()) {
      dependents_.erase(each);
      return;
    }
  }
}

template <class Clock>
void basic_engine<Clock>::value_arrived(const credential_id& id) {
  const auto [first, last] = dependents_.equal_range(id);
  for (auto each = first; each != last; ++each) {
    if (const auto dependent = find(each->second)) dependent->retry_failed();
  }
}

template <class Clock>
void basic_engine<Clock>::apply(const refresh_config& refresh, std::chrono::milliseconds wait_limit,
                                std::shared_ptr<upstream_caller> upstream) {
  asio::dispatch(strand_, [this, refresh, wait_limit, upstream = std::move(upstream)] {
    refresh_ = refresh;
    wait_limit_ = wait_limit;
    if (upstream) upstream_ = upstream;
    for (auto& [id, credential] : registry_) credential->apply(refresh);
  });
}

template <class Clock>
void basic_engine<Clock>::store_changed(credential_id id) {
  asio::dispatch(strand_, [this, id = std::move(id)] {
    if (sync_ && !stopping_) sync_->notice(id);
  });
}

template <class Clock>
void basic_engine<Clock>::store_returned() {
  asio::dispatch(strand_, [this] {
    if (sync_ && !stopping_) sync_->notice(std::nullopt);
  });
}

template <class Clock>
void basic_engine<Clock>::load_from_store(refresher& credential) {
  if (stopping_) return;
  if (credential.busy()) return credential.defer_load();  // task_ended() loads
  // The load holds its refresher: a reload may remove it while Redis answers.
  auto load = [holder = credential.shared_from_this()] { return holder->load_from_store(); };
  asio::co_spawn(strand_, std::move(load), log_failure(credential));
}

template <class Clock>
std::shared_ptr<basic_refresher<Clock>> basic_engine<Clock>::find(const credential_id& id) const {
  const auto found = registry_.find(id);
  return found == registry_.end() ? nullptr : found->second;
}

template <class Clock>
std::vector<std::shared_ptr<basic_refresher<Clock>>> basic_engine<Clock>::all() const {
  std::vector<std::shared_ptr<refresher>> every;
  every.reserve(registry_.size());
  for (const auto& [id, credential] : registry_) every.push_back(credential);
  return every;
}

template <class Clock>
void basic_engine<Clock>::unqueue(refresher& credential) {
  if (auto& queued = credential.queued_at()) {
    due_.erase({*queued, credential.dependent(), &credential});
    queued.reset();
  }
}

template <class Clock>
void basic_engine<Clock>::plan(refresher& credential) {
  unqueue(credential);
  // A busy one plans again when its task ends; an ended one (removed, replaced) never again.
  if (stopping_ || credential.busy() || credential.ended()) return;
  const auto at = credential.next_attempt_at();
  due_.insert({at, credential.dependent(), &credential});
  credential.queued_at() = at;
  if (at < wake_at_) wake_.cancel();  // the scheduler sleeps past it: wake it to re-plan
}

template <class Clock>
std::function<void(std::exception_ptr)> basic_engine<Clock>::log_failure(
    const refresher& credential) const {
  return [name = log_name(credential.id())](std::exception_ptr failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& error) {
      spdlog::error("{}: a task ended unexpectedly: {}", name, error.what());
    } catch (...) {
      spdlog::error("{}: a task ended unexpectedly", name);
    }
  };
}

template <class Clock>
asio::awaitable<void> basic_engine<Clock>::run() {
  while (!stopping_) {
    const auto now = Clock::now();
    while (!due_.empty() && due_.begin()->at <= now && running_ < engine_detail::max_running) {
      auto* credential = due_.begin()->credential;
      due_.erase(due_.begin());
      credential->queued_at().reset();
      credential->set_running(true);
      ++running_;
      // The task holds its refresher: a removal meanwhile does not pull it away.
      auto task = [this, holder = credential->shared_from_this()]() -> asio::awaitable<void> {
        try {
          co_await holder->run();
        } catch (...) {
          spdlog::error("{}: its task ended unexpectedly", log_name(holder->id()));
        }
        task_ended(*holder);  // whatever happened: the slot is given back, the next planned
      };
      asio::co_spawn(strand_, std::move(task), log_failure(*credential));
    }
    // With every task slot taken, the next to end wakes the scheduler.
    const bool full = running_ >= engine_detail::max_running;
    wake_at_ = std::min(due_.empty() || full ? time_point::max() : due_.begin()->at,
                        now + engine_detail::max_sleep);
    wake_.expires_at(wake_at_);
    co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

template <class Clock>
void basic_engine<Clock>::task_ended(refresher& credential) {
  --running_;
  ++ended_since_trim_;
  credential.set_running(false);
  if (credential.take_deferred_load()) load_from_store(credential);
  plan(credential);
  // Refreshes that came due while every slot was taken start now (one planned earlier than
  // the scheduler's wake-up has woken it already: plan()).
  if (!due_.empty() && due_.begin()->at <= Clock::now()) {
    wake_.cancel();
  } else if (running_ == 0 && ended_since_trim_ >= engine_detail::burst) {
    // A burst is over (a start, a reload, a wave of refreshes): the heap it grew is free
    // again but scattered between what stays, which the allocator keeps resident.
    ended_since_trim_ = 0;
    release_free_memory();
  }
}

}  // namespace token_broker
