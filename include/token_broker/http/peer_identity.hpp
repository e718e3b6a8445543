// Who is at the other end of an API connection, as its listener knows it: what a client may
// be identified by besides a bearer key, and what the audit trail records.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "token_broker/config/config.hpp"

namespace token_broker {

struct peer_identity {
  std::string_view listener;  // the listener's address as configured ("0.0.0.0:8443")
  std::string address;        // "127.0.0.1:53412", "[::1]:53412", or "uid 1001" on a unix socket
  std::optional<sha256_digest> certificate;  // of the client certificate the handshake verified
  std::optional<std::uint32_t> uid;          // on a unix socket: the peer process's uid
};

}  // namespace token_broker
