// The HTTP workers: one io_context per thread, as nginx has one event loop per worker
// process. A connection lives on one worker for its whole life, so serving it needs no strand
// and no worker ever has to wake another.
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "token_broker/core/asio.hpp"

namespace token_broker {

class worker_pool {
 public:
  explicit worker_pool(unsigned threads);
  ~worker_pool();  // stops and joins
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  // The worker for a new connection, in turn.
  asio::io_context& next();
  // Lets every worker finish the handler it is in, then ends them; what is still pending
  // (idle keep-alive connections) is destroyed with the pool.
  void stop();

 private:
  struct worker;
  std::vector<std::unique_ptr<worker>> workers_;
  std::atomic<std::size_t> turn_{0};
};

}  // namespace token_broker
