// The services using the broker: threads that ask both replicas for tokens as fast as they
// are answered, each on keep-alive connections, and check every token with upstream (the
// fake) the moment it arrives. A token upstream rejects as invalid is reported to the replica
// that handed it (POST …/invalidate), as a real client does, and the answer checked in turn.
// Assertions 1 and 2 are judged here, answer by answer.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fake_wecom.hpp"
#include "findings.hpp"
#include "keep_alive_client.hpp"
#include "ledger.hpp"
#include "replica.hpp"

namespace token_broker::soak {

// What one replica's clients saw.
struct replica_figures {
  std::atomic<long> requests{0};             // GETs and invalidations sent
  std::atomic<long> checked{0};              // 200 answers whose token was checked with upstream
  std::atomic<long> invalidations{0};        // reports of a rejected token
  std::atomic<long> revoked_before_told{0};  // a revoked token, before the replica knew
  std::atomic<long> killed_connections{0};   // failures on an instance being killed: expected
  std::atomic<long> unknowable_expiry{0};    // a token's expiry overstated that nobody knew
  std::atomic<long> failures_no_valid_token{0};  // failed while no valid token existed
  mutable std::mutex mutex;
  std::map<std::string, long> failures;  // every failure not expected, by kind
  std::vector<std::string> tolerated;    // the first few failures with no valid token
};

class client_fleet {
 public:
  client_fleet(std::vector<replica*> replicas, std::vector<std::string> apps,
               const fake::fake_wecom& fake, ledger& tokens, findings& found);
  ~client_fleet() { stop(); }

  void start(int threads, std::uint32_t seed);
  void stop();  // joins
  const replica_figures& figures(std::size_t replica) const { return *figures_[replica]; }
  long requests() const;

 private:
  struct connection {
    explicit connection(std::uint16_t port) : client(port) {}
    keep_alive_client client;
    int incarnation = 0;  // of the replica when this connection was opened
  };
  struct answer_context {
    std::size_t replica;
    instance from;
    const std::string& app;
    steady::time_point sent;
    steady::time_point received;
  };

  void run(std::uint32_t seed);
  void ask(std::deque<connection>& connections, std::size_t replica, const std::string& app);
  void report_rejected(std::deque<connection>& connections, std::size_t replica,
                       const std::string& app, const std::string& token, int depth);
  // Checks one token answer; returns the token when upstream says it was revoked.
  std::optional<std::string> judge(const answer_context& context, const std::string& body,
                                   const std::string* reported);
  void failed(const answer_context& context, const http_result& result);

  std::vector<replica*> replicas_;
  std::vector<std::string> apps_;
  const fake::fake_wecom& fake_;
  ledger& tokens_;
  findings& found_;
  std::vector<std::unique_ptr<replica_figures>> figures_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
};

}  // namespace token_broker::soak
