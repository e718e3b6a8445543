#include "token_broker/upstream/call_limit.hpp"

#include <algorithm>
#include <utility>

namespace token_broker {

using std::chrono::steady_clock;

// A coroutine in line for a slot. It sleeps on its own timer until a release hands it the
// slot and wakes it by cancelling that timer on the timer's own executor, since an Asio timer
// is not safe to touch from another thread.
struct call_limit::waiter {
  explicit waiter(const asio::any_io_executor& executor)
      : timer(executor, steady_clock::time_point::max()) {}

  asio::steady_timer timer;
};

call_limit::permit& call_limit::permit::operator=(permit&& other) noexcept {
  if (this != &other) {
    if (owner_) owner_->release();
    owner_ = std::exchange(other.owner_, nullptr);
  }
  return *this;
}

call_limit::permit::~permit() {
  if (owner_) owner_->release();
}

call_limit::call_limit(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

asio::awaitable<call_limit::permit> call_limit::acquire() {
  const auto executor = co_await asio::this_coro::executor;
  std::shared_ptr<waiter> queued;
  {
    const std::scoped_lock lock(mutex_);
    if (!take_free_slot()) {
      queued = std::make_shared<waiter>(executor);
      queue_.push_back(queued);
    }
  }
  // In line: woken (operation_aborted) only by the release that hands over its slot.
  if (queued) co_await queued->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return permit(this);
}

std::optional<call_limit::permit> call_limit::try_acquire() {
  const std::scoped_lock lock(mutex_);
  if (!take_free_slot()) return std::nullopt;
  return permit(this);
}

bool call_limit::take_free_slot() {
  // First come, first served: a free slot goes to the line before a newcomer.
  while (!queue_.empty() && queue_.front().expired()) queue_.pop_front();
  if (in_use_ >= capacity_ || !queue_.empty()) return false;
  ++in_use_;
  return true;
}

void call_limit::release() {
  std::shared_ptr<waiter> next;
  {
    const std::scoped_lock lock(mutex_);
    while (!next && !queue_.empty()) {
      next = queue_.front().lock();  // null for a waiter whose coroutine is gone
      queue_.pop_front();
    }
    if (!next) --in_use_;  // otherwise the slot passes straight on: in_use_ stays
  }
  if (next) {
    auto executor = next->timer.get_executor();
    asio::post(executor, [next = std::move(next)] { next->timer.cancel(); });
  }
}

std::size_t call_limit::in_use() const {
  const std::scoped_lock lock(mutex_);
  return in_use_;
}

std::size_t call_limit::waiting() const {
  const std::scoped_lock lock(mutex_);
  return static_cast<std::size_t>(std::count_if(
      queue_.begin(), queue_.end(), [](const auto& entry) { return !entry.expired(); }));
}

}  // namespace token_broker
