// How one credential is fetched from WeCom: the call and the reading of its answer. Everything
// else — when to call, how often, which replica calls, what a failure means — is the
// engine's, the same for every kind.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "token_broker/config/config.hpp"
#include "token_broker/credentials/credential.hpp"
#include "token_broker/credentials/fetch_result.hpp"
#include "token_broker/upstream/upstream_client.hpp"

namespace token_broker {

class credential_source {
 public:
  virtual ~credential_source() = default;

  // The credential whose current value the call carries (a JS-SDK ticket: its app's
  // access_token), if any. When upstream answers that it rejects that value
  // (rejects_dependency), the engine reports it to its refresher and calls once more with the
  // new one.
  virtual std::optional<credential_id> dependency() const { return std::nullopt; }
  // Whether `errcode` says upstream rejects the dependency's value the call carried.
  virtual bool rejects_dependency(int errcode) const;
  // The call, given the dependency's current value ("" when there is no dependency). It
  // holds secrets: never logged.
  virtual upstream_request request(std::string_view dependency_value) const = 0;
  // Upstream's answer read strictly: the credential, or why not.
  virtual fetch_result read(const upstream_response& answer) const = 0;
};

// An app's access_token: GET /cgi-bin/gettoken?corpid=…&corpsecret=…
class gettoken_source final : public credential_source {
 public:
  // Shares the app's config (a hundred thousand apps hold their secrets once).
  explicit gettoken_source(std::shared_ptr<const app_config> app) : app_(std::move(app)) {}
  gettoken_source(std::string_view corpid, std::string_view secret);

  upstream_request request(std::string_view dependency_value) const override;
  fetch_result read(const upstream_response& answer) const override;

 private:
  std::shared_ptr<const app_config> app_;
};

// A JS-SDK ticket (SPEC §4): GET /cgi-bin/get_jsapi_ticket?access_token=… for the corp's
// jsapi_ticket, GET /cgi-bin/ticket/get?access_token=…&type=agent_config for the app's agent
// ticket; either fetched with the app's access_token.
class ticket_source final : public credential_source {
 public:
  ticket_source(std::shared_ptr<const app_config> app, credential_kind kind)
      : app_(std::move(app)), kind_(kind) {}

  std::optional<credential_id> dependency() const override {
    return credential_id{credential_kind::access_token, app_->id};
  }
  upstream_request request(std::string_view access_token) const override;
  fetch_result read(const upstream_response& answer) const override;

 private:
  std::shared_ptr<const app_config> app_;
  credential_kind kind_;
};

// A value pushed to the broker (is_pushed: a suite_ticket, which WeCom posts to the callback):
// there is no call to make, and the engine never asks for one.
class pushed_source final : public credential_source {
 public:
  upstream_request request(std::string_view dependency_value) const override;
  fetch_result read(const upstream_response& answer) const override;
};

// A suite's suite_access_token: POST /cgi-bin/service/get_suite_token with {"suite_id",
// "suite_secret", "suite_ticket"}, carrying the newest pushed suite_ticket (its dependency).
class suite_token_source final : public credential_source {
 public:
  explicit suite_token_source(std::shared_ptr<const suite_config> suite)
      : suite_(std::move(suite)) {}

  std::optional<credential_id> dependency() const override {
    return credential_id{credential_kind::suite_ticket, suite_->id};
  }
  bool rejects_dependency(int errcode) const override;  // 40085 invalid suite_ticket
  upstream_request request(std::string_view suite_ticket) const override;
  fetch_result read(const upstream_response& answer) const override;

 private:
  std::shared_ptr<const suite_config> suite_;
};

// A service provider's provider_access_token: POST /cgi-bin/service/get_provider_token with
// {"corpid", "provider_secret"}.
class provider_token_source final : public credential_source {
 public:
  explicit provider_token_source(std::shared_ptr<const provider_config> provider)
      : provider_(std::move(provider)) {}

  upstream_request request(std::string_view dependency_value) const override;
  fetch_result read(const upstream_response& answer) const override;

 private:
  std::shared_ptr<const provider_config> provider_;
};

// An authorized corp's access_token through its suite: POST
// /cgi-bin/service/get_corp_token?suite_access_token=… with {"auth_corpid", "permanent_code"}.
// (A 代开发 template's corp uses gettoken_source, with the permanent code as the secret.)
class corp_token_source final : public credential_source {
 public:
  corp_token_source(std::string suite, std::string corpid, std::string permanent_code)
      : suite_(std::move(suite)),
        corpid_(std::move(corpid)),
        permanent_code_(std::move(permanent_code)) {}

  std::optional<credential_id> dependency() const override {
    return credential_id{credential_kind::suite_token, suite_};
  }
  bool rejects_dependency(int errcode) const override;  // rejects_suite_token
  upstream_request request(std::string_view suite_access_token) const override;
  fetch_result read(const upstream_response& answer) const override;

 private:
  std::string suite_;
  std::string corpid_;
  std::string permanent_code_;  // never logged
};

// Whether `errcode` says the access_token a call carried is not (or no longer) valid.
bool rejects_access_token(int errcode);
// The same for a suite_access_token: 40082 invalid suite_token, 42009 suite_access_token
// expired, or an access_token's codes.
bool rejects_suite_token(int errcode);

}  // namespace token_broker
