// Fuzzes the reading of what Redis sends: the bytes go through hiredis's reply reader as on
// a real connection, each reply is converted (from_hiredis) and read as every script's answer
// and as a pub/sub message would be; the bytes are also read as an event payload.
//
// Beyond crashes and sanitizer reports, a finding is a reading the broker cannot use as is:
// a conversion that loses part of the reply, a stored token the refresher could not adopt and
// publish (redis_replies.hpp), a wait or a time left it could not add to the clock.
#include <hiredis/hiredis.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "token_broker/core/clock.hpp"
#include "token_broker/credentials/store_sync.hpp"
#include "token_broker/credentials/token_lifecycle.hpp"
#include "token_broker/http/token_answer.hpp"
#include "token_broker/redis/redis_replies.hpp"

namespace {

using namespace token_broker;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_redis_reply: %s\n", what);
  std::abort();
}

// The conversion keeps everything the broker reads: type, text, integer, every element.
void check_conversion(const redisReply& raw, const redis_reply& converted) {
  switch (raw.type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      if (converted.text != std::string_view(raw.str, raw.len)) finding("text lost");
      break;
    case REDIS_REPLY_INTEGER:
      if (converted.type != redis_reply::kind::integer || converted.integer != raw.integer) {
        finding("integer lost");
      }
      break;
    case REDIS_REPLY_ARRAY:
      if (converted.type != redis_reply::kind::array || converted.elements.size() != raw.elements) {
        finding("array elements lost");
      }
      for (std::size_t i = 0; i < raw.elements; ++i) {
        check_conversion(*raw.element[i], converted.elements[i]);
      }
      break;
    default:
      if (converted.type != redis_reply::kind::nil) finding("nil lost");
  }
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

void read_reply(const redisReply& raw) {
  const auto reply = from_hiredis(raw);
  check_conversion(raw, reply);
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

// hiredis 0.14 allocates an array as large as the count the server sends: "*922337270" asks
// for 7 GB. In the broker that is address space only (overcommit), or hiredis's "out of
// memory" error when the allocation fails; under libFuzzer's malloc limit the attempt alone
// is reported. No reply the broker reads has more than 4 elements: this reader fails larger
// arrays as hiredis does a failed allocation, and otherwise builds replies as hiredis does.
constexpr int largest_array = 4096;
redisReplyObjectFunctions bounded_functions;
void* (*hiredis_create_array)(const redisReadTask*, int) = nullptr;

void* create_bounded_array(const redisReadTask* task, int elements) {
  if (elements > largest_array) return nullptr;
  return hiredis_create_array(task, elements);
}

struct reader_deleter {
  void operator()(redisReader* reader) const { redisReaderFree(reader); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::unique_ptr<redisReader, reader_deleter> reader(redisReaderCreate());
  if (!reader) return 0;
  if (!hiredis_create_array) {
    bounded_functions = *reader->fn;
    hiredis_create_array = bounded_functions.createArray;
    bounded_functions.createArray = &create_bounded_array;
  }
  reader->fn = &bounded_functions;
  if (redisReaderFeed(reader.get(), reinterpret_cast<const char*>(data), size) != REDIS_OK) {
    return 0;
  }
  // Replies one after another, as a connection reads them, until the bytes end or the
  // reader refuses them (a protocol error ends the connection).
  for (;;) {
    void* reply = nullptr;
    if (redisReaderGetReply(reader.get(), &reply) != REDIS_OK || reply == nullptr) break;
    read_reply(*static_cast<const redisReply*>(reply));
    freeReplyObject(reply);
  }
  (void)event_credential(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
