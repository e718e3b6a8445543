#include "token_broker/redis_replies.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace token_broker {
namespace {

using std::chrono::milliseconds;

wall_time_point from_unix_milliseconds(long long count) {
  return wall_time_point(std::chrono::duration_cast<wall_clock::duration>(milliseconds{count}));
}

// {expiry_ms, token} at `offset` of a script's answer, if there.
std::optional<stored_token> stored_at(const redis_reply& reply, std::size_t offset) {
  if (reply.elements.size() < offset + 2) return std::nullopt;
  return stored_token{reply.elements[offset + 1].text,
                      from_unix_milliseconds(reply.elements[offset].integer)};
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
      .wait = milliseconds{std::max(0LL, reply.elements[1].integer)},
      .stored = stored_at(reply, 2),
  };
}

}  // namespace token_broker
