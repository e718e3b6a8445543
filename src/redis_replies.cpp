#include "token_broker/redis_replies.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "token_broker/upstream_answer.hpp"

namespace token_broker {
namespace {

using std::chrono::milliseconds;

wall_time_point from_unix_milliseconds(long long count) {
  return wall_time_point(std::chrono::duration_cast<wall_clock::duration>(milliseconds{count}));
}

// Later than any token expires, and early enough that time points in nanoseconds, which end
// in 2262, never overflow: 2100-01-01.
constexpr long long latest_expiry_ms = 4'102'444'800'000;

// No replica asks for a pause longer than a token lives (30 days at most: upstream_answer.cpp).
// A longer one is a damaged reply, and unbounded it would overflow the refresher's clock sums.
constexpr long long longest_wait_ms = 30LL * 24 * 3600 * 1000;

// {expiry_ms, token} at `offset` of a script's answer, if there. The broker stores only plain
// tokens with a real expiry; anything else in the key (another writer, a damaged reply) is no
// token, rather than one the refresher could not publish (its answers are JSON) or whose
// expiry overflows the clock.
std::optional<stored_token> stored_at(const redis_reply& reply, std::size_t offset) {
  if (reply.elements.size() < offset + 2) return std::nullopt;
  const auto& expiry = reply.elements[offset];
  const auto& value = reply.elements[offset + 1];
  if (expiry.type != redis_reply::kind::integer || expiry.integer <= 0 ||
      expiry.integer > latest_expiry_ms || value.type != redis_reply::kind::string ||
      !is_plain_token(value.text)) {
    return std::nullopt;
  }
  return stored_token{value.text, from_unix_milliseconds(expiry.integer)};
}

}  // namespace

redis_reply from_hiredis(const redisReply& raw) {
  redis_reply reply;
  switch (raw.type) {
    case REDIS_REPLY_STRING:
      reply.type = redis_reply::kind::string;
      reply.text.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_STATUS:
      reply.type = redis_reply::kind::status;
      reply.text.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_ERROR:
      reply.type = redis_reply::kind::error;
      reply.text.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_INTEGER:
      reply.type = redis_reply::kind::integer;
      reply.integer = raw.integer;
      break;
    case REDIS_REPLY_ARRAY:
      reply.type = redis_reply::kind::array;
      for (std::size_t i = 0; i < raw.elements; ++i)
        reply.elements.push_back(from_hiredis(*raw.element[i]));
      break;
    default:
      break;  // nil
  }
  return reply;
}

std::optional<std::string_view> message_payload(const redis_reply& message) {
  if (message.type == redis_reply::kind::array && message.elements.size() == 3 &&
      message.elements[0].text == "message") {
    return message.elements[2].text;
  }
  return std::nullopt;
}

std::optional<std::string> event_app(std::string_view payload) {
  const auto event = nlohmann::json::parse(payload, nullptr, false);
  if (event.is_object() && event.contains("app") && event["app"].is_string()) {
    return event["app"].get<std::string>();
  }
  return std::nullopt;
}

std::optional<stored_token> loaded_token(const redis_reply& reply) {
  return stored_at(reply, 0);
}

save_outcome save_result(const redis_reply& reply) {
  return reply.integer < 0 ? save_outcome::newer_kept : save_outcome::written;
}

refresh_permit_answer refresh_permit_from(const redis_reply& reply) {
  if (reply.elements.size() < 2) return refresh_permit_answer{};
  const auto& verdict = reply.elements[0].text;
  return refresh_permit_answer{
      .permit = verdict == "granted" ? refresh_permit::granted
                : verdict == "busy"  ? refresh_permit::busy
                                     : refresh_permit::cooling_down,
      .wait = milliseconds{std::clamp(reply.elements[1].integer, 0LL, longest_wait_ms)},
      .stored = stored_at(reply, 2),
  };
}

}  // namespace token_broker
