// Who is calling (SPEC §3 "clients"): by the client certificate its TLS handshake verified,
// by its uid on a unix socket, or by a bearer key checked by its SHA-256 in constant time;
// and which apps, suites and providers each client may read.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/config/config.hpp"
#include "token_broker/http/peer_identity.hpp"

namespace token_broker {

class client_auth {
 public:
  explicit client_auth(std::vector<client_config> clients) : clients_(std::move(clients)) {}

  // No clients configured: every caller may read every app (loopback/unix socket only).
  bool open() const { return clients_.empty(); }
  // The client the connection identifies (its certificate, its uid), else the one whose key
  // an `Authorization: Bearer <key>` header carries, or nullptr.
  const client_config* identify(const peer_identity& peer, std::string_view authorization) const;
  // Why a peer that presented an identity no client has is refused, when it did: a
  // certificate, or a uid on a unix socket while some client is known by uid. Nothing when
  // it presented none, and a missing key is the reason.
  std::optional<std::string> unknown_peer(const peer_identity& peer) const;
  // Whether `client` (nullptr on an open API) may read `app_id`.
  bool may_read(const client_config* client, std::string_view app_id) const;
  // The same for a suite (its corps included) and a provider.
  bool may_read_suite(const client_config* client, std::string_view suite) const;
  bool may_read_provider(const client_config* client, std::string_view provider) const;

 private:
  std::vector<client_config> clients_;
};

}  // namespace token_broker
