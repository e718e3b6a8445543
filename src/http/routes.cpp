#include "token_broker/http/routes.hpp"

namespace token_broker {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;  // needs two hex digits
    const int high = hex_value(text[i + 1]);
    const int low = hex_value(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

std::string_view path_parameters::operator[](std::string_view name) const {
  for (std::size_t i = 0; i < count_; ++i) {
    if (items_[i].first == name) return items_[i].second;
  }
  return {};
}

bool path_parameters::add(std::string_view name, std::string_view value) {
  if (count_ == capacity) return false;
  items_[count_++] = {name, value};
  return true;
}

bool match_pattern(std::string_view pattern, std::string_view path, path_parameters& parameters) {
  parameters.clear();
  while (!pattern.empty()) {
    const auto open = pattern.find('{');
    const auto literal = pattern.substr(0, open);
    if (!path.starts_with(literal)) return false;
    path.remove_prefix(literal.size());
    if (open == std::string_view::npos) return path.empty();

    const auto close = pattern.find('}', open);
    auto name = pattern.substr(open + 1, close - open - 1);
    pattern.remove_prefix(close + 1);
    const bool rest = name.ends_with('*');
    if (rest) name.remove_suffix(1);
    const auto end = rest ? path.size() : std::min(path.find('/'), path.size());
    if (end == 0 || !parameters.add(name, path.substr(0, end))) return false;
    path.remove_prefix(end);
  }
  return path.empty();
}

std::optional<query_parameters> query_parameters::parse(std::string_view query) {
  query_parameters parsed;
  while (!query.empty()) {
    const auto end = query.find('&');
    const auto pair = query.substr(0, end);
    query = end == std::string_view::npos ? std::string_view{} : query.substr(end + 1);
    const auto equals = pair.find('=');
    auto key = percent_decode(pair.substr(0, equals));
    auto value = percent_decode(equals == std::string_view::npos ? "" : pair.substr(equals + 1));
    if (!key || !value) return std::nullopt;
    parsed.items_.emplace_back(std::move(*key), std::move(*value));
  }
  return parsed;
}

const std::string* query_parameters::find(std::string_view name) const {
  for (const auto& [key, value] : items_) {
    if (key == name) return &value;
  }
  return nullptr;
}

}  // namespace token_broker
