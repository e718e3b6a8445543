#include "token_broker/redis/redis_replies.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "token_broker/credentials/call_budget.hpp"
#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker {
namespace {

using std::chrono::milliseconds;

// No token lives longer than 30 days (upstream_answer.cpp), so no key the broker writes has
// more time left, and no replica asks for a longer pause. Anything longer is a damaged reply
// or another writer's key, and unbounded it would overflow the refresher's clock sums.
constexpr long long longest_ttl_ms = 30LL * 24 * 3600 * 1000;

bool usable_ttl(const redis_reply& ttl) {
  return ttl.type == redis_reply::kind::integer && ttl.integer > 0 && ttl.integer <= longest_ttl_ms;
}

// {ttl_ms, token} at `offset` of a script's answer, if there. The broker stores only plain
// tokens with a real expiry; anything else in the key (another writer, a damaged reply) is no
// token, rather than one the refresher could not publish (its answers are JSON) or whose
// expiry overflows the clock.
std::optional<stored_token> stored_at(const redis_reply& reply, std::size_t offset,
                                      time_point sent_at) {
  if (reply.elements.size() < offset + 2) return std::nullopt;
  const auto& ttl = reply.elements[offset];
  const auto& value = reply.elements[offset + 1];
  if (!usable_ttl(ttl) || value.type != redis_reply::kind::string || !is_plain_token(value.text)) {
    return std::nullopt;
  }
  return stored_token{value.text, sent_at + milliseconds{ttl.integer}};
}

bool is_digest(const redis_reply& digest) {
  return digest.type == redis_reply::kind::string && digest.text.size() == 16 &&
         digest.text.find_first_not_of("0123456789abcdef") == std::string::npos;
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

std::string event_message(const credential_id& id, std::string_view event,
                          std::optional<std::int64_t> expires_at) {
  nlohmann::ordered_json message{{"kind", to_string(id.kind)}};
  const auto fields = naming_fields(id.kind);
  const auto values = naming_values(id);
  for (std::size_t i = 0; i < fields.size(); ++i) {
    message[std::string(fields[i])] = std::string(values[i]);
  }
  message["event"] = event;
  if (expires_at) message["expires_at"] = *expires_at;
  return message.dump();
}

std::optional<credential_id> event_credential(std::string_view payload) {
  const auto event = nlohmann::json::parse(payload, nullptr, false);
  if (!event.is_object()) return std::nullopt;
  auto kind = std::optional(credential_kind::access_token);
  if (event.contains("kind")) {
    const auto& named = event["kind"];
    kind = named.is_string() ? credential_kind_named(named.get<std::string>()) : std::nullopt;
  }
  if (!kind) return std::nullopt;
  std::string scope;
  for (const auto member : naming_fields(*kind)) {
    const auto found = event.find(std::string(member));
    if (found == event.end() || !found->is_string()) return std::nullopt;
    if (!scope.empty()) scope += ':';
    scope += found->get<std::string>();
  }
  return credential_id{*kind, std::move(scope)};
}

std::optional<corp_change> corp_event(std::string_view payload) {
  const auto event = nlohmann::json::parse(payload, nullptr, false);
  if (!event.is_object() || !event.contains("event")) return std::nullopt;
  const auto& what = event["event"];
  if (what == "added") return corp_change::added;
  if (what == "removed") return corp_change::removed;
  return std::nullopt;
}

std::optional<stored_token> loaded_token(const redis_reply& reply, time_point sent_at) {
  return stored_at(reply, 0, sent_at);
}

std::vector<save_outcome> save_results(const redis_reply& reply, std::size_t count) {
  std::vector<save_outcome> outcomes(count, save_outcome::unavailable);
  for (std::size_t i = 0; i < count && i < reply.elements.size(); ++i) {
    const auto& outcome = reply.elements[i];
    if (outcome.type != redis_reply::kind::integer) continue;
    outcomes[i] = outcome.integer < 0 ? save_outcome::store_knows_better : save_outcome::written;
  }
  return outcomes;
}

std::optional<std::vector<stored_digest>> stored_digests(const redis_reply& reply,
                                                         std::size_t count, time_point sent_at) {
  if (reply.type != redis_reply::kind::array || reply.elements.size() != 2 * count) {
    return std::nullopt;
  }
  std::vector<stored_digest> digests(count);
  for (std::size_t i = 0; i < count; ++i) {
    const auto& ttl = reply.elements[2 * i];
    const auto& digest = reply.elements[2 * i + 1];
    if (!usable_ttl(ttl) || !is_digest(digest)) continue;
    digests[i] = stored_digest{
        .present = true, .expires_at = sent_at + milliseconds{ttl.integer}, .digest = digest.text};
  }
  return digests;
}

refresh_permit_answer refresh_permit_from(const redis_reply& reply, time_point sent_at) {
  if (reply.elements.size() < 2) return refresh_permit_answer{};
  const auto& verdict = reply.elements[0].text;
  return refresh_permit_answer{
      .permit = verdict == "granted" ? refresh_permit::granted
                : verdict == "busy"  ? refresh_permit::busy
                                     : refresh_permit::cooling_down,
      .wait = milliseconds{std::clamp(reply.elements[1].integer, 0LL, longest_ttl_ms)},
      .stored = stored_at(reply, 2, sent_at),
  };
}

call_budget_answer call_budget_from(const redis_reply& reply) {
  if (reply.elements.size() != 2 || reply.elements[0].type != redis_reply::kind::integer ||
      reply.elements[1].type != redis_reply::kind::integer) {
    return call_budget_answer{};
  }
  if (reply.elements[0].integer == 1) return {call_budget_answer::verdict::granted};
  return {call_budget_answer::verdict::spent,
          milliseconds{std::clamp(reply.elements[1].integer, 1LL,
                                  static_cast<long long>(call_budget_window.count()))}};
}

}  // namespace token_broker
