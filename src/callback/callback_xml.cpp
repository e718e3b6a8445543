#include "token_broker/callback/callback_xml.hpp"

#include <charconv>
#include <pugixml.hpp>

namespace token_broker {
namespace {

// Parsed only within the cap, and only without a DOCTYPE: pugixml keeps a DOCTYPE as a node
// (parse_doctype) so that it can be seen and refused; it never expands entities of its own.
bool parse(pugi::xml_document& document, std::string_view text) {
  if (text.size() > max_callback_xml) return false;
  const auto result = document.load_buffer(
      text.data(), text.size(), pugi::parse_default | pugi::parse_doctype, pugi::encoding_utf8);
  if (!result) return false;
  for (const auto& node : document.children()) {
    if (node.type() == pugi::node_doctype) return false;
  }
  return true;
}

std::string trimmed(std::string_view text) {
  constexpr std::string_view space = " \t\r\n";
  const auto first = text.find_first_not_of(space);
  if (first == std::string_view::npos) return {};
  return std::string(text.substr(first, text.find_last_not_of(space) - first + 1));
}

// A child's text: its character data and CDATA sections joined, trimmed.
std::string text_of(const pugi::xml_node& parent, const char* name) {
  std::string joined;
  for (const auto& part : parent.child(name).children()) {
    if (part.type() == pugi::node_pcdata || part.type() == pugi::node_cdata) {
      joined += part.value();
    }
  }
  return trimmed(joined);
}

}  // namespace

std::optional<std::string> encrypted_text_of(std::string_view envelope) {
  pugi::xml_document document;
  if (!parse(document, envelope)) return std::nullopt;
  auto encrypted = text_of(document.child("xml"), "Encrypt");
  if (encrypted.empty()) return std::nullopt;
  return encrypted;
}

std::optional<suite_event> read_suite_event(std::string_view event) {
  pugi::xml_document document;
  if (!parse(document, event)) return std::nullopt;
  const auto root = document.child("xml");
  suite_event read;
  read.info_type = text_of(root, "InfoType");
  if (read.info_type.empty()) return std::nullopt;
  read.suite_id = text_of(root, "SuiteId");
  read.suite_ticket = text_of(root, "SuiteTicket");
  read.auth_code = text_of(root, "AuthCode");
  read.auth_corp_id = text_of(root, "AuthCorpId");
  const auto timestamp = text_of(root, "TimeStamp");
  std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), read.timestamp);
  return read;
}

}  // namespace token_broker
