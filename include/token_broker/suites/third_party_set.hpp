// The service-provider side of the config (SPEC §3 providers and suites) and the corps that
// authorized each suite, with their credentials. Immutable: replaced whole when a corp arrives
// or leaves, so a request sees one version.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/callback/msg_crypt.hpp"
#include "token_broker/config/config.hpp"
#include "token_broker/credentials/refresher.hpp"
#include "token_broker/store/at_rest_key.hpp"

namespace token_broker {

struct provider_entry {
  std::shared_ptr<const provider_config> provider;
  sha256_digest secret_digest{};  // the drop-in compares the offered secret's with it
  std::shared_ptr<credential_refresher> token;
};

// Where an authorized corp came from: the config, or a create_auth callback (kept in the store).
enum class corp_origin { config, callback };
std::string_view to_string(corp_origin origin);

struct corp_entry {
  std::string corpid;
  corp_origin origin = corp_origin::config;
  sha256_digest code_digest{};  // of the permanent code: the drop-in compares with it
  std::shared_ptr<credential_refresher> token;
};

struct suite_entry {
  std::shared_ptr<const suite_config> suite;
  std::shared_ptr<const msg_crypt> callback;     // null without callback settings
  std::shared_ptr<const at_rest_key> store_key;  // null without store_key_file
  sha256_digest secret_digest{};
  std::shared_ptr<credential_refresher> ticket;  // the newest pushed suite_ticket
  std::shared_ptr<credential_refresher> token;   // suite_access_token
  std::map<std::string, corp_entry, std::less<>> corps;

  const corp_entry* corp(std::string_view corpid) const;
};

struct third_party_set {
  std::map<std::string, provider_entry, std::less<>> providers;
  std::map<std::string, suite_entry, std::less<>> suites;

  const provider_entry* provider(std::string_view id) const;
  const suite_entry* suite(std::string_view id) const;
  // The suite whose suite_id (not its config id) is `suite_id`, for the drop-ins.
  const suite_entry* suite_with_suite_id(std::string_view suite_id) const;
  // Every credential, providers' first, for /readyz and the metrics.
  std::vector<credential_refresher*> credentials() const;
};

// The scope of an authorized corp's token: "suite:corpid".
std::string corp_scope(std::string_view suite, std::string_view corpid);
// Where a corp's permanent code is kept sealed, which the seal is bound to.
std::string corp_binding(std::string_view suite, std::string_view corpid);

}  // namespace token_broker
