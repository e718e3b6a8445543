// The check that a TLS peer is the one dialled, for every TLS client of the broker (WeCom,
// Redis): a valid chain alone proves nothing.
#pragma once

#include <openssl/ssl.h>

#include <string>

namespace token_broker {

// Before the handshake: SNI for a name, so that a server hosting several presents the right
// certificate, and the certificate must name `host` (a name, without partial wildcards, or an
// IP address). False if OpenSSL could not take it (its error queue says why).
bool expect_peer(SSL* ssl, const std::string& host);

}  // namespace token_broker
