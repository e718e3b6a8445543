// The set of configured apps and their refreshers: what the HTTP side asks for tokens.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/app_refresher.hpp"
#include "token_broker/asio.hpp"
#include "token_broker/config.hpp"
#include "token_broker/token_store.hpp"
#include "token_broker/upstream_client.hpp"

namespace token_broker {

// The outcome of WeCom-style credentials (corpid + corpsecret) checked against the config.
struct credential_match {
  enum class result { unknown_corpid, wrong_secret, matched } outcome = result::unknown_corpid;
  std::shared_ptr<app_refresher> app;
};

class broker {
 public:
  broker(asio::any_io_executor executor, const config& settings,
         std::unique_ptr<token_store> store);
  ~broker();
  broker(const broker&) = delete;
  broker& operator=(const broker&) = delete;

  void start();
  void stop();

  std::shared_ptr<app_refresher> find(std::string_view app_id) const;
  const std::vector<std::shared_ptr<app_refresher>>& apps() const { return apps_in_order_; }
  // Compares the secret's digest with every app of that corpid, in constant time.
  credential_match match_credentials(std::string_view corpid, std::string_view secret) const;

 private:
  std::unique_ptr<token_store> store_;
  upstream_client upstream_;
  std::vector<std::shared_ptr<app_refresher>> apps_in_order_;
  std::map<std::string, std::shared_ptr<app_refresher>, std::less<>> apps_by_id_;
  std::vector<sha256_digest> secret_digests_;  // parallel to apps_in_order_
};

}  // namespace token_broker
