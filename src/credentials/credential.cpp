#include "token_broker/credentials/credential.hpp"

#include <array>
#include <utility>

namespace token_broker {
namespace {

constexpr std::array<std::pair<credential_kind, std::string_view>, 7> kind_names{{
    {credential_kind::access_token, "access_token"},
    {credential_kind::jsapi_ticket, "jsapi_ticket"},
    {credential_kind::agent_ticket, "agent_ticket"},
    {credential_kind::provider_token, "provider_token"},
    {credential_kind::suite_token, "suite_token"},
    {credential_kind::corp_token, "corp_token"},
    {credential_kind::suite_ticket, "suite_ticket"},
}};

constexpr std::array<std::string_view, 1> app_naming{"app"};
constexpr std::array<std::string_view, 1> provider_naming{"provider"};
constexpr std::array<std::string_view, 1> suite_naming{"suite"};
constexpr std::array<std::string_view, 2> corp_naming{"suite", "corpid"};

}  // namespace

std::string_view to_string(credential_kind kind) {
  for (const auto& [each, name] : kind_names) {
    if (each == kind) return name;
  }
  return "access_token";
}

std::optional<credential_kind> credential_kind_named(std::string_view name) {
  for (const auto& [each, known] : kind_names) {
    if (known == name) return each;
  }
  return std::nullopt;
}

std::string_view value_field(credential_kind kind) {
  switch (kind) {
    case credential_kind::jsapi_ticket:
    case credential_kind::agent_ticket:
      return "ticket";
    case credential_kind::provider_token:
      return "provider_access_token";
    case credential_kind::suite_token:
      return "suite_access_token";
    case credential_kind::suite_ticket:
      return "suite_ticket";
    case credential_kind::access_token:
    case credential_kind::corp_token:
      break;
  }
  return "access_token";
}

std::span<const std::string_view> naming_fields(credential_kind kind) {
  switch (kind) {
    case credential_kind::provider_token:
      return provider_naming;
    case credential_kind::suite_token:
    case credential_kind::suite_ticket:
      return suite_naming;
    case credential_kind::corp_token:
      return corp_naming;
    case credential_kind::access_token:
    case credential_kind::jsapi_ticket:
    case credential_kind::agent_ticket:
      break;
  }
  return app_naming;
}

bool is_ticket(credential_kind kind) {
  return kind == credential_kind::jsapi_ticket || kind == credential_kind::agent_ticket;
}

bool is_pushed(credential_kind kind) {
  return kind == credential_kind::suite_ticket;
}

std::vector<std::string_view> naming_values(const credential_id& id) {
  std::vector<std::string_view> values;
  std::string_view rest = id.scope;
  for (std::size_t i = 0; i < naming_fields(id.kind).size(); ++i) {
    const auto colon = i + 1 < naming_fields(id.kind).size() ? rest.find(':') : rest.npos;
    values.push_back(rest.substr(0, colon));
    rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
  }
  return values;
}

std::string to_string(const credential_id& id) {
  return std::string(to_string(id.kind)) + ":" + id.scope;
}

std::string log_name(const credential_id& id) {
  switch (id.kind) {
    case credential_kind::access_token:
      return "app=" + id.scope;
    case credential_kind::provider_token:
      return "provider=" + id.scope;
    case credential_kind::suite_token:
      return "suite=" + id.scope;
    case credential_kind::corp_token: {
      const auto names = naming_values(id);
      return "suite=" + std::string(names[0]) + " corp=" + std::string(names[1]);
    }
    case credential_kind::suite_ticket:
      return "suite=" + id.scope + " kind=suite_ticket";
    case credential_kind::jsapi_ticket:
    case credential_kind::agent_ticket:
      break;
  }
  return "app=" + id.scope + " kind=" + std::string(to_string(id.kind));
}

}  // namespace token_broker
