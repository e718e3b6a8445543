// fake-wecom: the fake of WeCom as a process, for the demo and for scripts.
//
//   fake-wecom [--port N] [--ca-out FILE] [--port-file FILE] [--behaviour same|remaining|new]
//              [--lifetime SECONDS] [--ticket-lifetime SECONDS] [--ticket-quota N]
//              [--delay-ms N] [--api-delay-ms N] [--app CORPID:SECRET]... [--app-file FILE]
//              [--suite-file FILE]
//
// --suite-file registers a suite for the service-provider endpoints: its first line
// SUITE_ID:SUITE_SECRET:SUITE_TICKET (the ticket good for a day), then one
// CORPID:PERMANENT_CODE per authorized corp. --delay-ms delays get_corp_token answers too.
// --app-file reads one CORPID:SECRET per line (blank lines and #comments skipped), so a
// benchmark can register thousands of apps without putting secrets on the command line.
// GET /fake/stats answers {"gettoken_calls":N,"by_corpid":{"ww…":n,…},
// "max_concurrent_gettoken_calls":M,"tls_handshakes":H,"ticket_calls":T,
// "ticket_calls_by_kind":{"jsapi":j,"agent_config":a},"api_calls":A,
// "api_calls_by_path":{"/cgi-bin/user/get":n,…}}; H counts its own request's handshake.
// GET /fake/ticket_status?ticket=X&kind=jsapi|agent_config answers
// {"status":"valid|expired|invalid"}.
// --ticket-lifetime defaults to --lifetime; --ticket-quota (ticket calls per app, kind and hour)
// to WeCom's 100.
//
// Ordinary APIs check the access_token (41001, 40014, 42001) and answer WeCom's shapes:
// GET /cgi-bin/user/get?userid=U, POST /cgi-bin/message/send (a JSON object, else 47001),
// POST /cgi-bin/media/upload?type=file (multipart/form-data, field "media"; media_id = sha256 hex
// of the file), GET /cgi-bin/media/get?media_id=M (the file; M = generated-N: N bytes of a fixed
// pattern, N <= 64 MiB; else 40007); any other path is a 404.
// --api-delay-ms delays their answers. GET /fake/api_calls lists them (never the token):
// [{"method","path","query_keys","token_ok","token_app","content_type","body_sha256",
// "body_size","headers","errcode"}]; DELETE /fake/api_calls clears that list and the counts.
//
// Runs until SIGINT or SIGTERM, then exits 0. Bad arguments exit 2.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fake_wecom.hpp"
#include "parse_number.hpp"
#include "token_broker/core/asio.hpp"

namespace {

namespace fake = token_broker::fake;
using token_broker::parse_number;
namespace asio = token_broker::asio;

struct arguments {
  std::uint16_t port = 0;
  std::optional<std::filesystem::path> ca_out;
  std::optional<std::filesystem::path> port_file;
  fake::expiry_behaviour behaviour = fake::expiry_behaviour::same_token_keeps_expiry;
  std::chrono::seconds lifetime{7200};
  std::optional<std::chrono::seconds> ticket_lifetime;
  int ticket_calls_per_hour = 100;
  std::chrono::milliseconds answer_delay{0};
  std::chrono::milliseconds api_delay{0};
  std::vector<std::pair<std::string, std::string>> apps;  // corpid, secret
  struct suite_file {
    std::string id, secret, ticket;
    std::vector<std::pair<std::string, std::string>> corps;  // corpid, permanent code
  };
  std::optional<suite_file> suite;
};

constexpr const char* usage =
    "usage: fake-wecom [--port N] [--ca-out FILE] [--port-file FILE]\n"
    "                  [--behaviour same|remaining|new] [--lifetime SECONDS]\n"
    "                  [--ticket-lifetime SECONDS] [--ticket-quota N] [--delay-ms N]\n"
    "                  [--api-delay-ms N] [--app CORPID:SECRET]... [--app-file FILE]\n"
    "                  [--suite-file FILE]\n";

fake::expiry_behaviour parse_behaviour(const std::string& text) {
  if (text == "same") return fake::expiry_behaviour::same_token_keeps_expiry;
  if (text == "remaining") return fake::expiry_behaviour::same_token_seconds_left;
  if (text == "new") return fake::expiry_behaviour::new_token_each_call;
  throw std::invalid_argument("--behaviour: expected same, remaining or new");
}

std::pair<std::string, std::string> parse_app(const std::string& flag, const std::string& value) {
  // Corpids have no colon; a secret might, so split at the first one.
  const auto colon = value.find(':');
  if (colon == 0 || colon == std::string::npos || colon + 1 == value.size()) {
    throw std::invalid_argument(flag + ": expected CORPID:SECRET");
  }
  return {value.substr(0, colon), value.substr(colon + 1)};
}

void read_app_file(const std::string& path, arguments& parsed) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--app-file: cannot read " + path);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.front() == '#') continue;
    // The line number, never the line: it holds a secret.
    parsed.apps.push_back(parse_app("--app-file line " + std::to_string(number), line));
  }
}

// SUITE_ID:SECRET:TICKET, then CORPID:PERMANENT_CODE lines.
arguments::suite_file read_suite_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--suite-file: cannot read " + path);
  arguments::suite_file read;
  std::string line;
  if (!std::getline(in, line)) throw std::invalid_argument("--suite-file: empty");
  const auto first = line.find(':');
  const auto second = line.find(':', first + 1);
  if (first == std::string::npos || second == std::string::npos) {
    throw std::invalid_argument("--suite-file line 1: expected SUITE_ID:SECRET:TICKET");
  }
  read.id = line.substr(0, first);
  read.secret = line.substr(first + 1, second - first - 1);
  read.ticket = line.substr(second + 1);
  for (int number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    read.corps.push_back(parse_app("--suite-file line " + std::to_string(number), line));
  }
  return read;
}

arguments parse_arguments(int argc, char** argv) {
  arguments parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(flag + ": unknown flag or missing value");
    const std::string value = argv[++i];
    if (flag == "--port") {
      parsed.port = static_cast<std::uint16_t>(parse_number(flag, value, 0, 65535));
    } else if (flag == "--ca-out") {
      parsed.ca_out = value;
    } else if (flag == "--port-file") {
      parsed.port_file = value;
    } else if (flag == "--behaviour") {
      parsed.behaviour = parse_behaviour(value);
    } else if (flag == "--lifetime") {
      parsed.lifetime = std::chrono::seconds{parse_number(flag, value, 1, 30L * 24 * 3600)};
    } else if (flag == "--ticket-lifetime") {
      parsed.ticket_lifetime = std::chrono::seconds{parse_number(flag, value, 1, 30L * 24 * 3600)};
    } else if (flag == "--ticket-quota") {
      parsed.ticket_calls_per_hour = static_cast<int>(parse_number(flag, value, 0, 1000000));
    } else if (flag == "--delay-ms") {
      parsed.answer_delay = std::chrono::milliseconds{parse_number(flag, value, 0, 600000)};
    } else if (flag == "--api-delay-ms") {
      parsed.api_delay = std::chrono::milliseconds{parse_number(flag, value, 0, 600000)};
    } else if (flag == "--app") {
      parsed.apps.push_back(parse_app(flag, value));
    } else if (flag == "--app-file") {
      read_app_file(value, parsed);
    } else if (flag == "--suite-file") {
      parsed.suite = read_suite_file(value);
    } else {
      throw std::invalid_argument(flag + ": unknown flag");
    }
  }
  return parsed;
}

// Temp file and rename: a script polling for `path` never reads a half-written file.
void write_atomically(const std::filesystem::path& path, const std::string& content) {
  auto temporary = path;
  temporary += ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out) throw std::runtime_error("cannot write " + temporary.string());
  }
  std::filesystem::rename(temporary, path);
}

}  // namespace

int main(int argc, char** argv) {
  arguments parsed;
  try {
    parsed = parse_arguments(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "fake-wecom: " << error.what() << "\n" << usage;
    return 2;
  }

  try {
    // Set up before listening: a script that sees the port file may signal us at once.
    asio::io_context signals_io;
    asio::signal_set signals(signals_io, SIGINT, SIGTERM);
    signals.async_wait([](const token_broker::error_code&, int) {});

    auto tls = fake::generate_tls_material();
    // The CA first: once the port file appears, everything a client needs is in place.
    if (parsed.ca_out) write_atomically(*parsed.ca_out, tls.ca_pem);

    fake::fake_wecom server(fake::fake_options{
        .port = parsed.port,
        .behaviour = parsed.behaviour,
        .lifetime = parsed.lifetime,
        .answer_delay = parsed.answer_delay,
        .ticket_lifetime = parsed.ticket_lifetime,
        .ticket_calls_per_hour = parsed.ticket_calls_per_hour,
        .tls = std::move(tls),
    });
    for (const auto& [corpid, secret] : parsed.apps) server.add_app(corpid, secret);
    if (const auto& suite = parsed.suite) {
      server.service().add_suite(suite->id, suite->secret);
      server.service().accept_suite_ticket(suite->id, suite->ticket, std::chrono::hours{24});
      for (const auto& [corpid, code] : suite->corps)
        server.service().add_corp(suite->id, corpid, code);
    }
    server.set_api_delay(parsed.api_delay);

    if (parsed.port_file) write_atomically(*parsed.port_file, std::to_string(server.port()) + "\n");
    std::cout << "fake-wecom listening on " << server.base_url() << std::endl;

    signals_io.run();  // returns once a signal has arrived
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "fake-wecom: " << error.what() << "\n";
    return 1;
  }
}
