#include "fake_service.hpp"

#include <openssl/rand.h>

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace token_broker::fake {
namespace {

using std::chrono::system_clock;
using namespace std::chrono_literals;

constexpr auto suite_ticket_life = 30min;

std::string random_text(std::size_t size) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string random(size, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(random.data()), static_cast<int>(size)) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  for (auto& c : random) c = alphabet[static_cast<unsigned char>(c) & 0x3f];
  return random;
}

std::string wecom_error(int errcode, std::string_view errmsg) {
  return nlohmann::ordered_json{{"errcode", errcode}, {"errmsg", errmsg}}.dump();
}

std::string string_member(const nlohmann::json& body, const char* name) {
  const auto found = body.is_object() ? body.find(name) : body.end();
  return found != body.end() && found->is_string() ? found->get<std::string>() : std::string();
}

std::string cdata(std::string_view name, std::string_view text) {
  std::string element;
  element.append("<").append(name).append("><![CDATA[").append(text).append("]]></");
  return element.append(name).append(">");
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct service_model::state {
  struct suite {
    std::string secret;
    std::unique_ptr<msg_crypt> crypt;
    std::map<std::string, system_clock::time_point> tickets;  // ticket → end
    std::map<std::string, std::string> corps;                 // corpid → permanent code
  };
  struct issued {
    std::string owner;  // a provider's corpid, a suite_id, or "suite_id:corpid"
    system_clock::time_point ends;
  };

  mutable std::mutex mutex;
  std::chrono::seconds lifetime{7200};
  std::chrono::milliseconds corp_token_delay{0};
  std::map<std::string, std::string> providers;  // corpid → secret
  std::map<std::string, suite> suites;
  std::map<std::string, std::pair<std::string, std::string>> auth_codes;  // → suite_id, corpid
  std::map<std::string, issued> provider_tokens, suite_tokens, corp_tokens;
  std::map<std::string, int> calls;
  std::map<std::string, int> corp_calls;
  std::vector<std::string> suite_token_requests;

  expiry_behaviour behaviour = expiry_behaviour::new_token_each_call;
  std::map<std::string, std::string> current;  // owner → the value issued last

  // WeCom's answer with a value for `owner`: its last one again while it is valid, unless the
  // behaviour is a new one each call.
  std::string issue(const char* field, std::map<std::string, issued>& into,
                    const std::string& owner) {
    const auto now = system_clock::now();
    auto& last = current[owner];
    const auto held = into.find(last);
    const bool reuse = behaviour != expiry_behaviour::new_token_each_call && held != into.end() &&
                       held->second.ends > now;
    if (!reuse) {
      last = random_text(128);
      into[last] = issued{owner, now + lifetime};
    }
    const auto seconds_left =
        std::chrono::duration_cast<std::chrono::seconds>(into[last].ends - now);
    nlohmann::ordered_json body{{"errcode", 0}, {"errmsg", "ok"}};
    body[field] = last;
    body["expires_in"] = reuse && behaviour == expiry_behaviour::same_token_seconds_left
                             ? seconds_left.count()
                             : lifetime.count();
    return body.dump();
  }
  // The suite_id a suite_access_token was issued for, or WeCom's refusal.
  struct suite_check {
    std::string suite_id;
    std::string refusal;  // empty when the token is good
  };
  suite_check suite_of(const std::string& token) const {
    const auto found = suite_tokens.find(token);
    if (found == suite_tokens.end()) return {{}, wecom_error(40082, "invalid suite_access_token")};
    if (found->second.ends <= system_clock::now()) {
      return {{}, wecom_error(42009, "suite_access_token expired")};
    }
    return {found->second.owner, {}};
  }
};

service_model::service_model() : state_(std::make_unique<state>()) {}
service_model::~service_model() = default;

void service_model::add_provider(const std::string& corpid, const std::string& provider_secret) {
  const std::scoped_lock lock(state_->mutex);
  state_->providers[corpid] = provider_secret;
}

void service_model::add_suite(const std::string& suite_id, const std::string& suite_secret,
                              const std::string& callback_token,
                              const std::string& encoding_aes_key) {
  const std::scoped_lock lock(state_->mutex);
  auto& suite = state_->suites[suite_id];
  suite.secret = suite_secret;
  suite.crypt = std::make_unique<msg_crypt>(callback_token, encoding_aes_key, "fake");
}

void service_model::add_suite(const std::string& suite_id, const std::string& suite_secret) {
  const std::scoped_lock lock(state_->mutex);
  state_->suites[suite_id].secret = suite_secret;
}

void service_model::accept_suite_ticket(const std::string& suite_id, const std::string& ticket,
                                        std::chrono::seconds lifetime) {
  const std::scoped_lock lock(state_->mutex);
  state_->suites.at(suite_id).tickets[ticket] = system_clock::now() + lifetime;
}

void service_model::add_corp(const std::string& suite_id, const std::string& corpid,
                             const std::string& permanent_code) {
  const std::scoped_lock lock(state_->mutex);
  state_->suites.at(suite_id).corps[corpid] = permanent_code;
}

void service_model::set_behaviour(expiry_behaviour behaviour) {
  const std::scoped_lock lock(state_->mutex);
  state_->behaviour = behaviour;
}

void service_model::set_lifetime(std::chrono::seconds lifetime) {
  const std::scoped_lock lock(state_->mutex);
  state_->lifetime = lifetime;
}

void service_model::set_corp_token_delay(std::chrono::milliseconds delay) {
  const std::scoped_lock lock(state_->mutex);
  state_->corp_token_delay = delay;
}

std::chrono::milliseconds service_model::corp_token_delay() const {
  const std::scoped_lock lock(state_->mutex);
  return state_->corp_token_delay;
}

std::string service_model::issue_suite_ticket(const std::string& suite_id) {
  const std::scoped_lock lock(state_->mutex);
  auto ticket = random_text(64);
  state_->suites.at(suite_id).tickets[ticket] = system_clock::now() + suite_ticket_life;
  return ticket;
}

void service_model::expire_suite_tickets(const std::string& suite_id) {
  const std::scoped_lock lock(state_->mutex);
  state_->suites.at(suite_id).tickets.clear();
}

void service_model::expire_suite_tokens(const std::string& suite_id) {
  const std::scoped_lock lock(state_->mutex);
  for (auto& [value, issued] : state_->suite_tokens) {
    if (issued.owner == suite_id) issued.ends = system_clock::now();
  }
}

sealed_callback service_model::seal(const std::string& suite_id, const std::string& event_xml) {
  std::string encrypted;
  {
    const std::scoped_lock lock(state_->mutex);
    msg_crypt::random_bytes random{};
    RAND_bytes(random.data(), static_cast<int>(random.size()));
    encrypted = state_->suites.at(suite_id).crypt->seal(event_xml, suite_id, random);
  }
  return sign(suite_id, encrypted);
}

sealed_callback service_model::sign(const std::string& suite_id, const std::string& encrypted) {
  const std::scoped_lock lock(state_->mutex);
  const auto& crypt = *state_->suites.at(suite_id).crypt;
  const auto timestamp = std::to_string(unix_now());
  const auto nonce = random_text(10);
  return sealed_callback{.query = "msg_signature=" + crypt.signature(timestamp, nonce, encrypted) +
                                  "&timestamp=" + timestamp + "&nonce=" + nonce,
                         .body = "<xml>" + cdata("ToUserName", suite_id) +
                                 cdata("Encrypt", encrypted) + cdata("AgentID", "") + "</xml>"};
}

sealed_callback service_model::suite_ticket_callback(const std::string& suite_id) {
  const auto ticket = issue_suite_ticket(suite_id);
  return seal(suite_id, "<xml>" + cdata("SuiteId", suite_id) + cdata("InfoType", "suite_ticket") +
                            "<TimeStamp>" + std::to_string(unix_now()) + "</TimeStamp>" +
                            cdata("SuiteTicket", ticket) + "</xml>");
}

sealed_callback service_model::create_auth_callback(const std::string& suite_id,
                                                    const std::string& corpid) {
  auto code = random_text(32);
  {
    const std::scoped_lock lock(state_->mutex);
    state_->auth_codes[code] = {suite_id, corpid};
  }
  return seal(suite_id, "<xml>" + cdata("SuiteId", suite_id) + cdata("AuthCode", code) +
                            cdata("InfoType", "create_auth") + "<TimeStamp>" +
                            std::to_string(unix_now()) + "</TimeStamp></xml>");
}

sealed_callback service_model::cancel_auth_callback(const std::string& suite_id,
                                                    const std::string& corpid) {
  {
    const std::scoped_lock lock(state_->mutex);
    state_->suites.at(suite_id).corps.erase(corpid);
  }
  return seal(suite_id, "<xml>" + cdata("SuiteId", suite_id) + cdata("InfoType", "cancel_auth") +
                            "<TimeStamp>" + std::to_string(unix_now()) + "</TimeStamp>" +
                            cdata("AuthCorpId", corpid) + "</xml>");
}

std::string service_model::verification_query(const std::string& suite_id,
                                              const std::string& echostr) {
  const std::scoped_lock lock(state_->mutex);
  const auto& crypt = *state_->suites.at(suite_id).crypt;
  msg_crypt::random_bytes random{};
  RAND_bytes(random.data(), static_cast<int>(random.size()));
  const auto sealed = crypt.seal(echostr, suite_id, random);
  const auto timestamp = std::to_string(unix_now());
  const std::string nonce = "1372623149";
  std::string escaped;  // base64's '+', '/' and '=' percent-encoded, as WeCom sends them
  for (const char c : sealed) {
    if (c == '+')
      escaped += "%2B";
    else if (c == '/')
      escaped += "%2F";
    else if (c == '=')
      escaped += "%3D";
    else
      escaped += c;
  }
  return "msg_signature=" + crypt.signature(timestamp, nonce, sealed) + "&timestamp=" + timestamp +
         "&nonce=" + nonce + "&echostr=" + escaped;
}

std::string service_model::authorize(const std::string& suite_id, const std::string& corpid) {
  const std::scoped_lock lock(state_->mutex);
  auto code = random_text(43);
  state_->suites.at(suite_id).corps[corpid] = code;
  return code;
}

std::optional<std::string> service_model::permanent_code(const std::string& suite_id,
                                                         const std::string& corpid) const {
  const std::scoped_lock lock(state_->mutex);
  const auto& corps = state_->suites.at(suite_id).corps;
  const auto found = corps.find(corpid);
  if (found == corps.end()) return std::nullopt;
  return found->second;
}

std::string service_model::provider_token(const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  const std::scoped_lock lock(state_->mutex);
  ++state_->calls["get_provider_token"];
  const auto corpid = string_member(json, "corpid");
  const auto found = state_->providers.find(corpid);
  if (found == state_->providers.end()) return wecom_error(40013, "invalid corpid");
  if (found->second != string_member(json, "provider_secret")) {
    return wecom_error(40001, "invalid provider_secret");
  }
  return state_->issue("provider_access_token", state_->provider_tokens, corpid);
}

std::string service_model::suite_token(const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  const std::scoped_lock lock(state_->mutex);
  ++state_->calls["get_suite_token"];
  state_->suite_token_requests.push_back(body);
  const auto suite_id = string_member(json, "suite_id");
  const auto found = state_->suites.find(suite_id);
  if (found == state_->suites.end()) return wecom_error(40013, "invalid suite_id");
  if (found->second.secret != string_member(json, "suite_secret")) {
    return wecom_error(40001, "invalid suite_secret");
  }
  const auto ticket = found->second.tickets.find(string_member(json, "suite_ticket"));
  if (ticket == found->second.tickets.end() || ticket->second <= system_clock::now()) {
    return wecom_error(40085, "invalid suite_ticket");
  }
  return state_->issue("suite_access_token", state_->suite_tokens, suite_id);
}

std::string service_model::permanent_code_call(const std::string& suite_access_token,
                                               const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  const std::scoped_lock lock(state_->mutex);
  ++state_->calls["get_permanent_code"];
  const auto suite = state_->suite_of(suite_access_token);
  if (!suite.refusal.empty()) return suite.refusal;
  const auto code = state_->auth_codes.find(string_member(json, "auth_code"));
  if (code == state_->auth_codes.end() || code->second.first != suite.suite_id) {
    return wecom_error(40078, "invalid auth_code");
  }
  const auto [suite_id, corpid] = code->second;
  state_->auth_codes.erase(code);  // single use
  auto permanent = random_text(43);
  state_->suites.at(suite_id).corps[corpid] = permanent;
  return nlohmann::ordered_json{{"errcode", 0},
                                {"errmsg", "ok"},
                                {"permanent_code", permanent},
                                {"auth_corp_info", {{"corpid", corpid}, {"corp_name", "fake"}}}}
      .dump();
}

std::string service_model::corp_token(const std::string& suite_access_token,
                                      const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  const std::scoped_lock lock(state_->mutex);
  ++state_->calls["get_corp_token"];
  const auto corpid = string_member(json, "auth_corpid");
  ++state_->corp_calls[corpid];
  const auto suite = state_->suite_of(suite_access_token);
  if (!suite.refusal.empty()) return suite.refusal;
  const auto& corps = state_->suites.at(suite.suite_id).corps;
  const auto found = corps.find(corpid);
  if (found == corps.end() || found->second != string_member(json, "permanent_code")) {
    return wecom_error(40084, "invalid permanent_code");
  }
  return state_->issue("access_token", state_->corp_tokens, suite.suite_id + ":" + corpid);
}

bool service_model::corp_token_valid(const std::string& access_token) const {
  const std::scoped_lock lock(state_->mutex);
  const auto found = state_->corp_tokens.find(access_token);
  return found != state_->corp_tokens.end() && found->second.ends > system_clock::now();
}

int service_model::calls(const std::string& endpoint) const {
  const std::scoped_lock lock(state_->mutex);
  const auto found = state_->calls.find(endpoint);
  return found == state_->calls.end() ? 0 : found->second;
}

std::map<std::string, int> service_model::corp_token_calls_by_corpid() const {
  const std::scoped_lock lock(state_->mutex);
  return state_->corp_calls;
}

std::vector<std::string> service_model::suite_token_requests() const {
  const std::scoped_lock lock(state_->mutex);
  return state_->suite_token_requests;
}

}  // namespace token_broker::fake
