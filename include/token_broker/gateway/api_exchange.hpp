// One gateway call on one upstream connection: the request sent, the answer's head and its
// first bytes read at once (enough to see whether WeCom rejected the token), the rest of its
// body read on demand, as the caller's connection takes it.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "token_broker/core/asio.hpp"
#include "token_broker/upstream/call_limit.hpp"
#include "token_broker/upstream/connection_pool.hpp"

namespace token_broker {

// What the gateway sends upstream. Only the Content-Type travels from the caller.
struct api_request {
  http::verb method = http::verb::get;
  std::string_view path;   // the WeCom path, after base_url's path prefix
  std::string_view query;  // the caller's: its access_token parameters are dropped
  std::string_view token;  // the app's, sent as access_token
  std::string_view content_type;
  std::string_view body;
};

// Why no answer came: a missed deadline (504) or any other failure (502).
struct exchange_failure {
  bool timed_out = false;
  std::string reason;  // for the log and the caller: never the target
};

class api_exchange {
 public:
  // A body up to this size is read before the answer is passed on: WeCom's error answers
  // are far smaller, so a rejected token is always seen whole.
  static constexpr std::size_t prefix_size = 4096;

  // Sends `request` on an idle connection of `pool` or a new one (a reused connection that
  // upstream closed meanwhile is replaced once), holding `permit` while it is in use, and
  // reads the head and the first bytes of the answer, all by `deadline`.
  static asio::awaitable<std::variant<std::unique_ptr<api_exchange>, exchange_failure>> start(
      connection_pool& pool, call_limit::permit permit, const api_request& request,
      std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds timeout);
  ~api_exchange();

  // Upstream's answer: its status, the fields passed on (empty when absent), its length when
  // it gave one.
  unsigned status() const;
  const std::string& content_type() const;
  const std::string& content_disposition() const;
  std::optional<std::uint64_t> content_length() const;
  // The body read so far; all of it when complete().
  const std::string& prefix() const { return prefix_; }
  std::string take_prefix() { return std::move(prefix_); }
  bool complete() const;
  // Gives the connection back to the pool when the answer was read whole and upstream keeps
  // it open; otherwise it closes with this exchange.
  void finish();

  // The next piece of the body after prefix(), each read within `timeout`: empty at the end,
  // nullopt on a failure.
  asio::awaitable<std::optional<std::string_view>> next_piece();

 private:
  struct state;
  explicit api_exchange(std::unique_ptr<state> held);
  // Reads body bytes into `into` (at most `size`): how many (0 at the end), nullopt on a
  // failure.
  asio::awaitable<std::optional<std::size_t>> read_some(char* into, std::size_t size);
  std::unique_ptr<state> state_;
  std::string prefix_;
};

}  // namespace token_broker
