#include "token_broker/http/client_auth.hpp"

#include <gtest/gtest.h>

#include "token_broker/core/secret_digest.hpp"

namespace token_broker {
namespace {

client_config client(std::string name, client_identity identity) {
  return client_config{.name = std::move(name), .identity = identity, .all_apps = true};
}

class client_auth_test : public ::testing::Test {
 protected:
  client_auth_test() {
    auto by_key = client("billing", client_identity::bearer_key);
    by_key.key_sha256 = sha256("billing-key");
    auto by_certificate = client("web", client_identity::certificate);
    by_certificate.cert_sha256 = sha256("web's certificate");
    auto by_uid = client("agent", client_identity::unix_uid);
    by_uid.unix_uid = 1001;
    auth_.emplace(std::vector{by_key, by_certificate, by_uid});
  }

  static std::string name_of(const client_config* found) { return found ? found->name : "none"; }

  std::optional<client_auth> auth_;
};

TEST_F(client_auth_test, each_client_is_known_by_its_own_kind_of_identity_only) {
  const peer_identity over_tls{.certificate = sha256("web's certificate")};
  const peer_identity on_unix{.uid = 1001};
  EXPECT_EQ(name_of(auth_->identify(over_tls, "")), "web");
  EXPECT_EQ(name_of(auth_->identify(on_unix, "")), "agent");
  EXPECT_EQ(name_of(auth_->identify({}, "Bearer billing-key")), "billing");
  EXPECT_EQ(name_of(auth_->identify({}, "bearer billing-key")), "billing") << "scheme: any case";

  // A value that is some client's identity of another kind names nobody.
  EXPECT_EQ(name_of(auth_->identify({.certificate = sha256("billing-key")}, "")), "none");
  EXPECT_EQ(name_of(auth_->identify({}, "Bearer web's certificate")), "none");
  EXPECT_EQ(name_of(auth_->identify({.uid = 0}, "")), "none");
}

TEST_F(client_auth_test, the_connection_identifies_first_and_a_key_covers_an_unknown_one) {
  EXPECT_EQ(name_of(auth_->identify({.uid = 1001}, "Bearer billing-key")), "agent");
  EXPECT_EQ(name_of(auth_->identify({.uid = 7}, "Bearer billing-key")), "billing");
  EXPECT_EQ(name_of(auth_->identify({.certificate = sha256("other")}, "Bearer billing-key")),
            "billing");
}

TEST_F(client_auth_test, an_unknown_certificate_or_uid_is_named_as_the_reason) {
  EXPECT_EQ(auth_->unknown_peer({.certificate = sha256("other")}),
            "this client certificate is not a configured client's");
  EXPECT_EQ(auth_->unknown_peer({.uid = 7}), "uid 7 is not a configured client's");
  EXPECT_EQ(auth_->unknown_peer({.address = "127.0.0.1:5000"}), std::nullopt);

  // Without clients known by uid, a unix peer's missing key is the reason, as on TCP.
  auto key_only = client("billing", client_identity::bearer_key);
  const client_auth keys(std::vector{key_only});
  EXPECT_EQ(keys.unknown_peer({.uid = 7}), std::nullopt);
}

}  // namespace
}  // namespace token_broker
