// Fuzzes HTTP request handling: the input is what a client sends on one connection. It is
// read as serve_requests (http_server.cpp) reads it: a parser set up by
// configure_request_parser (header and body caps, eager), a first read of at most 1024
// bytes, pipelined requests one after another while bytes remain and the connection is kept
// alive. Each request is answered by request_handler::answer_or_wait, once with clients
// configured and once on an open API; a request that cannot be read, by answer_unreadable.
//
// The broker behind the handlers is real and never touches the network: a memory store
// preloaded with tokens for "hr" and "crm" and hr's jsapi_ticket, which their refreshers adopt
// while the io_context runs during setup; "cold" has no token (its requests wait, which is not
// run here). After setup the io_context never runs again.
//
// Beyond crashes and sanitizer reports, a finding is an answer that breaks SPEC §4: a status
// outside the API's set (a 500 means an exception escaped), a JSON body that does not parse,
// a wrong Content-Length, an app secret or client key in any answer, a token or ticket in an
// answer that is not that app's token or ticket answer, or the caller's corpsecret echoed back.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "token_broker/broker.hpp"
#include "token_broker/config/config.hpp"
#include "token_broker/core/secret_digest.hpp"
#include "token_broker/http/http_server.hpp"
#include "token_broker/http/request_handler.hpp"

namespace {

using namespace token_broker;

struct fuzz_app {
  std::string id, corpid, secret, token;  // token: "" for none
  std::string jsapi_ticket;               // "" for none configured
};

const std::vector<fuzz_app> fuzz_apps = {
    {"hr", "wwfuzzcorp0001", "hr-secret-Xq7v2LpR9s", "HR-TOKEN-6f1c2a9b5e3d",
     "HR-JSAPI-TICKET-4a7d9c2e8b1f"},
    {"crm", "wwfuzzcorp0001", "crm-secret-Mn4Kd8Tz1w", "CRM-TOKEN-0d8e4b7a1c9f", ""},
    {"cold", "wwfuzzcorp0002", "cold-secret-Pb6Hy3Jc5e", "", ""},
};
// Bearer keys: billing may read hr, admin every app.
const std::string billing_key = "billing-key-Rt5Wq1Zx8Vb3";
const std::string admin_key = "admin-key-Gh2Ns7Lm4Yc6";

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_http_request: %s\n", what.c_str());
  std::abort();
}

std::string sha256_hex(std::string_view text) {
  std::string hex;
  for (const unsigned char byte : sha256(text)) {
    constexpr std::string_view digits = "0123456789abcdef";
    hex += digits[byte >> 4];
    hex += digits[byte & 0xf];
  }
  return hex;
}

config fuzz_config() {
  nlohmann::json apps = nlohmann::json::object();
  for (const auto& app : fuzz_apps) {
    apps[app.id] = {{"corpid", app.corpid}, {"secret", app.secret}};
    if (!app.jsapi_ticket.empty()) apps[app.id]["tickets"] = {"jsapi"};
  }
  const nlohmann::json document = {
      {"listen", "127.0.0.1:8080"},
      {"threads", 1},
      // Never called: only "cold" could, and the io_context no longer runs by then. An IP
      // literal, so that even its start needs no name lookup.
      {"upstream", {{"base_url", "https://127.0.0.1:9"}, {"timeout_ms", 100}}},
      {"apps", apps},
      {"clients",
       {{"billing", {{"key_sha256", sha256_hex(billing_key)}, {"apps", {"hr"}}}},
        {"admin", {{"key_sha256", sha256_hex(admin_key)}, {"apps", {"*"}}}}}},
  };
  return parse_config(document.dump());
}

// Built once and never destroyed: the refreshers' work stays queued on an io_context that
// no longer runs, and tearing that down at exit would only add noise.
struct fixture {
  asio::io_context io;
  config settings = fuzz_config();
  std::unique_ptr<broker> apps;
  std::unique_ptr<request_handler> guarded;
  std::unique_ptr<request_handler> open;
  server_limits limits;

  fixture() {
    auto store = std::make_unique<memory_token_store>();
    // save() takes its arguments by reference: they must outlive the run below.
    std::vector<std::pair<credential_id, stored_token>> values;
    values.reserve(2 * fuzz_apps.size());
    const auto store_value = [&](credential_kind kind, const fuzz_app& app, std::string value) {
      if (value.empty()) return;
      values.push_back({{kind, app.id}, {std::move(value), clock::now() + std::chrono::hours{24}}});
      asio::co_spawn(io, store->save(values.back().first, values.back().second), asio::detached);
    };
    for (const auto& app : fuzz_apps) {
      store_value(credential_kind::access_token, app, app.token);
      store_value(credential_kind::jsapi_ticket, app, app.jsapi_ticket);
    }
    io.run();
    io.restart();
    apps = std::make_unique<broker>(io.get_executor(), settings, std::move(store));
    apps->start();
    // Until the stored tokens are adopted and published.
    for (int turn = 0; turn < 10000 && !tokens_published(); ++turn) {
      io.run_one_for(std::chrono::milliseconds{10});
    }
    if (!tokens_published()) finding("setup: the stored tokens and tickets were not adopted");
    guarded = std::make_unique<request_handler>(*apps, settings.clients);
    open = std::make_unique<request_handler>(*apps, std::vector<client_config>{});
  }

  bool tokens_published() const {
    const auto set = apps->apps();
    const auto servable = [](const credential_refresher* credential) {
      return credential && credential->view()->servable(clock::now());
    };
    for (const auto& app : fuzz_apps) {
      const auto* entry = set->entry(app.id);
      if (!app.token.empty() && !servable(entry->token.get())) return false;
      if (!app.jsapi_ticket.empty() && !servable(entry->jsapi_ticket.get())) return false;
    }
    return true;
  }
};

fixture* state = nullptr;

// An answer as the client would read it.
struct seen_answer {
  unsigned status = 0;
  std::string head;  // status line and fields
  std::string body;
  bool json = false;
};

seen_answer look_at(const answer& outgoing) {
  seen_answer seen;
  seen.status = status_of(outgoing);
  if (const auto* prepared = std::get_if<token_answer>(&outgoing)) {
    const token_answer_bytes bytes(*prepared, /*keep_alive=*/true);
    std::string wire;
    for (const auto& buffer : bytes.buffers()) {
      wire.append(static_cast<const char*>(buffer.data()), buffer.size());
    }
    const auto end_of_head = wire.find("\r\n\r\n");
    if (end_of_head == std::string::npos) finding("a token answer without an end of head");
    seen.head = wire.substr(0, end_of_head + 4);
    seen.body = wire.substr(end_of_head + 4);
    if (seen.head.find("\r\nContent-Length: " + std::to_string(seen.body.size()) + "\r\n") ==
        std::string::npos) {
      finding("a token answer's Content-Length is not its body's");
    }
    seen.json = true;
    return seen;
  }
  if (const auto* formatted = std::get_if<formatted_response>(&outgoing)) {
    seen.head = formatted->head;
    seen.body = formatted->body;
    seen.json = seen.head.find("\r\nContent-Type: application/json\r\n") != std::string::npos;
    return seen;
  }
  const auto& other = std::get<response>(outgoing);
  for (const auto& field : other.base()) {
    seen.head += std::string(field.name_string()) + ": " + std::string(field.value()) + "\r\n";
  }
  seen.body = other.body();
  seen.json = other[http::field::content_type] == "application/json";
  if (other.has_content_length() &&
      other[http::field::content_length] != std::to_string(seen.body.size())) {
    finding("a Content-Length that is not the body's");
  }
  return seen;
}

bool contains(const seen_answer& seen, std::string_view text) {
  return seen.head.find(text) != std::string::npos || seen.body.find(text) != std::string::npos;
}

// `value` in the answer, and not because the request carried it: an answer may echo what the
// caller sent (a signature's url and noncestr), which is no leak.
bool leaked(const seen_answer& seen, const request* incoming, std::string_view value) {
  return contains(seen, value) &&
         (!incoming || (incoming->target().find(value) == std::string_view::npos &&
                        incoming->body().find(value) == std::string::npos));
}

// What every answer must be, whatever was asked (`incoming`: null for an unreadable one).
void check_any(const seen_answer& seen, const request* incoming) {
  static constexpr unsigned api_statuses[] = {200, 400, 401, 403, 404, 405, 413, 431, 503};
  if (std::find(std::begin(api_statuses), std::end(api_statuses), seen.status) ==
      std::end(api_statuses)) {
    finding("status " + std::to_string(seen.status) + ": " + seen.body);
  }
  if (seen.json && !nlohmann::json::accept(seen.body)) finding("a JSON body that is not JSON");
  for (const auto& app : fuzz_apps) {
    if (leaked(seen, incoming, app.secret)) finding("app " + app.id + "'s secret in an answer");
  }
  if (leaked(seen, incoming, billing_key) || leaked(seen, incoming, admin_key)) {
    finding("a client key in an answer");
  }
}

// What a request asked for, as the route table reads it.
struct asked_for {
  std::string_view label;  // the endpoint's metric label; empty for no endpoint
  std::string app;
  std::optional<std::string> corpid, corpsecret, access_token;
};

asked_for read_request(const request& incoming) {
  const auto matched =
      match_route(request_handler::endpoints(), incoming.method(), incoming.target());
  asked_for asked;
  if (matched.outcome != route_match::result::matched) return asked;
  asked.label = request_handler::endpoints()[matched.index].shape.label;
  asked.app = matched.parameters["app"];
  if (const auto query = query_parameters::parse(matched.query)) {
    if (const auto* corpid = query->find("corpid")) asked.corpid = *corpid;
    if (const auto* corpsecret = query->find("corpsecret")) asked.corpsecret = *corpsecret;
    if (const auto* token = query->find("access_token")) asked.access_token = *token;
  }
  return asked;
}

// The token an answer may hold: the one its request asked for, when it was answered 200.
const fuzz_app* entitled_to_token(const asked_for& call, const seen_answer& seen) {
  if (seen.status != 200) return nullptr;
  for (const auto& app : fuzz_apps) {
    if (call.label == "token" && call.app == app.id) return &app;
    if (call.label == "gettoken" && call.corpid == app.corpid && call.corpsecret == app.secret) {
      return &app;
    }
  }
  return nullptr;
}

// The same for a jsapi_ticket: asked for by app, or by a token of the app (the drop-in).
const fuzz_app* entitled_to_ticket(const asked_for& call, const seen_answer& seen) {
  if (seen.status != 200) return nullptr;
  for (const auto& app : fuzz_apps) {
    if (call.label == "jsapi_ticket" && call.app == app.id) return &app;
    if (call.label == "get_jsapi_ticket" && call.access_token == app.token) return &app;
  }
  return nullptr;
}

void check_answer(const asked_for& call, const request& incoming, const answer& outgoing) {
  const auto seen = look_at(outgoing);
  check_any(seen, &incoming);
  const auto* token_owner = entitled_to_token(call, seen);
  const auto* ticket_owner = entitled_to_ticket(call, seen);
  for (const auto& app : fuzz_apps) {
    if (!app.token.empty() && &app != token_owner && leaked(seen, &incoming, app.token)) {
      finding("app " + app.id + "'s token in an answer for something else");
    }
    if (!app.jsapi_ticket.empty() && &app != ticket_owner &&
        leaked(seen, &incoming, app.jsapi_ticket)) {
      finding("app " + app.id + "'s ticket in an answer for something else");
    }
  }
  // Short values also occur in answers by chance ("ok"); a longer one is an echo.
  constexpr std::size_t echo_length = 8;
  if (call.corpsecret && call.corpsecret->size() >= echo_length &&
      seen.body.find(*call.corpsecret) != std::string::npos) {
    finding("the request's corpsecret echoed in the answer");
  }
}

void answer_request(const request& incoming) {
  const auto call = read_request(incoming);
  for (auto* handler : {state->guarded.get(), state->open.get()}) {
    auto asked = incoming;  // a handler may take a gateway call's body
    auto decided = handler->answer_or_wait(asked, token_broker::peer_identity{});
    // A waiting request's answer needs the io_context to run: not fuzzed here.
    if (const auto* outgoing = std::get_if<answer>(&decided)) {
      check_answer(call, incoming, *outgoing);
    }
  }
}

void refuse_unreadable(const error_code& error) {
  for (auto* handler : {state->guarded.get(), state->open.get()}) {
    if (const auto refusal = handler->answer_unreadable(error)) {
      const auto seen = look_at(answer(*refusal));
      check_any(seen, nullptr);
      if (seen.status != 400 && seen.status != 413 && seen.status != 431) {
        finding("an unreadable request answered " + std::to_string(seen.status));
      }
    }
  }
}

// The client's bytes as the server's socket delivers them into its buffer.
class connection_input {
 public:
  explicit connection_input(std::string_view sent) : unread_(sent) {}

  bool ended() const { return unread_.empty(); }
  // Like async_read_some into buffer.prepare(at_most): false at the end of the input.
  bool read(beast::flat_buffer& buffer, std::size_t at_most) {
    const auto room = buffer.max_size() - buffer.size();
    const auto count = std::min({at_most, room, unread_.size()});
    if (count == 0) return false;
    const auto target = buffer.prepare(count);
    std::memcpy(target.data(), unread_.data(), count);
    buffer.commit(count);
    unread_.remove_prefix(count);
    return true;
  }

 private:
  std::string_view unread_;
};

// The rest of a request, as http::async_read reads it: parse what is buffered, read more
// while the parser needs it, and at the end of the input tell the parser so.
// Reads until the parser has the head (`head_only`, as http::async_read_header) or the whole
// request (as http::async_read).
error_code read_rest(connection_input& input, beast::flat_buffer& buffer, request_parser& parser,
                     bool head_only = false) {
  constexpr std::size_t read_size = 65536;  // Beast's read size for a dynamic buffer
  error_code error;
  const auto enough = [&] { return head_only ? parser.is_header_done() : parser.is_done(); };
  while (!enough()) {
    if (buffer.size() > 0) {
      buffer.consume(parser.put(buffer.data(), error));
      if (error && error != http::error::need_more) return error;
      error = {};
      if (enough()) break;
    }
    if (buffer.size() == buffer.max_size()) return http::error::buffer_overflow;
    if (!input.read(buffer, read_size)) {
      if (!parser.got_some()) return http::error::end_of_stream;
      parser.put_eof(error);
      return error;
    }
  }
  return error;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  spdlog::set_level(spdlog::level::off);
  state = new fixture;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  connection_input input({reinterpret_cast<const char*>(data), size});
  const auto& limits = state->limits;
  beast::flat_buffer buffer(limits.header_limit + limits.body_limit + 4096);  // as the server's
  for (;;) {
    if (buffer.size() == 0 && !input.read(buffer, 1024)) break;  // the client closed

    request_parser parser;
    configure_request_parser(parser, limits);
    error_code error;
    buffer.consume(parser.put(buffer.data(), error));
    if (error == http::error::need_more || (!error && !parser.is_header_done())) {
      error = read_rest(input, buffer, parser, /*head_only=*/true);
    }
    if (!error && !parser.is_done()) {  // the body, capped by the route as the server does
      const auto allowed = state->guarded->body_limit(parser.get(), limits.body_limit);
      if (parser.content_length().value_or(0) > allowed) {
        error = http::error::body_limit;
      } else {
        parser.body_limit(allowed);
        parser.eager(true);
        if (buffer.size() > 0) buffer.consume(parser.put(buffer.data(), error));
        if (error == http::error::need_more || (!error && !parser.is_done())) {
          error = read_rest(input, buffer, parser);
        }
      }
    }
    if (error) {
      refuse_unreadable(error);
      break;
    }
    answer_request(parser.get());
    if (!parser.get().keep_alive()) break;
  }
  return 0;
}
