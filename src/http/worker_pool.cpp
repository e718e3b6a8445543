#include "token_broker/http/worker_pool.hpp"

namespace token_broker {

struct worker_pool::worker {
  // Hint 1: one thread runs this context, so asio need not wake others for its work.
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> busy = asio::make_work_guard(io);
  std::jthread thread{[this] { io.run(); }};
};

worker_pool::worker_pool(unsigned threads) {
  for (unsigned i = 0; i < std::max(1u, threads); ++i) {
    workers_.push_back(std::make_unique<worker>());
  }
}

worker_pool::~worker_pool() {
  stop();
}

asio::io_context& worker_pool::next() {
  return workers_[turn_.fetch_add(1, std::memory_order_relaxed) % workers_.size()]->io;
}

void worker_pool::stop() {
  for (auto& each : workers_) each->io.stop();
  for (auto& each : workers_) {
    if (each->thread.joinable()) each->thread.join();
  }
}

}  // namespace token_broker
