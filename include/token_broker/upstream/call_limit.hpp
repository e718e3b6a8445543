// A cap on concurrent upstream calls: an asynchronous counting semaphore for coroutines.
//
// Without it, a start (or a reload) with thousands of apps opens thousands of TLS
// connections to WeCom at once: a burst upstream does not need, and heap that the allocator
// keeps long after the burst is over. Waiters are served in arrival order.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "token_broker/core/asio.hpp"

namespace token_broker {

class call_limit {
 public:
  // One slot, held until destroyed (or moved from).
  class permit {
   public:
    permit() = default;
    permit(permit&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)) {}
    permit& operator=(permit&& other) noexcept;
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    ~permit();

   private:
    friend class call_limit;
    explicit permit(call_limit* owner) : owner_(owner) {}
    call_limit* owner_ = nullptr;
  };

  // `capacity` slots (at least 1). Must outlive every permit it grants.
  explicit call_limit(std::size_t capacity);
  call_limit(const call_limit&) = delete;
  call_limit& operator=(const call_limit&) = delete;

  // A slot, waiting (on the calling coroutine's executor) until one is free. Safe to call
  // from any thread.
  asio::awaitable<permit> acquire();
  // A slot at once when one is free and nobody is in line for it, else nothing: the common
  // case without a coroutine of its own.
  std::optional<permit> try_acquire();

  std::size_t capacity() const { return capacity_; }
  std::size_t in_use() const;
  std::size_t waiting() const;

 private:
  struct waiter;
  // Takes a slot when one is free and the line is empty; mutex_ held.
  bool take_free_slot();
  void release();

  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::size_t in_use_ = 0;  // slots held, including ones handed to a waiter not yet resumed
  // Weak: a waiter whose coroutine is destroyed (at shutdown) simply drops out of the line.
  std::deque<std::weak_ptr<waiter>> queue_;
};

}  // namespace token_broker
