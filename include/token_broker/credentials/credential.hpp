// What the broker holds: credentials, each a kind and a scope. The kind says which WeCom call
// issues it (SPEC §1, §6 `kind`); the scope says whose it is: an app id for an app's
// access_token and JS-SDK tickets, a provider's id, a suite's id, or "suite:corpid" for an
// authorized corp.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace token_broker {

enum class credential_kind : std::uint8_t {
  access_token,    // an app's, from GET /cgi-bin/gettoken
  jsapi_ticket,    // the corp's JS-SDK ticket, fetched with an app's access_token
  agent_ticket,    // an app's agent_config ticket, fetched with its access_token
  provider_token,  // a provider's provider_access_token (scope: the provider's id)
  suite_token,     // a suite's suite_access_token (scope: the suite's id)
  corp_token,      // an authorized corp's access_token (scope: "suite:corpid")
  suite_ticket,    // a suite's suite_ticket: pushed by WeCom (SPEC §7), never fetched
};

// The name SPEC §5 and §6 use: the Redis key's first part, the `kind` label and event field.
std::string_view to_string(credential_kind kind);
std::optional<credential_kind> credential_kind_named(std::string_view name);
// The field that carries the value in answers, ours and WeCom's: "access_token", "ticket",
// "provider_access_token", "suite_access_token" or "suite_ticket".
std::string_view value_field(credential_kind kind);
// The members that name a credential of `kind` in events and answers, in order ("app";
// "provider"; "suite"; "suite", "corpid"): its scope is their values joined by ':' (ids and
// corpids hold no ':').
std::span<const std::string_view> naming_fields(credential_kind kind);
// JS-SDK tickets: WeCom allows few calls an hour, so the engine counts them (SPEC §3
// refresh.ticket_calls_per_hour).
bool is_ticket(credential_kind kind);
// Values that arrive from outside (a suite_ticket, pushed by WeCom): a due refresh looks at
// the store for a newer push and never calls upstream.
bool is_pushed(credential_kind kind);

struct credential_id {
  credential_kind kind = credential_kind::access_token;
  std::string scope;

  auto operator<=>(const credential_id&) const = default;
};

// The values of naming_fields(id.kind), in order: id.scope split at its ':'.
std::vector<std::string_view> naming_values(const credential_id& id);
// "access_token:hr": the Redis key after the prefix.
std::string to_string(const credential_id& id);
// How log lines name it: "app=hr" for an app's access_token, "app=hr kind=jsapi_ticket" for
// a ticket, "suite=crm corp=wwA" for an authorized corp's token.
std::string log_name(const credential_id& id);

}  // namespace token_broker
