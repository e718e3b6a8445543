#include "tls_material.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <stdexcept>

namespace token_broker::fake {
namespace {

template <auto free_function>
struct openssl_deleter {
  template <class T>
  void operator()(T* pointer) const {
    free_function(pointer);
  }
};

using key_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY_free>>;
using certificate_ptr = std::unique_ptr<X509, openssl_deleter<X509_free>>;
using extension_ptr = std::unique_ptr<X509_EXTENSION, openssl_deleter<X509_EXTENSION_free>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BN_free>>;
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO_free>>;

// OpenSSL reports the why on its own error queue; pass the newest entry on.
[[noreturn]] void fail(const char* step) {
  char reason[256] = "no detail";
  if (const unsigned long code = ERR_get_error(); code != 0) {
    ERR_error_string_n(code, reason, sizeof reason);
  }
  ERR_clear_error();
  throw std::runtime_error(std::string("test TLS material: ") + step + ": " + reason);
}

void check(int result, const char* step) {
  if (result <= 0) fail(step);
}

key_ptr new_p256_key() {
  key_ptr key(EVP_EC_gen("P-256"));
  if (!key) fail("EC key generation");
  return key;
}

// Random 159-bit serials: positive, within RFC 5280's 20 octets, and never repeated, so a
// client that caches certificates by issuer and serial cannot mix up two runs.
void set_random_serial(X509* certificate) {
  bignum_ptr serial(BN_new());
  if (!serial) fail("BN_new");
  check(BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY), "serial");
  if (!BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(certificate))) fail("serial");
}

certificate_ptr new_certificate(EVP_PKEY* subject_key, const char* common_name) {
  certificate_ptr certificate(X509_new());
  if (!certificate) fail("X509_new");
  check(X509_set_version(certificate.get(), X509_VERSION_3), "version");
  set_random_serial(certificate.get());
  // An hour of slack back: a clock a little behind on the client must not reject it.
  if (!X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -60L * 60) ||
      !X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 24L * 60 * 60)) {
    fail("validity");
  }
  X509_NAME* subject = X509_get_subject_name(certificate.get());
  check(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0),
        "subject");
  check(X509_set_pubkey(certificate.get(), subject_key), "public key");
  return certificate;
}

// `issuer` may be `subject` itself (self-signed); the subject's public key must already be
// set for subjectKeyIdentifier, and the issuer's for authorityKeyIdentifier.
void add_extension(X509* subject, X509* issuer, int nid, const char* value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, subject, nullptr, nullptr, 0);
  extension_ptr extension(X509V3_EXT_conf_nid(nullptr, &context, nid, value));
  if (!extension) fail(OBJ_nid2sn(nid));
  check(X509_add_ext(subject, extension.get(), -1), OBJ_nid2sn(nid));
}

void sign(X509* certificate, X509* issuer, EVP_PKEY* issuer_key) {
  check(X509_set_issuer_name(certificate, X509_get_subject_name(issuer)), "issuer");
  if (X509_sign(certificate, issuer_key, EVP_sha256()) == 0) fail("signature");
}

template <class Write>
std::string to_pem(Write write, const char* what) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio) fail("BIO_new");
  check(write(bio.get()), what);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  if (size <= 0 || data == nullptr) fail(what);
  return std::string(data, static_cast<std::size_t>(size));
}

std::string certificate_pem(X509* certificate) {
  return to_pem([certificate](BIO* bio) { return PEM_write_bio_X509(bio, certificate); },
                "certificate PEM");
}

std::string private_key_pem(EVP_PKEY* key) {
  return to_pem(
      [key](BIO* bio) {
        return PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
      },
      "private key PEM");
}

}  // namespace

tls_material generate_tls_material() {
  const key_ptr ca_key = new_p256_key();
  const certificate_ptr ca = new_certificate(ca_key.get(), "token-broker test CA");
  add_extension(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE");
  add_extension(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_extension(ca.get(), ca.get(), NID_subject_key_identifier, "hash");
  sign(ca.get(), ca.get(), ca_key.get());

  // The names a test or the demo dials: verification checks the SAN, not the CN.
  const key_ptr server_key = new_p256_key();
  const certificate_ptr server = new_certificate(server_key.get(), "localhost");
  add_extension(server.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(server.get(), ca.get(), NID_key_usage, "critical,digitalSignature");
  add_extension(server.get(), ca.get(), NID_ext_key_usage, "serverAuth");
  add_extension(server.get(), ca.get(), NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  add_extension(server.get(), ca.get(), NID_subject_key_identifier, "hash");
  add_extension(server.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
  sign(server.get(), ca.get(), ca_key.get());

  // For a server that asks who connects (Redis's tls-auth-clients, the default).
  const key_ptr client_key = new_p256_key();
  const certificate_ptr client = new_certificate(client_key.get(), "token-broker");
  add_extension(client.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(client.get(), ca.get(), NID_key_usage, "critical,digitalSignature");
  add_extension(client.get(), ca.get(), NID_ext_key_usage, "clientAuth");
  add_extension(client.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
  sign(client.get(), ca.get(), ca_key.get());

  return tls_material{
      .ca_pem = certificate_pem(ca.get()),
      .certificate_pem = certificate_pem(server.get()),
      .private_key_pem = private_key_pem(server_key.get()),
      .client_certificate_pem = certificate_pem(client.get()),
      .client_private_key_pem = private_key_pem(client_key.get()),
  };
}

}  // namespace token_broker::fake
