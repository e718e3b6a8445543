// WeCom's callback crypto against WeCom's own sample vectors (SPEC §7 and the sample code of
// WeCom's WXBizMsgCrypt libraries), and what must not open.
#include "token_broker/callback/msg_crypt.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <memory>
#include <vector>

#include "token_broker/config/config.hpp"
#include "token_broker/core/base64.hpp"

namespace token_broker {
namespace {

// WeCom's sample company: its callback token, EncodingAESKey and receive id.
constexpr const char* token = "QDG6eK";
constexpr const char* encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
constexpr const char* receive_id = "wx5823bf96d3bd56c7";

// The URL verification GET of WeCom's samples.
constexpr const char* get_signature = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3";
constexpr const char* get_timestamp = "1409659589";
constexpr const char* get_nonce = "263014780";
constexpr const char* get_echostr =
    "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";

// The message POST of WeCom's samples: a text message "hello".
constexpr const char* post_signature = "477715d11cdb4164915debcba66cb864d751f3e6";
constexpr const char* post_timestamp = "1409659813";
constexpr const char* post_nonce = "1372623149";
constexpr const char* post_encrypt =
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCU"
    "pj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgp"
    "ue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCK"
    "Iw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o"
    "0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2p"
    "DBS8R07+qN+E7Q==";
constexpr const char* post_message =
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
    "<FromUserName><![CDATA[mycreate]]></FromUserName>\n"
    "<CreateTime>1409659813</CreateTime>\n"
    "<MsgType><![CDATA[text]]></MsgType>\n"
    "<Content><![CDATA[hello]]></Content>\n"
    "<MsgId>4561255354251345929</MsgId>\n"
    "<AgentID>218</AgentID>\n"
    "</xml>";

// AES-256-CBC of whole blocks under the sample key, as WeCom's envelope is made, for plaintexts
// WeCom would never send.
std::string encrypt_raw(const std::string& plain) {
  const auto key = base64_decode(std::string(encoding_aes_key) + "=").value();
  const auto* key_bytes = reinterpret_cast<const unsigned char*>(key.data());
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> context(EVP_CIPHER_CTX_new(),
                                                                          &EVP_CIPHER_CTX_free);
  std::string sealed(plain.size(), '\0');
  int written = 0;
  EXPECT_EQ(EVP_EncryptInit_ex(context.get(), EVP_aes_256_cbc(), nullptr, key_bytes, key_bytes), 1);
  EVP_CIPHER_CTX_set_padding(context.get(), 0);
  EXPECT_EQ(EVP_EncryptUpdate(context.get(), reinterpret_cast<unsigned char*>(sealed.data()),
                              &written, reinterpret_cast<const unsigned char*>(plain.data()),
                              static_cast<int>(plain.size())),
            1);
  return base64_encode(sealed);
}

msg_crypt sample() {
  return msg_crypt(token, encoding_aes_key, "suites.s.callback.encoding_aes_key");
}

TEST(msg_crypt, wecoms_url_verification_sample_verifies_and_opens) {
  const auto crypt = sample();
  EXPECT_EQ(crypt.signature(get_timestamp, get_nonce, get_echostr), get_signature);
  EXPECT_TRUE(crypt.signed_by_wecom(get_signature, get_timestamp, get_nonce, get_echostr));
  const auto opened = crypt.open(get_echostr);
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->message, "1616140317555161061");
  EXPECT_EQ(opened->receive_id, receive_id);
}

TEST(msg_crypt, wecoms_message_sample_verifies_and_opens) {
  const auto crypt = sample();
  EXPECT_TRUE(crypt.signed_by_wecom(post_signature, post_timestamp, post_nonce, post_encrypt));
  const auto opened = crypt.open(post_encrypt);
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->message, post_message);
  EXPECT_EQ(opened->receive_id, receive_id);
}

TEST(msg_crypt, any_change_to_a_signed_part_breaks_the_signature) {
  const auto crypt = sample();
  EXPECT_FALSE(crypt.signed_by_wecom(post_signature, post_timestamp, "1372623148", post_encrypt));
  EXPECT_FALSE(crypt.signed_by_wecom(post_signature, "1409659814", post_nonce, post_encrypt));
  std::string encrypt = post_encrypt;
  encrypt[10] = encrypt[10] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(crypt.signed_by_wecom(post_signature, post_timestamp, post_nonce, encrypt));
  std::string upper = post_signature;
  upper[0] = 'F';
  EXPECT_FALSE(crypt.signed_by_wecom(upper, post_timestamp, post_nonce, post_encrypt));
  EXPECT_FALSE(crypt.signed_by_wecom("", post_timestamp, post_nonce, post_encrypt));
  const msg_crypt other_token("QDG6eL", encoding_aes_key, "field");
  EXPECT_FALSE(
      other_token.signed_by_wecom(post_signature, post_timestamp, post_nonce, post_encrypt));
}

TEST(msg_crypt, what_is_no_envelope_under_the_key_does_not_open) {
  const auto crypt = sample();
  EXPECT_FALSE(crypt.open(""));
  EXPECT_FALSE(crypt.open("not base64!"));
  EXPECT_FALSE(crypt.open(std::string(post_encrypt).substr(0, 44)));  // 33 bytes: no block
  // Another key: the padding comes out wrong.
  const msg_crypt other_key(token, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "field");
  EXPECT_FALSE(other_key.open(post_encrypt));
  // Well padded under the key, but with a message length past the end of what follows it.
  std::string plain(16, 'r');
  plain += std::string("\x00\x00\x00\x40", 4) + "short";
  plain.append(32 - plain.size() % 32, static_cast<char>(32 - plain.size() % 32));
  EXPECT_FALSE(crypt.open(encrypt_raw(plain)));
  // And with every padding byte but the last one wrong.
  std::string bad_padding(16, 'r');
  bad_padding += std::string("\x00\x00\x00\x01", 4) + "m";
  bad_padding.append(10, 'x').push_back('\x0b');
  EXPECT_FALSE(crypt.open(encrypt_raw(bad_padding)));
}

TEST(msg_crypt, seal_then_open_gives_back_message_and_receive_id) {
  const auto crypt = sample();
  msg_crypt::random_bytes random{};
  for (std::size_t i = 0; i < random.size(); ++i) random[i] = static_cast<unsigned char>(i * 7);
  // Lengths either side of a padding boundary (16 + 4 + message + receive id, padded to 32).
  for (const std::size_t length : {0, 1, 11, 12, 13, 43, 44, 45, 1000}) {
    const std::string message(length, 'm');
    const auto sealed = crypt.seal(message, "wwsuite00000000001", random);
    EXPECT_TRUE(crypt.signed_by_wecom(crypt.signature("1", "2", sealed), "1", "2", sealed));
    const auto opened = crypt.open(sealed);
    ASSERT_TRUE(opened) << length;
    EXPECT_EQ(opened->message, message);
    EXPECT_EQ(opened->receive_id, "wwsuite00000000001");
  }
}

TEST(msg_crypt, a_key_that_is_not_wecoms_shape_is_a_config_error_naming_the_field) {
  const std::vector<std::string> keys{std::string(encoding_aes_key).substr(1),
                                      std::string(encoding_aes_key) + "A",
                                      "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2!", ""};
  for (const auto& key : keys) {
    try {
      msg_crypt("t", key, "suites.crm.callback.encoding_aes_key");
      ADD_FAILURE() << "accepted a key of " << key.size() << " characters";
    } catch (const config_error& error) {
      EXPECT_EQ(error.field(), "suites.crm.callback.encoding_aes_key");
      if (!key.empty()) {
        EXPECT_EQ(std::string(error.what()).find(key), std::string::npos) << "the key is secret";
      }
    }
  }
}

}  // namespace
}  // namespace token_broker
