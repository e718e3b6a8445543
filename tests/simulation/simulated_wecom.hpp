// WeCom in simulated time: gettoken under the three expiry behaviours of SPEC §1, a ticket
// endpoint that takes an access_token, a latency, failures and early revocations on demand,
// and a record of every call, so a test can check each value it is served. Each replica calls
// it through its own simulated_upstream, with its own slots, as each broker has its own client.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <string>

#include "simulated_clock.hpp"
#include "token_broker/upstream/upstream_client.hpp"

namespace token_broker::simulation {

enum class behaviour {
  same_token_full_expires_in,  // (a) the same token, expires_in the full lifetime again
  same_token_seconds_left,     // (b) the same token, expires_in the seconds it has left
  new_token_each_call,         // (c) a new token every call; the old one lives on
};

class simulated_wecom {
 public:
  simulated_wecom(behaviour how, std::chrono::seconds lifetime, std::chrono::milliseconds latency)
      : how_(how), lifetime_(lifetime), latency_(latency) {}

  // GET /cgi-bin/gettoken?corpid=…, or GET /cgi-bin/get_jsapi_ticket?access_token=… (the
  // ticket belongs to the token's corp).
  asio::awaitable<upstream_response> answer(const upstream_request& request);

  // POST /cgi-bin/service/get_suite_token issues a suite_access_token ("S-<n>") to a call that
  // carries `ticket`; any other ticket is 40085. Counted under "suite".
  void accept_suite_ticket(std::string ticket) { suite_ticket_ = std::move(ticket); }

  // Whether upstream accepts `value` (for the app of `corpid`) now.
  bool valid(const std::string& corpid, const std::string& value) const;
  // Revokes every token of `corpid` now, as WeCom may before expires_in runs out.
  void revoke(const std::string& corpid);
  // The next `count` calls answer errcode `errcode`.
  void fail_next(int count, int errcode) { failures_left_ = count, failure_errcode_ = errcode; }

  // gettoken calls for `corpid`; ticket calls count under "ticket:" + corpid.
  int calls(const std::string& corpid) const;
  int calls() const { return total_calls_; }
  // Calls for the same corpid that overlapped in time: a refresh made twice at once.
  int overlapping_calls() const { return overlapping_; }

 private:
  struct issued {
    std::string value;
    time_point expires_at;
  };
  std::string issue(const std::string& corpid, std::chrono::seconds& expires_in);

  behaviour how_;
  std::chrono::seconds lifetime_;
  std::chrono::milliseconds latency_;
  std::map<std::string, issued> current_;          // by corpid
  std::map<std::string, time_point> older_until_;  // every value issued: its expiry
  std::map<std::string, int> calls_;               // by corpid
  std::map<std::string, int> in_flight_;           // by corpid
  int total_calls_ = 0;
  int overlapping_ = 0;
  int serial_ = 0;
  int failures_left_ = 0;
  int failure_errcode_ = 0;
  std::string suite_ticket_;
};

class simulated_upstream final : public upstream_caller {
 public:
  explicit simulated_upstream(simulated_wecom& wecom, std::size_t slots = 16)
      : wecom_(wecom), slots_(slots) {}

  asio::awaitable<slot> reserve() override { co_return co_await slots_.acquire(); }
  asio::awaitable<upstream_result> call(const slot&, upstream_request request) override {
    co_return co_await wecom_.answer(request);
  }

 private:
  simulated_wecom& wecom_;
  call_limit slots_;
};

}  // namespace token_broker::simulation
