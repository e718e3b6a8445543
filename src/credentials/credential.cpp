#include "token_broker/credentials/credential.hpp"

namespace token_broker {

std::string_view to_string(credential_kind kind) {
  switch (kind) {
    case credential_kind::access_token:
      break;
  }
  return "access_token";
}

std::string to_string(const credential_id& id) {
  return std::string(to_string(id.kind)) + ":" + id.scope;
}

std::string log_name(const credential_id& id) {
  return "app=" + id.scope;
}

}  // namespace token_broker
