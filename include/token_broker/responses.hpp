// The API's answers, each in one place: JSON bodies, `Cache-Control: no-store`, and the
// exact shapes SPEC §4 promises (ours and WeCom's).
#pragma once

#include <string>
#include <string_view>

#include "token_broker/app_refresher.hpp"
#include "token_broker/asio.hpp"

namespace token_broker {

using response = http::response<http::string_body>;

response json_response(http::status status, std::string body);
// {"error":"<code>","message":"…"}
response error_response(http::status status, std::string_view code, std::string_view message);
// 200 {"app","access_token","expires_in","expires_at"}
response token_response(std::string_view app_id, const token& current, time_point now);
// 503 unavailable, with WeCom's errcode/errmsg when upstream is the reason, and Retry-After.
response unavailable_response(std::string_view app_id, const token_outcome& outcome);

// WeCom's own shapes for the drop-in /cgi-bin/gettoken (always HTTP 200, like WeCom).
response wecom_token_response(const token& current, time_point now);
response wecom_error_response(int errcode, std::string_view errmsg);

}  // namespace token_broker
