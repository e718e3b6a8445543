// What the engine needs of upstream: a place in line, then a call. upstream_client is the real
// one; the simulated-time tests put a simulated WeCom behind the same interface.
#pragma once

#include <atomic>
#include <memory>

#include "token_broker/asio.hpp"
#include "token_broker/call_limit.hpp"
#include "token_broker/upstream_client.hpp"

namespace token_broker {

class upstream_caller {
 public:
  using slot = call_limit::permit;
  virtual ~upstream_caller() = default;

  // Waits (first come, first served) for one of the slots that cap concurrent calls. Taken
  // before anything whose time counts against the call, like the refresh lock.
  virtual asio::awaitable<slot> reserve() = 0;
  // One call, holding `held`. Never throws for network or upstream trouble.
  virtual asio::awaitable<upstream_result> call(const slot& held, upstream_request request) = 0;
};

// The caller in force: a reload with new upstream settings replaces it, and a call in flight
// keeps the one it began with.
using shared_upstream = std::atomic<std::shared_ptr<upstream_caller>>;

}  // namespace token_broker
