// The server side of TLS on an API listener (SPEC §3 "listen"): the context a listener's
// handshakes use, and who a verified client certificate says the peer is.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <optional>
#include <string>

#include "token_broker/config/config.hpp"
#include "token_broker/core/asio.hpp"

namespace token_broker {

// TLS 1.2 and 1.3 only, forward-secret AEAD suites for 1.2, no renegotiation, session tickets
// and a session cache for resumption; with client_ca_file, client certificates verified
// against it (required with require_client_cert). Reads the files now. Throws config_error
// naming `field` ("listen[1].tls") and the file at fault.
std::shared_ptr<asio::ssl::context> make_listener_tls_context(const listener_tls_config& settings,
                                                              const std::string& field);

// The SHA-256 of the DER of the certificate the peer presented (and the handshake verified),
// or nothing when it presented none.
std::optional<sha256_digest> peer_certificate_sha256(SSL* connection);

}  // namespace token_broker
