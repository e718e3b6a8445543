// Who is calling (SPEC §3 "clients"): bearer keys checked by their SHA-256 in constant time,
// and which apps each client may read.
#pragma once

#include <string_view>
#include <vector>

#include "token_broker/config/config.hpp"

namespace token_broker {

class client_auth {
 public:
  explicit client_auth(std::vector<client_config> clients) : clients_(std::move(clients)) {}

  // No clients configured: every caller may read every app (loopback/unix socket only).
  bool open() const { return clients_.empty(); }
  // The client whose key an `Authorization: Bearer <key>` header carries, or nullptr.
  const client_config* identify(std::string_view authorization) const;
  // Whether `client` (nullptr on an open API) may read `app_id`.
  bool may_read(const client_config* client, std::string_view app_id) const;
  // The same for a suite (its corps included) and a provider.
  bool may_read_suite(const client_config* client, std::string_view suite) const;
  bool may_read_provider(const client_config* client, std::string_view provider) const;

 private:
  std::vector<client_config> clients_;
};

}  // namespace token_broker
