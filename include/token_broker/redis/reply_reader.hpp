// Replies out of the bytes a Redis connection receives: hiredis's RESP reader, kept as the
// codec while asio owns the socket (hiredis 0.14 has no TLS).
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string_view>

#include "token_broker/redis/redis_replies.hpp"

struct redisReader;  // hiredis

namespace token_broker {

// Bytes that are not RESP: the connection cannot go on.
class redis_protocol_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class reply_reader {
 public:
  reply_reader();
  ~reply_reader();
  reply_reader(const reply_reader&) = delete;
  reply_reader& operator=(const reply_reader&) = delete;

  // Takes the next bytes received. Throws redis_protocol_error.
  void feed(std::string_view bytes);
  // The next whole reply, or nullopt until more bytes come. Throws redis_protocol_error.
  std::optional<redis_reply> next();

 private:
  struct free_reader {
    void operator()(redisReader* reader) const;
  };
  std::unique_ptr<redisReader, free_reader> reader_;
};

}  // namespace token_broker
