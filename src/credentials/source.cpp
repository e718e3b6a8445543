#include "token_broker/credentials/source.hpp"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker {

gettoken_source::gettoken_source(std::string_view corpid, std::string_view secret)
    : app_(std::make_shared<const app_config>(
          app_config{.corpid = std::string(corpid), .secret = std::string(secret)})) {}

upstream_request gettoken_source::request(std::string_view) const {
  return upstream_request{.target = gettoken_target(app_->corpid, app_->secret)};
}

namespace {

// Upstream's answer with the credential in `field`, its expiry counted from the call's start.
fetch_result read_answer(std::string_view field, const upstream_response& answer) {
  auto parsed = parse_credential_answer(field, answer.status, answer.body);
  if (auto* failure = std::get_if<fetch_failure>(&parsed)) return std::move(*failure);
  auto& issued = std::get<issued_token>(parsed);
  return fetched_token{std::move(issued.value), issued.expires_in, answer.sent_at,
                       answer.received_at, answer.sent_at_wall};
}

}  // namespace

fetch_result gettoken_source::read(const upstream_response& answer) const {
  return read_answer("access_token", answer);
}

upstream_request ticket_source::request(std::string_view access_token) const {
  std::string target =
      kind_ == credential_kind::jsapi_ticket ? "/cgi-bin/get_jsapi_ticket" : "/cgi-bin/ticket/get";
  target += "?access_token=";
  percent_encode(target, access_token);
  if (kind_ == credential_kind::agent_ticket) target += "&type=agent_config";
  return upstream_request{.target = std::move(target)};
}

fetch_result ticket_source::read(const upstream_response& answer) const {
  return read_answer("ticket", answer);
}

bool credential_source::rejects_dependency(int errcode) const {
  return rejects_access_token(errcode);
}

bool suite_token_source::rejects_dependency(int errcode) const {
  return errcode == 40085;
}

bool corp_token_source::rejects_dependency(int errcode) const {
  return rejects_suite_token(errcode);
}

upstream_request pushed_source::request(std::string_view) const {
  throw std::logic_error("a pushed value has no upstream call");
}

fetch_result pushed_source::read(const upstream_response&) const {
  throw std::logic_error("a pushed value has no upstream call");
}

upstream_request suite_token_source::request(std::string_view suite_ticket) const {
  const nlohmann::json body{{"suite_id", suite_->suite_id},
                            {"suite_secret", suite_->suite_secret},
                            {"suite_ticket", suite_ticket}};
  return upstream_request{.method = http::verb::post,
                          .target = "/cgi-bin/service/get_suite_token",
                          .json_body = body.dump()};
}

fetch_result suite_token_source::read(const upstream_response& answer) const {
  return read_answer("suite_access_token", answer);
}

upstream_request provider_token_source::request(std::string_view) const {
  const nlohmann::json body{{"corpid", provider_->corpid},
                            {"provider_secret", provider_->provider_secret}};
  return upstream_request{.method = http::verb::post,
                          .target = "/cgi-bin/service/get_provider_token",
                          .json_body = body.dump()};
}

fetch_result provider_token_source::read(const upstream_response& answer) const {
  return read_answer("provider_access_token", answer);
}

upstream_request corp_token_source::request(std::string_view suite_access_token) const {
  std::string target = "/cgi-bin/service/get_corp_token?suite_access_token=";
  percent_encode(target, suite_access_token);
  const nlohmann::json body{{"auth_corpid", corpid_}, {"permanent_code", permanent_code_}};
  return upstream_request{
      .method = http::verb::post, .target = std::move(target), .json_body = body.dump()};
}

fetch_result corp_token_source::read(const upstream_response& answer) const {
  return read_answer("access_token", answer);
}

bool rejects_suite_token(int errcode) {
  return errcode == 40082 || errcode == 42009 || rejects_access_token(errcode);
}

bool rejects_access_token(int errcode) {
  // 40001 invalid credential, 40014 invalid access_token, 42001 access_token expired.
  return errcode == 40001 || errcode == 40014 || errcode == 42001;
}

}  // namespace token_broker
