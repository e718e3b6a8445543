// base64 as the callbacks and the store use it: what it writes it reads back; anything but
// whole padded groups of the alphabet is refused.
#include "token_broker/core/base64.hpp"

#include <gtest/gtest.h>

namespace token_broker {
namespace {

TEST(base64, decodes_what_it_encodes_and_refuses_what_is_not_base64) {
  for (const std::string bytes : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes);
  }
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_decode("Zm9vYg=="), "foob");
  EXPECT_FALSE(base64_decode("Zm9vYg="));    // not a whole group
  EXPECT_FALSE(base64_decode("Zm9v Yg=="));  // whitespace
  EXPECT_FALSE(base64_decode("Zm=vYg=="));   // padding inside
  EXPECT_FALSE(base64_decode("===="));
}

}  // namespace
}  // namespace token_broker
