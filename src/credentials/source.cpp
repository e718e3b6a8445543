#include "token_broker/credentials/source.hpp"

#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker {

gettoken_source::gettoken_source(std::string_view corpid, std::string_view secret)
    : app_(std::make_shared<const app_config>(
          app_config{.corpid = std::string(corpid), .secret = std::string(secret)})) {}

upstream_request gettoken_source::request(std::string_view) const {
  return upstream_request{.target = gettoken_target(app_->corpid, app_->secret)};
}

fetch_result gettoken_source::read(const upstream_response& answer) const {
  auto parsed = parse_gettoken_answer(answer.status, answer.body);
  if (auto* failure = std::get_if<fetch_failure>(&parsed)) return std::move(*failure);
  auto& issued = std::get<issued_token>(parsed);
  return fetched_token{std::move(issued.access_token), issued.expires_in, answer.sent_at,
                       answer.received_at, answer.sent_at_wall};
}

bool rejects_access_token(int errcode) {
  // 40001 invalid credential, 40014 invalid access_token, 42001 access_token expired.
  return errcode == 40001 || errcode == 40014 || errcode == 42001;
}

}  // namespace token_broker
