// The two XML documents of a WeCom callback (SPEC §7): the envelope POSTed to the callback URL,
// whose <Encrypt> holds the sealed event, and the event once opened (a suite's InfoType and its
// fields). Read with pugixml, never more than max_callback_xml bytes, and a document that
// declares a DOCTYPE is refused: WeCom never sends one, and entities are how XML bombs work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace token_broker {

constexpr std::size_t max_callback_xml = 16 * 1024;

// The <Encrypt> text of `<xml><ToUserName/><Encrypt/><AgentID/></xml>`, or nullopt when the
// document is not XML, too large, declares a DOCTYPE or has no non-empty <Encrypt>.
std::optional<std::string> encrypted_text_of(std::string_view envelope);

// A suite's event (服务商 callbacks): which InfoType, and the fields the broker acts on; a field
// the event does not carry is empty. Texts are trimmed: WeCom's own samples put a space
// before some of their CDATA sections.
struct suite_event {
  std::string info_type;       // suite_ticket, create_auth, change_auth, cancel_auth, …
  std::string suite_id;        // SuiteId
  std::string suite_ticket;    // SuiteTicket (suite_ticket)
  std::string auth_code;       // AuthCode (create_auth, reset_permanent_code)
  std::string auth_corp_id;    // AuthCorpId (change_auth, cancel_auth)
  std::int64_t timestamp = 0;  // TimeStamp, WeCom's clock: logged, never trusted for expiry
};

// nullopt under the same rules as encrypted_text_of, or without an InfoType.
std::optional<suite_event> read_suite_event(std::string_view event);

}  // namespace token_broker
