// A value one thread replaces now and then and every HTTP worker reads on every request.
//
// Loading a shared shared_ptr takes a lock and writes the cache line every other reader reads;
// a worker preempted while holding it stalls the others. So a reader keeps its own copy of the
// shared_ptr and loads the shared one only when the version, a plain atomic integer that
// changes only on store, has moved.
//
// The shared one sits behind a mutex, not in a std::atomic<std::shared_ptr>: libstdc++ 12's
// load releases that type's internal lock with a relaxed store, so a load and the next store
// race on the raw pointer (ThreadSanitizer reports it, and the memory model agrees). The
// mutex is taken only when the version moved, which costs the hot path nothing. It is one of
// a few shared by every published value: a mutex each would cost a hundred thousand
// credentials 4 MB, for locks taken once per change.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

namespace token_broker {

inline std::mutex& publication_lock(const void* value) {
  static std::array<std::mutex, 64> locks;
  return locks[(reinterpret_cast<std::uintptr_t>(value) / alignof(std::max_align_t)) %
               locks.size()];
}

template <class T>
class published {
 public:
  explicit published(std::shared_ptr<const T> initial) : value_(std::move(initial)) {}

  // Any thread. Stored before the version moves, so a reader that sees the new version
  // loads the new value.
  void store(std::shared_ptr<const T> next) {
    {
      const std::lock_guard lock(publication_lock(this));
      value_.swap(next);
    }
    version_.fetch_add(1, std::memory_order_release);
  }  // the old value is released here, outside the lock
  // The locked load, for readers off the hot path.
  std::shared_ptr<const T> load() const {
    const std::lock_guard lock(publication_lock(this));
    return value_;
  }

  // One thread's copy: `current` costs one atomic load while nothing changed.
  class reader {
   public:
    const std::shared_ptr<const T>& current(const published& source) {
      const auto version = source.version_.load(std::memory_order_acquire);
      if (!copy_ || version != version_) {
        copy_ = source.load();
        version_ = version;
      }
      return copy_;
    }

   private:
    std::uint64_t version_ = 0;
    std::shared_ptr<const T> copy_;
  };

 private:
  std::shared_ptr<const T> value_;
  std::atomic<std::uint64_t> version_{0};
};

}  // namespace token_broker
