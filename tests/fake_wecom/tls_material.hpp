// Test PKI made fresh for each run: a CA, and a server and a client certificate it signed.
#pragma once

#include <string>

namespace token_broker::fake {

struct tls_material {
  std::string ca_pem;                  // trust anchor to give the broker as upstream.ca_file
  std::string certificate_pem;         // server certificate: CN and SAN DNS:localhost, IP:127.0.0.1
  std::string private_key_pem;         // server key
  std::string client_certificate_pem;  // client certificate (clientAuth), CN token-broker
  std::string client_private_key_pem;
};

// Generates a new self-signed CA (EC P-256) and a server and a client certificate signed by
// it, the server's valid for "localhost" and 127.0.0.1, both from an hour ago to a day ahead.
// Throws std::runtime_error.
tls_material generate_tls_material();

}  // namespace token_broker::fake
