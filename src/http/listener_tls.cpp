#include "token_broker/http/listener_tls.hpp"

#include <openssl/x509.h>

#include "token_broker/core/secret_digest.hpp"

namespace token_broker {
namespace {

// For TLS 1.2 clients: ECDHE for forward secrecy and AEAD ciphers only, as Mozilla's
// "intermediate" profile. TLS 1.3's suites are all of that kind; OpenSSL's defaults stand.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Resumed sessions must come from this daemon's own contexts (OpenSSL refuses to resume a
// client-verified session without an id context).
constexpr unsigned char session_context[] = "token-broker";

}  // namespace

std::shared_ptr<asio::ssl::context> make_listener_tls_context(const listener_tls_config& settings,
                                                              const std::string& field) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  auto* native = context->native_handle();
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  // Renegotiation only costs the server: a client could make it redo handshakes at will.
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_cipher_list(native, tls12_ciphers);
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_SERVER);
  SSL_CTX_set_session_id_context(native, session_context, sizeof session_context - 1);

  error_code error;
  context->use_certificate_chain_file(settings.cert_file.string(), error);
  if (error) {
    throw config_error(field + ".cert_file",
                       "not a usable PEM certificate chain: " + error.message());
  }
  context->use_private_key_file(settings.key_file.string(), asio::ssl::context::pem, error);
  if (error) {
    throw config_error(field + ".key_file", "not a usable PEM private key: " + error.message());
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    throw config_error(field + ".key_file", "is not the key of cert_file's certificate");
  }
  if (settings.client_ca_file) {
    const auto ca = settings.client_ca_file->string();
    context->load_verify_file(ca, error);
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca.c_str());
    if (error || !names) {
      if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
      throw config_error(
          field + ".client_ca_file",
          "not a usable PEM CA bundle" + (error ? ": " + error.message() : std::string()));
    }
    SSL_CTX_set_client_CA_list(native, names);  // told to clients: which CA to present for
    context->set_verify_mode(settings.require_client_cert
                                 ? asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert
                                 : asio::ssl::verify_peer);
  }
  return context;
}

std::optional<sha256_digest> peer_certificate_sha256(SSL* connection) {
  X509* certificate = SSL_get0_peer_certificate(connection);
  if (!certificate) return std::nullopt;
  unsigned char* der = nullptr;
  const int length = i2d_X509(certificate, &der);
  if (length <= 0) return std::nullopt;
  const auto digest = sha256(
      std::string_view(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length)));
  OPENSSL_free(der);
  return digest;
}

}  // namespace token_broker
