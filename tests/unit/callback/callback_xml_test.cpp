// The callback's XML: the envelope's <Encrypt> and a suite's events as WeCom's documentation
// shows them, and what is refused (not XML, a DOCTYPE and its entities, too large, no field).
#include "token_broker/callback/callback_xml.hpp"

#include <gtest/gtest.h>

namespace token_broker {
namespace {

TEST(callback_xml, the_envelopes_encrypted_text_is_read_from_its_cdata) {
  const auto encrypted = encrypted_text_of(
      "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>"
      "<Encrypt><![CDATA[RypEvHKD8QQK+/==]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>");
  EXPECT_EQ(encrypted, "RypEvHKD8QQK+/==");
  EXPECT_EQ(encrypted_text_of("<xml><Encrypt>plain+text=</Encrypt></xml>"), "plain+text=");
}

TEST(callback_xml, an_envelope_without_encrypted_text_is_refused) {
  EXPECT_FALSE(encrypted_text_of(""));
  EXPECT_FALSE(encrypted_text_of("not xml"));
  EXPECT_FALSE(encrypted_text_of("<xml><Encrypt>unclosed</xml>"));
  EXPECT_FALSE(encrypted_text_of("<xml><ToUserName>x</ToUserName></xml>"));
  EXPECT_FALSE(encrypted_text_of("<xml><Encrypt><![CDATA[  ]]></Encrypt></xml>"));
  EXPECT_FALSE(encrypted_text_of("<other><Encrypt>abc</Encrypt></other>"));
}

TEST(callback_xml, a_doctype_and_its_entities_are_refused) {
  // The "billion laughs": refused before any entity could be expanded.
  const std::string bomb =
      "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY a \"aaaaaaaaaa\">"
      "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;\">]>"
      "<xml><Encrypt>&c;</Encrypt><InfoType>&c;</InfoType></xml>";
  EXPECT_FALSE(encrypted_text_of(bomb));
  EXPECT_FALSE(read_suite_event(bomb));
  EXPECT_FALSE(
      encrypted_text_of("<!DOCTYPE xml SYSTEM \"file:///etc/passwd\"><xml><Encrypt>x"
                        "</Encrypt></xml>"));
}

TEST(callback_xml, a_document_past_the_cap_is_refused) {
  const std::string head = "<xml><Encrypt>";
  const std::string tail = "</Encrypt></xml>";
  const std::string at_cap =
      head + std::string(max_callback_xml - head.size() - tail.size(), 'A') + tail;
  EXPECT_TRUE(encrypted_text_of(at_cap));
  EXPECT_FALSE(encrypted_text_of(head + std::string(max_callback_xml, 'A') + tail));
}

TEST(callback_xml, a_suite_ticket_event_as_wecoms_documentation_shows_it) {
  // document/path/90628, with its space before the InfoType's CDATA.
  const auto event = read_suite_event(
      "<xml>\n"
      "    <SuiteId><![CDATA[ww4asffe99e54c0fxxxx]]></SuiteId>\n"
      "    <InfoType> <![CDATA[suite_ticket]]></InfoType>\n"
      "    <TimeStamp>1403610513</TimeStamp>\n"
      "    <SuiteTicket><![CDATA[asdfasfdasdfasdf]]></SuiteTicket>\n"
      "</xml>");
  ASSERT_TRUE(event);
  EXPECT_EQ(event->info_type, "suite_ticket");
  EXPECT_EQ(event->suite_id, "ww4asffe99e54c0fxxxx");
  EXPECT_EQ(event->suite_ticket, "asdfasfdasdfasdf");
  EXPECT_EQ(event->timestamp, 1403610513);
  EXPECT_EQ(event->auth_code, "");
}

TEST(callback_xml, authorization_events_carry_their_code_or_corp) {
  const auto created = read_suite_event(
      "<xml><SuiteId><![CDATA[ww4asffe99e54cxxxx]]></SuiteId>"
      "<AuthCode><![CDATA[AUTHCODE]]></AuthCode><InfoType><![CDATA[create_auth]]></InfoType>"
      "<TimeStamp>1403610513</TimeStamp><State><![CDATA[123]]></State></xml>");
  ASSERT_TRUE(created);
  EXPECT_EQ(created->info_type, "create_auth");
  EXPECT_EQ(created->auth_code, "AUTHCODE");

  const auto cancelled = read_suite_event(
      "<xml><SuiteId><![CDATA[ww4asffe99e54cxxxx]]></SuiteId>"
      "<InfoType><![CDATA[cancel_auth]]></InfoType><TimeStamp>1403610513</TimeStamp>"
      "<AuthCorpId><![CDATA[wxf8b4f85f3a794e77]]></AuthCorpId></xml>");
  ASSERT_TRUE(cancelled);
  EXPECT_EQ(cancelled->info_type, "cancel_auth");
  EXPECT_EQ(cancelled->auth_corp_id, "wxf8b4f85f3a794e77");

  EXPECT_FALSE(read_suite_event("<xml><SuiteId>ww</SuiteId></xml>")) << "no InfoType";
}

}  // namespace
}  // namespace token_broker
