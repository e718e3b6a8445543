// The connection's RESP decoding (reply_reader.hpp): replies as they come off a socket, in
// pieces or several at once, and bytes that are not RESP.
#include "token_broker/redis/reply_reader.hpp"

#include <gtest/gtest.h>

namespace token_broker {
namespace {

TEST(reply_reader, a_reply_split_across_reads_comes_whole) {
  reply_reader reader;
  reader.feed("*3\r\n$7\r\nmessage\r\n$12\r\nwecom:");
  EXPECT_EQ(reader.next(), std::nullopt);
  reader.feed("events\r\n$2\r\n{}\r\n");
  const auto reply = reader.next();
  ASSERT_TRUE(reply);
  EXPECT_EQ(message_payload(*reply), "{}");
  EXPECT_EQ(reader.next(), std::nullopt);
}

TEST(reply_reader, replies_read_together_come_in_order) {
  reply_reader reader;
  reader.feed("+OK\r\n-NOSCRIPT No matching script\r\n:42\r\n$-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n");
  const auto ok = reader.next();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->type, redis_reply::kind::status);
  EXPECT_EQ(ok->text, "OK");
  const auto error = reader.next();
  ASSERT_TRUE(error);
  EXPECT_EQ(error->type, redis_reply::kind::error);
  EXPECT_EQ(error->text, "NOSCRIPT No matching script");
  const auto number = reader.next();
  ASSERT_TRUE(number);
  EXPECT_EQ(number->integer, 42);
  const auto nil = reader.next();
  ASSERT_TRUE(nil);
  EXPECT_EQ(nil->type, redis_reply::kind::nil);
  const auto nested = reader.next();
  ASSERT_TRUE(nested);
  ASSERT_EQ(nested->elements.size(), 2u);
  EXPECT_EQ(nested->elements[0].elements.at(0).integer, 1);
  EXPECT_EQ(nested->elements[1].type, redis_reply::kind::string);
  EXPECT_EQ(reader.next(), std::nullopt);
}

TEST(reply_reader, bytes_that_are_not_resp_are_a_protocol_error) {
  reply_reader reader;
  reader.feed("HTTP/1.1 400 Bad Request\r\n");
  EXPECT_THROW(reader.next(), redis_protocol_error);
}

// hiredis would allocate an array as large as announced: far beyond any reply the broker
// reads, it is refused before any memory is taken.
TEST(reply_reader, an_array_larger_than_any_reply_is_refused) {
  reply_reader reader;
  reader.feed("*922337270\r\n");
  EXPECT_THROW(reader.next(), redis_protocol_error);
}

}  // namespace
}  // namespace token_broker
