#include "token_broker/suites/third_party_set.hpp"

namespace token_broker {

std::string_view to_string(corp_origin origin) {
  return origin == corp_origin::config ? "config" : "callback";
}

const corp_entry* suite_entry::corp(std::string_view corpid) const {
  const auto found = corps.find(corpid);
  return found == corps.end() ? nullptr : &found->second;
}

const provider_entry* third_party_set::provider(std::string_view id) const {
  const auto found = providers.find(id);
  return found == providers.end() ? nullptr : &found->second;
}

const suite_entry* third_party_set::suite(std::string_view id) const {
  const auto found = suites.find(id);
  return found == suites.end() ? nullptr : &found->second;
}

const suite_entry* third_party_set::suite_with_suite_id(std::string_view suite_id) const {
  for (const auto& [id, entry] : suites) {
    if (entry.suite->suite_id == suite_id) return &entry;
  }
  return nullptr;
}

std::vector<credential_refresher*> third_party_set::credentials() const {
  std::vector<credential_refresher*> every;
  for (const auto& [id, provider] : providers) every.push_back(provider.token.get());
  for (const auto& [id, suite] : suites) {
    every.push_back(suite.token.get());
    for (const auto& [corpid, corp] : suite.corps) every.push_back(corp.token.get());
  }
  return every;
}

std::string corp_scope(std::string_view suite, std::string_view corpid) {
  return std::string(suite) + ":" + std::string(corpid);
}

std::string corp_binding(std::string_view suite, std::string_view corpid) {
  return "suite_corps:" + corp_scope(suite, corpid);
}

}  // namespace token_broker
