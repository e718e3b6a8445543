// Permanent codes at rest: AES-256-GCM that opens only under its key, for the place it was
// sealed for, unchanged; never the same sealed text twice; and a key file of the wrong size
// refused by name.
#include "token_broker/store/at_rest_key.hpp"

#include <gtest/gtest.h>

#include "token_broker/core/base64.hpp"
#include "token_broker/config/config.hpp"

namespace token_broker {
namespace {

const std::string key_bytes(32, '\x5a');
constexpr const char* place = "suite_corps:crm-suite:wwcorpA000000001";
constexpr const char* code = "permanent-code-of-corp-A";

TEST(at_rest_key, a_sealed_value_opens_under_its_key_for_its_place) {
  const at_rest_key key(key_bytes, "suites.crm-suite.store_key_file");
  const auto sealed = key.seal(code, place);
  EXPECT_EQ(sealed.find(code), std::string::npos);
  EXPECT_EQ(key.open(sealed, place), code);
  EXPECT_EQ(key.open(key.seal("", place), place), "");
}

TEST(at_rest_key, each_seal_is_a_new_text) {
  const at_rest_key key(key_bytes, "field");
  EXPECT_NE(key.seal(code, place), key.seal(code, place)) << "a fresh nonce each time";
}

TEST(at_rest_key, it_does_not_open_elsewhere_changed_or_under_another_key) {
  const at_rest_key key(key_bytes, "field");
  const auto sealed = key.seal(code, place);
  EXPECT_FALSE(key.open(sealed, "suite_corps:crm-suite:wwcorpB000000002"));
  EXPECT_FALSE(at_rest_key(std::string(32, '\x5b'), "field").open(sealed, place));

  auto raw = base64_decode(sealed).value();
  for (const std::size_t at : {std::size_t{1}, std::size_t{14}, raw.size() - 1}) {
    auto changed = raw;
    changed[at] = static_cast<char>(changed[at] ^ 0x01);
    EXPECT_FALSE(key.open(base64_encode(changed), place)) << "byte " << at;
  }
  raw[0] = 2;  // a version this broker does not know
  EXPECT_FALSE(key.open(base64_encode(raw), place));
  EXPECT_FALSE(key.open("", place));
  EXPECT_FALSE(key.open("not base64", place));
  EXPECT_FALSE(key.open(sealed.substr(0, 20), place));
}

TEST(at_rest_key, a_key_of_the_wrong_size_is_a_config_error_naming_the_field) {
  for (const std::size_t size : {0, 16, 31, 33, 44}) {
    try {
      at_rest_key(std::string(size, 'k'), "suites.crm-suite.store_key_file");
      ADD_FAILURE() << "accepted a key of " << size << " bytes";
    } catch (const config_error& error) {
      EXPECT_EQ(error.field(), "suites.crm-suite.store_key_file");
    }
  }
}

}  // namespace
}  // namespace token_broker
