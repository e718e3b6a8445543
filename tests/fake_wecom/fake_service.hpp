// WeCom's service-provider (服务商) endpoints as a fake, for tests and the bench: provider
// tokens, suite tokens that need a live suite_ticket (each token issued under one of the three
// expiry behaviours), single-use auth codes exchanged for
// permanent codes, and authorized corps' tokens — with WeCom's refusals (40082 invalid
// suite_access_token, 40084 invalid permanent_code, 40085 invalid suite_ticket, 42009
// suite_access_token expired). It also writes the encrypted callbacks WeCom would send a
// suite's callback URL (SPEC §7), so a test can post them to the broker.
//
// Pure model: fake_wecom serves it over TLS under /cgi-bin/service/. Thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "token_broker/callback/msg_crypt.hpp"

namespace token_broker::fake {

// How WeCom answers a credential call while the credential it issued last is still valid.
enum class expiry_behaviour {
  same_token_keeps_expiry,  // (a) same token, full expires_in, original expiry stands
  same_token_seconds_left,  // (b) same token, expires_in = whole seconds left
  new_token_each_call,      // (c) a new token every call; older ones live out their lifetime
};

// A callback as WeCom would POST it: the query (msg_signature, timestamp, nonce) and the XML
// envelope.
struct sealed_callback {
  std::string query;
  std::string body;
};

class service_model {
 public:
  service_model();
  ~service_model();

  void add_provider(const std::string& corpid, const std::string& provider_secret);
  // A suite and the callback settings its events are sealed with.
  void add_suite(const std::string& suite_id, const std::string& suite_secret,
                 const std::string& callback_token, const std::string& encoding_aes_key);
  // A suite without callback settings (a benchmark's: it sends no callbacks).
  void add_suite(const std::string& suite_id, const std::string& suite_secret);
  // `ticket` is good for `lifetime`, as if pushed.
  void accept_suite_ticket(const std::string& suite_id, const std::string& ticket,
                           std::chrono::seconds lifetime);
  // The corp authorized the suite with `permanent_code`.
  void add_corp(const std::string& suite_id, const std::string& corpid,
                const std::string& permanent_code);
  void set_lifetime(std::chrono::seconds lifetime);  // of the tokens issued from now on
  void set_behaviour(expiry_behaviour behaviour);    // for provider, suite and corp tokens
  // get_corp_token answers this long after its request: a call in flight for a while.
  void set_corp_token_delay(std::chrono::milliseconds delay);
  std::chrono::milliseconds corp_token_delay() const;

  // A new suite_ticket for the suite, good for 30 minutes, as WeCom pushes every 10.
  std::string issue_suite_ticket(const std::string& suite_id);
  // Ends every ticket of the suite (a test of what a stale ticket does).
  void expire_suite_tickets(const std::string& suite_id);
  // Ends every suite_access_token of the suite early (the next corp call sees 42009).
  void expire_suite_tokens(const std::string& suite_id);

  // The callbacks: each sealed for the suite's callback settings and signed.
  sealed_callback suite_ticket_callback(const std::string& suite_id);
  // create_auth for `corpid`: a fresh auth code, good once, that get_permanent_code turns
  // into a new permanent code.
  sealed_callback create_auth_callback(const std::string& suite_id, const std::string& corpid);
  sealed_callback cancel_auth_callback(const std::string& suite_id, const std::string& corpid);
  // GET URL verification: the query carrying echostr sealed (receive id: the suite_id).
  std::string verification_query(const std::string& suite_id, const std::string& echostr);
  // Any event text, sealed and signed for the suite.
  sealed_callback seal(const std::string& suite_id, const std::string& event_xml);
  // An envelope around `encrypted` as given, signed with the suite's callback token: a
  // callback WeCom signed whose content does not open.
  sealed_callback sign(const std::string& suite_id, const std::string& encrypted);

  // A permanent code as a static corp in a broker's config has it: the corp authorized.
  std::string authorize(const std::string& suite_id, const std::string& corpid);
  std::optional<std::string> permanent_code(const std::string& suite_id,
                                            const std::string& corpid) const;

  // The endpoints: WeCom's JSON answer to each POST.
  std::string provider_token(const std::string& body);
  std::string suite_token(const std::string& body);
  std::string permanent_code_call(const std::string& suite_access_token, const std::string& body);
  std::string corp_token(const std::string& suite_access_token, const std::string& body);
  // Whether an access_token issued by get_corp_token is good now.
  bool corp_token_valid(const std::string& access_token) const;

  // Counts, every call included: by endpoint ("get_provider_token", "get_suite_token",
  // "get_permanent_code", "get_corp_token"), and get_corp_token by corpid.
  int calls(const std::string& endpoint) const;
  std::map<std::string, int> corp_token_calls_by_corpid() const;
  std::vector<std::string> suite_token_requests() const;  // the bodies, in order

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace token_broker::fake
