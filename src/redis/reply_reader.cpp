#include "token_broker/redis/reply_reader.hpp"

#include <hiredis/hiredis.h>

#include <new>

namespace token_broker {
namespace {

// hiredis 0.14 allocates an array as large as the count the server sends: "*922337270" asks
// for 7 GB. The largest reply the broker reads is the corps hash of a suite (two elements a
// corp); anything beyond this is refused as a failed allocation is.
constexpr int largest_array = 1 << 22;

void* create_bounded_array(const redisReadTask* task, int elements);

// hiredis's own reply builders, but for arrays past the bound.
struct bounded_builders {
  redisReplyObjectFunctions functions;
  void* (*create_array)(const redisReadTask*, int);
};

const bounded_builders& builders() {
  static const bounded_builders made = [] {
    redisReader* defaults = redisReaderCreate();
    if (!defaults) throw std::bad_alloc();
    bounded_builders taken{*defaults->fn, defaults->fn->createArray};
    redisReaderFree(defaults);
    taken.functions.createArray = &create_bounded_array;
    return taken;
  }();
  return made;
}

void* create_bounded_array(const redisReadTask* task, int elements) {
  if (elements > largest_array) return nullptr;
  return builders().create_array(task, elements);
}

struct free_reply {
  void operator()(void* reply) const { freeReplyObject(reply); }
};

}  // namespace

void reply_reader::free_reader::operator()(redisReader* reader) const {
  redisReaderFree(reader);
}

reply_reader::reply_reader() : reader_(redisReaderCreate()) {
  if (!reader_) throw std::bad_alloc();
  // Const in spirit: hiredis only reads the table.
  reader_->fn = const_cast<redisReplyObjectFunctions*>(&builders().functions);
}

reply_reader::~reply_reader() = default;

void reply_reader::feed(std::string_view bytes) {
  if (redisReaderFeed(reader_.get(), bytes.data(), bytes.size()) != REDIS_OK) {
    throw redis_protocol_error(reader_->errstr);
  }
}

std::optional<redis_reply> reply_reader::next() {
  void* raw = nullptr;
  if (redisReaderGetReply(reader_.get(), &raw) != REDIS_OK) {
    throw redis_protocol_error(reader_->errstr);
  }
  if (!raw) return std::nullopt;
  const std::unique_ptr<void, free_reply> owned(raw);
  return from_hiredis(*static_cast<const redisReply*>(raw));
}

}  // namespace token_broker
