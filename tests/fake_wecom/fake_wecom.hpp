// A fake of WeCom's credential endpoints over real TLS, for tests and the demo.
//
// It issues tokens (gettoken), serves the service-provider endpoints (fake_service.hpp), and JS-SDK
// tickets (get_jsapi_ticket, ticket/get?type=agent_config) under one of the three expiry behaviours
// SPEC §1 says the broker must survive, follows a per-call script of faults, counts calls, limits
// ticket calls per hour as WeCom does, and answers whether a token is still good the way WeCom's
// APIs would (0, 42001 expired, 40014 invalid). `GET /fake/stats` reports the call and TLS
// handshake counts for scripts (the benchmark): never a secret, token or ticket. `GET
// /fake/ticket_status?ticket=X&kind=jsapi|agent_config` answers
// {"status":"valid|expired|invalid"} for scripts that check a ticket out of process.
//
// Ordinary APIs, for the gateway's tests (what arrives upstream): `user/get`, `message/send`
// (JSON), `media/upload` (multipart), `media/get` (binary); any other path is a 404. Each checks
// its access_token as WeCom would, obeys a per-minute limit per corp and path, and is recorded
// without its token: `GET /fake/api_calls` lists the calls, `DELETE /fake/api_calls` clears them.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fake_service.hpp"
#include "tls_material.hpp"

namespace token_broker::fake {

enum class fault_kind {
  errcode,          // HTTP 200 {"errcode":N,"errmsg":"…"}
  delay,            // answer normally after `delay`
  html,             // HTTP 200 with an HTML page
  truncated_json,   // HTTP 200, JSON cut off in the middle
  http_500,         // HTTP 500
  drop_connection,  // close the connection without answering
  hang,             // read the request and never answer
};

struct fault {
  fault_kind kind = fault_kind::errcode;
  int errcode = 0;
  std::string errmsg;
  std::chrono::milliseconds delay{0};
};

enum class token_status { valid, expired, invalid };  // invalid: never issued, or revoked

// A jsapi ticket (GET /cgi-bin/get_jsapi_ticket) or an agent_config one (GET
// /cgi-bin/ticket/get?type=agent_config). Each app (secret) has tickets of each kind, apart.
enum class ticket_kind { jsapi, agent_config };

// One ordinary API call as it arrived, for a test to check what a gateway forwarded. Never the
// token itself: only whether it was good and whose it was.
struct api_call {
  std::string method;                    // "GET", "POST", …
  std::string path;                      // as requested, without the query
  std::vector<std::string> query_keys;   // parameter names only, sorted, repeats kept
  bool token_ok = false;                 // an access_token this fake issued, still valid
  std::optional<std::string> token_app;  // the corpid it was issued for (expired or revoked too)
  std::string content_type;              // empty: none sent
  std::string body_sha256;               // lower-case hex, of the body as received
  std::size_t body_size = 0;
  std::vector<std::string> headers;  // the names the request carried, lower-case, sorted
  std::optional<int> errcode;        // what the fake answered (or will, once held); none for a file
};

// `GET /cgi-bin/media/get?media_id=generated-N` sends N bytes of this pattern (N up to 64 MiB),
// a large body without an upload: bytes [offset, offset + size) of it.
std::string generated_media(std::uint64_t offset, std::size_t size);
constexpr std::uint64_t generated_media_limit = 64ull * 1024 * 1024;

// Lower-case hex, as api_call::body_sha256 and uploaded files' media_ids are written.
std::string sha256_hex(std::string_view data);

struct fake_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port
  expiry_behaviour behaviour = expiry_behaviour::new_token_each_call;
  std::chrono::seconds lifetime{7200};
  // Every gettoken and ticket answer is sent this long after its request (a slow upstream), on
  // top of any scripted delay; the value is issued when the request arrives.
  std::chrono::milliseconds answer_delay{0};
  std::optional<std::chrono::seconds> ticket_lifetime;  // none: tickets live as long as tokens
  // Ticket calls let through per app and kind in any rolling hour (those the token check passed
  // and the quota did not refuse); beyond it, 45009.
  int ticket_calls_per_hour = 100;
  tls_material tls;  // the server's certificate and key (and the CA that signed it)
};

class fake_wecom {
 public:
  explicit fake_wecom(fake_options options);  // listens and serves on a thread of its own
  ~fake_wecom();                              // stops and joins
  fake_wecom(const fake_wecom&) = delete;
  fake_wecom& operator=(const fake_wecom&) = delete;

  std::uint16_t port() const;
  std::string base_url() const;  // "https://localhost:PORT"

  void add_app(const std::string& corpid, const std::string& secret);
  void set_behaviour(expiry_behaviour behaviour);
  void set_lifetime(std::chrono::seconds lifetime);  // tokens', and tickets' unless set apart
  void set_ticket_lifetime(std::optional<std::chrono::seconds> lifetime);
  // Applies to later calls; the calls already answered in the last hour still count.
  void set_ticket_quota(int calls_per_hour);

  // The next gettoken calls for `secret` meet these faults in order, one per call; once the
  // script runs out, calls are answered normally.
  void script_faults(const std::string& secret, std::vector<fault> faults);
  // The same for the ticket calls of `kind` made with a token issued for `secret`. A call the
  // token check or the quota refuses does not consume a fault.
  void script_ticket_faults(const std::string& secret, ticket_kind kind, std::vector<fault> faults);

  // Revokes the token currently issued for `secret` (and any other live ones): WeCom's
  // early revocation. The next gettoken issues a new token. Ticket calls made with a revoked
  // token answer 40014; the tickets already issued stand.
  void revoke_tokens(const std::string& secret);
  // The same for the tickets of `kind` issued for `secret`: the next ticket call issues anew.
  void revoke_tickets(const std::string& secret, ticket_kind kind);

  // Ordinary API calls (user/get, message/send, media/upload, media/get), oldest first; the
  // most recent 10,000 are kept.
  std::vector<api_call> api_calls() const;
  // Every ordinary API call by its path as requested, since the last clear_api_calls().
  std::map<std::string, int> api_calls_by_path() const;
  void clear_api_calls();  // the record and the counts by path
  // At most `calls_per_minute` calls of `api_path` (e.g. "/cgi-bin/message/send") for the
  // corp in any rolling minute, counting those let through; beyond it 45009, as WeCom does.
  // None: no limit. Checked after the token, so a refused token does not use the allowance.
  void set_api_limit(const std::string& corpid, const std::string& api_path,
                     std::optional<int> calls_per_minute);
  // While on, ordinary API calls are read, recorded and never answered; switching it off
  // answers the calls held so far. Credential calls (gettoken, tickets) are never held.
  void hang_api_calls(bool hang);
  // Every ordinary API answer is sent this long after its request (answer_delay's twin).
  void set_api_delay(std::chrono::milliseconds delay);

  // TLS handshakes completed: connections that a client keeps alive are counted once.
  int tls_handshakes() const;
  // Those of them that resumed a TLS session of an earlier connection.
  int tls_resumed_handshakes() const;
  // Closes the connections kept alive, as a server's idle timeout does: each one waiting for a
  // request at once (before this returns), one still busy with a request after its answer.
  void close_idle_connections();
  // The service-provider endpoints (providers, suites, tickets, auth codes, corps) and the
  // callbacks WeCom would send.
  service_model& service();
  // The bodies POSTed to /cgi-bin/service/get_suite_token, in order.
  std::vector<std::string> suite_token_requests() const;

  int gettoken_calls(const std::string& secret) const;  // every call, faulty ones included
  int gettoken_calls() const;                           // all secrets
  // The most gettoken calls ever in flight at once (request read, answer not yet sent).
  int max_concurrent_gettoken_calls() const;
  // Every call that named a corpid, by that corpid (unknown ones included).
  std::map<std::string, int> gettoken_calls_by_corpid() const;
  token_status check(const std::string& access_token) const;
  // The expiry a token or ticket was issued with, which no later same-value answer moves; none
  // for a value this fake never issued.
  std::optional<std::chrono::system_clock::time_point> expires_at(const std::string& value) const;
  // When a token or ticket was issued, if it was answered again with its full lifetime
  // (behaviour a: an answer that overstates its expiry); none otherwise.
  std::optional<std::chrono::system_clock::time_point> issued_if_repeated_in_full(
      const std::string& value) const;

  // Ticket calls made with a token issued for `secret` (expired or revoked ones included), every
  // answer counted: refused, over quota, faulty.
  int ticket_calls(const std::string& secret, ticket_kind kind) const;
  int ticket_calls(ticket_kind kind) const;  // all calls of that kind, unknown tokens included
  int ticket_calls() const;                  // all, a ticket/get without a valid type included
  // Whether `ticket`, a ticket of `kind` this fake issued, is good at `at` (default: now): not
  // expired and not revoked by then. A jsapi ticket is never a valid agent_config one. Not
  // checked against its issue time, so a signature's whole-second timestamp can be passed.
  token_status check_ticket(
      ticket_kind kind, const std::string& ticket,
      std::optional<std::chrono::system_clock::time_point> at = std::nullopt) const;
  // Every ticket of `kind` issued for `secret`, oldest first: for finding which one a JS-SDK
  // signature was made with.
  std::vector<std::string> issued_tickets(const std::string& secret, ticket_kind kind) const;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

std::string to_string(token_status status);
std::string to_string(ticket_kind kind);  // "jsapi", "agent_config": as in ?type= and the stats

}  // namespace token_broker::fake
