// The API's answers, each in one place: JSON bodies, `Cache-Control: no-store`, and the
// exact shapes SPEC §4 promises (ours and WeCom's).
#pragma once

#include <array>
#include <initializer_list>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "token_broker/core/asio.hpp"
#include "token_broker/credentials/refresher.hpp"

namespace token_broker {

using response = http::response<http::string_body>;

response json_response(http::status status, std::string body);
// text/plain, uncached: what WeCom's callback expects ("success", a decrypted echostr).
response text_response(http::status status, std::string body);
// The status line and header fields of `reply`, as they go on the wire before its body.
std::string response_head(const response& reply);
// {"error":"<code>","message":"…"}
response error_response(http::status status, std::string_view code, std::string_view message);

// A 200 token answer: the body prepared with the token, around the seconds left at `now`.
// Holding the view keeps that text alive until the answer is written.
struct token_answer {
  std::shared_ptr<const credential_view> view;  // servable at `now`
  prepared_body body;                           // views into the view's text
  std::int64_t expires_in;
};
// 200 {"app","access_token","expires_in","expires_at"}
token_answer our_token_answer(std::shared_ptr<const credential_view> view, time_point now);
// 200 {"errcode":0,"errmsg":"ok","access_token","expires_in"}: WeCom's shape for the drop-in
token_answer wecom_token_answer(std::shared_ptr<const credential_view> view, time_point now);

// A body that arrives while it is written (the gateway passing on WeCom's answer).
class body_source {
 public:
  virtual ~body_source() = default;
  // The next piece, valid until the next call; empty at the end; nullopt when the body
  // failed midway (the caller's connection must then be cut: its head is gone already).
  virtual asio::awaitable<std::optional<std::string_view>> next() = 0;
};
// `head` (status and fields, Content-Length when the size is known, else sent chunked),
// then the pieces of `body`.
struct relayed_answer {
  response head;
  std::unique_ptr<body_source> body;
};

// A response formatted where it is made, without Beast's field container: its status line
// and fields up to Content-Length, then its body. The server ends the head as the connection
// requires (keep-alive or Connection: close). The gateway passes upstream's whole answers on
// in this form.
struct formatted_response {
  unsigned status = 200;
  std::string head;
  std::string body;
};
using header_field = std::pair<std::string_view, std::string_view>;
// `fields` (name and value each; an empty value leaves the field out), then Content-Length.
formatted_response format_response(unsigned status, std::initializer_list<header_field> fields,
                                   std::string body);

// Everything the API sends: a token answer, written straight from its prepared text (the
// hot path), an upstream answer relayed as it arrives, one passed on whole, or any other
// response.
using answer = std::variant<token_answer, response, relayed_answer, formatted_response>;
unsigned status_of(const answer& outgoing);

// A token answer's bytes on the wire, the same a Beast response would have: status line and
// headers formatted here, then the prepared body around the number. No allocation.
class token_answer_bytes {
 public:
  token_answer_bytes(const token_answer& outgoing, bool keep_alive);
  std::array<asio::const_buffer, 4> buffers() const;

 private:
  std::array<char, 160> head_;
  std::size_t head_size_;
  std::array<char, 24> seconds_;
  std::size_t seconds_size_;
  prepared_body body_;
};
// 503 unavailable, with WeCom's errcode/errmsg when upstream is the reason, and Retry-After.
response unavailable_response(const credential_id& id, const token_outcome& outcome);

// WeCom's error shape for the drop-in /cgi-bin/gettoken (HTTP 200, like WeCom).
response wecom_error_response(int errcode, std::string_view errmsg);

// A credential as the listings (/v1/apps, /v1/suites/{suite}/corps) show it: its "state", when
// its servable value expires ("expires_at", Unix seconds, and "expires_in", seconds left on the
// broker's clock; null without one) and how this process's last refresh of it ended
// ("last_refresh": {"outcome":"ok|adopted|failed", "errcode"?, "errmsg"?, "seconds_ago"}, null
// before the first).
void describe(nlohmann::ordered_json& into, const credential_refresher& credential, time_point now);

}  // namespace token_broker
