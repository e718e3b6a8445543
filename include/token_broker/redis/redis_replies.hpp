// What Redis answers, read as plain values: a hiredis reply converted, and the meaning of each
// of redis_token_store's script answers and of a message on the events channel. Pure
// functions with no connection behind them, so they are tested and fuzzed on their own.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/store/token_store.hpp"

struct redisReply;  // hiredis

namespace token_broker {

struct redis_reply {
  enum class kind { nil, string, integer, array, status, error };
  kind type = kind::nil;
  std::string text;  // string, status and error replies
  long long integer = 0;
  std::vector<redis_reply> elements;
};

// A hiredis reply as a plain value. hiredis nests arrays at most 7 deep, which bounds the
// recursion.
redis_reply from_hiredis(const redisReply& raw);

// The payload of a pub/sub message, ["message", channel, payload], viewed in `message`;
// nullopt for anything else (a "subscribe" confirmation).
std::optional<std::string_view> message_payload(const redis_reply& message);

// An event on the events channel (SPEC §5): the credential's kind and its naming_fields ("app";
// "provider"; "suite"; "suite" and "corpid"), then `event` ("refreshed", "added", "removed")
// and, for a value, its wall-clock expiry.
std::string event_message(const credential_id& id, std::string_view event,
                          std::optional<std::int64_t> expires_at = std::nullopt);
// The credential an event announces ({"kind":"jsapi_ticket","app":"hr","event":"refreshed",…};
// a v1 broker's events have no kind: an access_token); nullopt for anything else, kinds this
// broker does not know included.
std::optional<credential_id> event_credential(std::string_view payload);
// An authorized corp's event ("added" or "removed"), or nullopt for a value's ("refreshed").
enum class corp_change { added, removed };
std::optional<corp_change> corp_event(std::string_view payload);

// Script answers carry times left (PTTL), never instants, and each is anchored at `sent_at`,
// when the command was sent: the round trip can only shorten a token's life, never stretch it.

// The load script's answer, {ttl_ms, token} or {}: the stored token, if any.
std::optional<stored_token> loaded_token(const redis_reply& reply, time_point sent_at);

// The save script's answer, one integer per token offered: 1 written, 0 nothing to change, -1
// a newer token is stored. `count` outcomes; any not in the answer are `unavailable`.
std::vector<save_outcome> save_results(const redis_reply& reply, std::size_t count);

// The digests script's answer, {ttl_ms, digest} per key, for `count` keys; nullopt when it is
// not that shape. A key without a token the load script would return is not `present`.
std::optional<std::vector<stored_digest>> stored_digests(const redis_reply& reply,
                                                         std::size_t count, time_point sent_at);

// The request script's answer, {verdict, wait_ms[, ttl_ms, token]}; `unavailable` when it
// is not that shape.
refresh_permit_answer refresh_permit_from(const redis_reply& reply, time_point sent_at);

// The budget script's answer, {1, 0} granted or {0, wait_ms} spent; `not_counted` when it is
// not that shape.
call_budget_answer call_budget_from(const redis_reply& reply);

}  // namespace token_broker
