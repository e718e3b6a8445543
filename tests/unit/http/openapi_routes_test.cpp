// The published API description (docs/openapi.yaml) and the route table name the same
// endpoints: every method and path of the document is a route, and every route is documented.
// Only the document's `paths:` keys are read, line by line (no YAML library here; the lint,
// tests/openapi/lint.sh, is what proves the file valid).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "token_broker/http/request_handler.hpp"

namespace token_broker {
namespace {

// Every operation a path item can hold. A route of any method (http::verb::unknown) is
// documented as all of them: OpenAPI has no "any method".
constexpr std::array<std::string_view, 8> openapi_methods{"get",     "put",  "post",  "delete",
                                                          "options", "head", "patch", "trace"};

// A path item's keys that are not operations (`x-…` extensions are skipped too).
constexpr std::array<std::string_view, 4> path_item_fields{"summary", "description", "servers",
                                                           "parameters"};

// The catch-all routes: a last segment "{name*}" takes the rest of the path, slashes included,
// which OpenAPI's templates (one segment each) cannot say. The document writes each as a
// one-segment parameter marked `x-token-broker-catch-all`. A new catch-all route must be added
// here, with its documented path, on purpose.
const std::map<std::string_view, std::string_view> documented_catch_alls{
    {"/v1/apps/{app}/api/{path*}", "/v1/apps/{app}/api/{path}"},  // the gateway, SPEC §8
    {"/cgi-bin/{path*}", "/cgi-bin/{path}"},                      // the gateway's drop-in
};

// "GET /v1/apps/{app}/token", as both sides are compared and failures print.
using endpoint_set = std::set<std::string>;

std::string endpoint_name(std::string_view method, std::string_view path) {
  std::string name(method);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return name.append(" ").append(path);
}

template <std::size_t size>
bool is_one_of(std::string_view word, const std::array<std::string_view, size>& words) {
  return std::find(words.begin(), words.end(), word) != words.end();
}

struct document_read {
  endpoint_set endpoints;
  std::vector<std::string> problems;  // what the line-wise reading could not place
  std::string info_version;
};

std::size_t indent_of(std::string_view line) {
  return std::min(line.find_first_not_of(' '), line.size());
}

// The key of a `key:` or `key: value` line, its quotes removed; empty when the line has none.
std::string_view key_of(std::string_view line) {
  line.remove_prefix(indent_of(line));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
  const auto colon = line.find(": ");
  if (colon != std::string_view::npos) {
    line = line.substr(0, colon);
  } else if (line.ends_with(':')) {
    line.remove_suffix(1);
  } else {
    return {};
  }
  if (line.size() >= 2 && (line.front() == '\'' || line.front() == '"') &&
      line.back() == line.front()) {
    line = line.substr(1, line.size() - 2);
  }
  return line;
}

// The top-level `paths:` section: paths as keys indented by 2, their operations by 4.
// Deeper lines belong to an operation or a path item's fields; a line indented by 0 ends it.
document_read read_document(const std::string& file) {
  document_read read;
  std::ifstream in(file);
  if (!in) {
    read.problems.push_back("cannot open " + file);
    return read;
  }
  enum class section { other, info, paths } where = section::other;
  std::string current_path;
  std::set<std::string> paths_seen;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string_view text = line;
    const auto indent = indent_of(text);
    if (indent == text.size() || text[indent] == '#') continue;  // blank or a comment
    const auto at = "line " + std::to_string(number) + ": ";
    if (indent == 0) {
      where = text == "paths:" ? section::paths : text == "info:" ? section::info : section::other;
      continue;
    }
    if (where == section::info && indent == 2 && text.substr(2).starts_with("version:")) {
      auto version = text.substr(std::string_view("  version:").size());
      version.remove_prefix(std::min(version.find_first_not_of(' '), version.size()));
      read.info_version = std::string(version);
    }
    if (where != section::paths || indent > 4) continue;
    const auto key = key_of(text);
    if (indent == 2) {
      if (!key.starts_with('/')) {
        read.problems.push_back(at + "not a path key: " + line);
        current_path.clear();
        continue;
      }
      current_path = std::string(key);
      if (!paths_seen.insert(current_path).second) {
        read.problems.push_back(at + "path listed twice: " + current_path);
      }
      continue;
    }
    if (indent != 4 || text.substr(4).starts_with("- ")) continue;  // a sequence's item
    if (key.starts_with("x-") || is_one_of(key, path_item_fields)) continue;
    if (current_path.empty() || !is_one_of(key, openapi_methods)) {
      read.problems.push_back(at + "not an operation of a path: " + line);
      continue;
    }
    read.endpoints.insert(endpoint_name(key, current_path));
  }
  if (read.endpoints.empty()) read.problems.push_back("no operation under `paths:` in " + file);
  return read;
}

struct table_read {
  endpoint_set endpoints;
  std::vector<std::string> problems;
};

// The route table as the document must show it: each method, or all of them for a route of
// any method; each catch-all by its documented path.
table_read read_table() {
  table_read read;
  for (const auto& each : request_handler::endpoints()) {
    std::string_view path = each.shape.pattern;
    if (path.find('*') != std::string_view::npos) {
      const auto documented = documented_catch_alls.find(path);
      if (documented == documented_catch_alls.end()) {
        read.problems.push_back("a catch-all route with no documented path: " + std::string(path));
        continue;
      }
      path = documented->second;
    }
    if (each.shape.method == http::verb::unknown) {
      for (const auto method : openapi_methods) read.endpoints.insert(endpoint_name(method, path));
    } else {
      read.endpoints.insert(endpoint_name(http::to_string(each.shape.method), path));
    }
  }
  return read;
}

std::string listed(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& name : names) text.append("\n  ").append(name);
  return text;
}

std::vector<std::string> only_in(const endpoint_set& these, const endpoint_set& those) {
  std::vector<std::string> missing;
  std::set_difference(these.begin(), these.end(), those.begin(), those.end(),
                      std::back_inserter(missing));
  return missing;
}

TEST(openapi_routes, the_document_lists_exactly_the_route_table) {
  const auto document = read_document(TOKEN_BROKER_OPENAPI);
  const auto table = read_table();
  EXPECT_TRUE(document.problems.empty()) << TOKEN_BROKER_OPENAPI << listed(document.problems);
  EXPECT_TRUE(table.problems.empty()) << listed(table.problems);
  EXPECT_TRUE(only_in(table.endpoints, document.endpoints).empty())
      << "routes that docs/openapi.yaml does not document:"
      << listed(only_in(table.endpoints, document.endpoints));
  EXPECT_TRUE(only_in(document.endpoints, table.endpoints).empty())
      << "documented in docs/openapi.yaml, but no route:"
      << listed(only_in(document.endpoints, table.endpoints));
  // Every route of the table once, each catch-all as its eight methods.
  EXPECT_EQ(document.endpoints.size(),
            request_handler::endpoints().size() +
                documented_catch_alls.size() * (openapi_methods.size() - 1));
}

TEST(openapi_routes, the_document_is_of_this_version) {
  EXPECT_EQ(read_document(TOKEN_BROKER_OPENAPI).info_version, TOKEN_BROKER_VERSION)
      << "info.version of docs/openapi.yaml is the project's (CMakeLists.txt)";
}

// The reading itself: what it takes for an operation, what it refuses.
TEST(openapi_routes, reads_only_the_keys_of_paths) {
  const auto file = testing::TempDir() + "openapi_routes_test.yaml";
  {
    std::ofstream out(file);
    out << "openapi: 3.1.0\n"
           "info:\n"
           "  title: t\n"
           "  version: 9.9.9\n"
           "paths:\n"
           "  # a comment\n"
           "  /v1/apps/{app}/token:\n"
           "    parameters:\n"
           "      - $ref: '#/components/parameters/App'\n"
           "    x-note: ignored\n"
           "    get:\n"
           "      description: |\n"
           "        post:\n"
           "    post:\n"
           "  '/healthz':\n"
           "    get:\n"
           "    fetch:\n"
           "components:\n"
           "  schemas:\n"
           "    put:\n";
  }
  const auto read = read_document(file);
  EXPECT_EQ(read.endpoints, (endpoint_set{"GET /healthz", "GET /v1/apps/{app}/token",
                                          "POST /v1/apps/{app}/token"}));
  ASSERT_EQ(read.problems.size(), 1u) << listed(read.problems);
  EXPECT_NE(read.problems[0].find("fetch"), std::string::npos) << read.problems[0];
  EXPECT_EQ(read.info_version, "9.9.9");
}

}  // namespace
}  // namespace token_broker
