// Counts something for exactly as long as it lives: a connection, a request waiting.
#pragma once

#include <atomic>
#include <cstddef>

namespace token_broker {

class counted {
 public:
  explicit counted(std::atomic<std::size_t>& count) : count_(count) { ++count_; }
  ~counted() { --count_; }
  counted(const counted&) = delete;
  counted& operator=(const counted&) = delete;

 private:
  std::atomic<std::size_t>& count_;
};

}  // namespace token_broker
