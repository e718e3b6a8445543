#include "token_broker/http/client_auth.hpp"

#include <algorithm>

#include "token_broker/core/secret_digest.hpp"

namespace token_broker {

const client_config* client_auth::identify(const peer_identity& peer,
                                           std::string_view authorization) const {
  for (const auto& client : clients_) {
    if (client.identity == client_identity::certificate && peer.certificate &&
        client.cert_sha256 == *peer.certificate) {
      return &client;
    }
    if (client.identity == client_identity::unix_uid && peer.uid && client.unix_uid == *peer.uid) {
      return &client;
    }
  }
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.size() <= scheme.size() ||
      !std::equal(scheme.begin(), scheme.end(), authorization.begin(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
    return nullptr;
  }
  const auto offered = sha256(authorization.substr(scheme.size()));
  const client_config* found = nullptr;
  // Compare against every client, found or not, so timing tells nothing about the keys.
  for (const auto& client : clients_) {
    if (client.identity == client_identity::bearer_key &&
        digests_equal(client.key_sha256, offered) && !found) {
      found = &client;
    }
  }
  return found;
}

std::optional<std::string> client_auth::unknown_peer(const peer_identity& peer) const {
  if (peer.certificate) return "this client certificate is not a configured client's";
  const bool uids_known = std::any_of(clients_.begin(), clients_.end(), [](const auto& client) {
    return client.identity == client_identity::unix_uid;
  });
  if (peer.uid && uids_known) {
    return "uid " + std::to_string(*peer.uid) + " is not a configured client's";
  }
  return std::nullopt;
}

namespace {

bool listed(bool all, const std::vector<std::string>& ids, std::string_view id) {
  return all || std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

bool client_auth::may_read(const client_config* client, std::string_view app_id) const {
  return open() || (client && listed(client->all_apps, client->apps, app_id));
}

bool client_auth::may_read_suite(const client_config* client, std::string_view suite) const {
  return open() || (client && listed(client->all_suites, client->suites, suite));
}

bool client_auth::may_read_provider(const client_config* client, std::string_view provider) const {
  return open() || (client && listed(client->all_providers, client->providers, provider));
}

}  // namespace token_broker
