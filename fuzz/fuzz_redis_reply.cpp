// Fuzzes the reading of what Redis sends: the bytes go through the connection's reply_reader
// as on a real connection, and each reply is read as every script's answer and as a pub/sub
// message would be; the bytes are also read as an event payload.
//
// Beyond crashes and sanitizer reports, a finding is a reading the broker cannot use as is:
// a stored token the refresher could not adopt and publish (redis_replies.hpp), a wait or a
// time left it could not add to the clock.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "token_broker/core/clock.hpp"
#include "token_broker/credentials/store_sync.hpp"
#include "token_broker/credentials/token_lifecycle.hpp"
#include "token_broker/http/token_answer.hpp"
#include "token_broker/redis/redis_replies.hpp"
#include "token_broker/redis/reply_reader.hpp"

namespace {

using namespace token_broker;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_redis_reply: %s\n", what);
  std::abort();
}

// What basic_refresher::adopt_stored and publish do with a stored token: it must survive both.
void use_stored(const stored_token& stored, time_point now) {
  if (stored.expires_at <= now) finding("a stored token read with no time left");
  const auto adopted = token_from_expiry(stored.value, stored.expires_at, now, wall_clock::now());
  (void)prepare_token_answers({token_broker::credential_kind::access_token, "app"}, adopted);
  (void)seconds_left(adopted, now);
}

void use_permit(const refresh_permit_answer& answer, time_point now) {
  if (answer.wait.count() < 0) finding("a negative wait");
  // As basic_refresher::refresh() plans its next attempt after a cool-down.
  (void)(now + answer.wait);
  if (answer.stored) use_stored(*answer.stored, now);
}

// As store_sync compares each app's held token with the store's.
void use_digests(const std::vector<stored_digest>& digests, time_point now) {
  const auto held = token_from_expiry("TOKEN", now + std::chrono::hours{2}, now, wall_clock::now());
  for (const auto& stored : digests) {
    if (stored.present && stored.expires_at <= now) finding("a stored digest with no time left");
    (void)compare_with_store(&held, stored);
  }
}

void read_reply(const redis_reply& reply) {
  // Times left are anchored when the command was sent: a moment before the answer is read.
  const auto sent_at = clock::now();
  if (const auto stored = loaded_token(reply, sent_at)) use_stored(*stored, sent_at);
  (void)save_results(reply, reply.elements.size());
  use_permit(refresh_permit_from(reply, sent_at), sent_at);
  if (const auto digests = stored_digests(reply, reply.elements.size() / 2, sent_at)) {
    use_digests(*digests, sent_at);
  }
  if (const auto payload = message_payload(reply)) (void)event_credential(*payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // Replies one after another, as a connection reads them, until the bytes end or the reader
  // refuses them (a protocol error ends the connection).
  try {
    reply_reader reader;
    reader.feed(bytes);
    while (const auto reply = reader.next()) read_reply(*reply);
  } catch (const redis_protocol_error&) {
  }
  (void)event_credential(bytes);
  return 0;
}
