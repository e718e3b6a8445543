// JS-SDK signatures (SPEC §4 POST /v1/apps/{app}/jssdk_signature): what a front end passes to
// wx.config and wx.agentConfig, made here so that no front end or page server holds a ticket.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace token_broker {

// sha1_hex("jsapi_ticket=" + ticket + "&noncestr=" + noncestr + "&timestamp=" + timestamp +
// "&url=" + url): WeCom's rule, the same for both tickets.
std::string jssdk_signature(std::string_view ticket, std::string_view noncestr,
                            std::int64_t timestamp, std::string_view url);

// What a signature is asked for: the page's URL (its #fragment removed), a nonce and a time.
struct signature_request {
  std::string url;
  std::string noncestr;
  std::int64_t timestamp = 0;
};

// The request body {"url":"https://…","noncestr"?,"timestamp"?}, or what is wrong with it. A
// missing noncestr is 16 random [A-Za-z0-9]; a missing timestamp is `now_unix`.
std::variant<signature_request, std::string> read_signature_request(std::string_view body,
                                                                    std::int64_t now_unix);

// The answer (SPEC §4): {"app","corpid","agentid","url","noncestr","timestamp",
// "config":{"signature"},"agent_config":{"signature"}}, "config" present when a jsapi ticket
// is given, "agent_config" when an agent_config ticket is; agentid null when there is none.
std::string signature_answer(std::string_view app, std::string_view corpid,
                             std::optional<std::int64_t> agentid, const signature_request& asked,
                             std::optional<std::string_view> jsapi_ticket,
                             std::optional<std::string_view> agent_ticket);

// `url` as signed: an absolute http(s) URL of at most 2048 bytes with a host, no whitespace or
// control characters, cut at its '#'; nullopt when it is not one.
std::optional<std::string_view> signable_url(std::string_view url);

}  // namespace token_broker
