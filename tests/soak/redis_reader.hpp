// A service that reads tokens straight from Redis (SPEC §5), every 100 ms per app, and judges
// what it finds (assertion 6): a token upstream issued, whose key expires no later than the
// token does, revoked only until a replica has replaced it, and present whenever a live
// replica holds a valid token, allowing for a refresh's write and a Redis restart's catch-up.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "chaos.hpp"
#include "fake_wecom.hpp"
#include "findings.hpp"
#include "ledger.hpp"
#include "replica.hpp"

namespace token_broker::soak {

class redis_reader {
 public:
  redis_reader(std::uint16_t port, std::string key_prefix, std::vector<soak_app> apps,
               std::vector<replica*> replicas, const fake::fake_wecom& fake, ledger& tokens,
               findings& found);
  ~redis_reader() { stop(); }

  void start();
  void stop();
  long reads() const { return reads_; }
  long revoked_reads() const { return revoked_reads_; }
  long missing_reads() const { return missing_reads_; }

 private:
  void run();

  std::uint16_t port_;
  std::string key_prefix_;
  std::vector<soak_app> apps_;
  std::vector<replica*> replicas_;
  const fake::fake_wecom& fake_;
  ledger& tokens_;
  findings& found_;
  std::atomic<bool> stopping_{false};
  std::atomic<long> reads_{0}, revoked_reads_{0}, missing_reads_{0};
  std::thread thread_;
};

}  // namespace token_broker::soak
