// PLACEHOLDER until the budget branch lands: the interface only.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"

namespace token_broker {

class budget_grant {
 public:
  budget_grant() = default;
  explicit budget_grant(std::function<void()> release) : release_(std::move(release)) {}
  budget_grant(budget_grant&& other) noexcept : release_(std::exchange(other.release_, {})) {}
  budget_grant& operator=(budget_grant&& other) noexcept {
    if (release_) release_();
    release_ = std::exchange(other.release_, {});
    return *this;
  }
  ~budget_grant() {
    if (release_) release_();
  }

 private:
  std::function<void()> release_;
};
struct budget_refusal {
  std::chrono::seconds retry_after;
  std::string_view cap;
};
using budget_decision = std::variant<budget_grant, budget_refusal>;

class api_budget {
 public:
  virtual ~api_budget() = default;
  virtual asio::awaitable<budget_decision> try_acquire(std::string corpid, std::string api) = 0;
};

class unlimited_budget final : public api_budget {
 public:
  asio::awaitable<budget_decision> try_acquire(std::string, std::string) override {
    co_return budget_grant{};
  }
};

}  // namespace token_broker
