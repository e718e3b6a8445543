#include "token_broker/ops/status_command.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <ostream>
#include <regex>
#include <set>
#include <stdexcept>
#include <vector>

#include "token_broker/core/asio.hpp"

namespace token_broker {
namespace {

// A listing of a hundred thousand apps fits; anything larger is not this broker talking.
constexpr std::uint64_t max_answer_bytes = 256 * 1024 * 1024;
// errmsg is WeCom's (or a local reason); long ones are cut so a row stays on one line.
constexpr std::size_t max_reason_length = 72;

// Expected failures (unreachable, refused, not a broker) end the command with exit 2.
class status_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct broker_url {
  enum class scheme { http, https, unix_socket } kind = scheme::http;
  std::string host;  // without IPv6 brackets
  std::string port;
  std::string socket_path;
  std::string host_header;  // host[:port] as the Host field wants it
};

std::optional<broker_url> parse_url(std::string_view text) {
  broker_url url;
  if (text.starts_with("unix:")) {
    auto path = text.substr(5);
    if (path.starts_with("//")) path.remove_prefix(2);  // unix:///run/x.sock
    if (!path.starts_with('/')) return std::nullopt;
    url.kind = broker_url::scheme::unix_socket;
    url.socket_path = std::string(path);
    url.host_header = "localhost";
    return url;
  }
  std::string_view rest;
  if (text.starts_with("http://")) {
    rest = text.substr(7);
    url.port = "80";
  } else if (text.starts_with("https://")) {
    url.kind = broker_url::scheme::https;
    rest = text.substr(8);
    url.port = "443";
  } else {
    return std::nullopt;
  }
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.empty() || rest.find('/') != std::string_view::npos ||
      rest.find('@') != std::string_view::npos) {
    return std::nullopt;
  }
  url.host_header = std::string(rest);
  if (rest.starts_with('[')) {  // [::1]:8080
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    url.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (!rest.empty() && !rest.starts_with(':')) return std::nullopt;
  } else {
    const auto colon = rest.find(':');
    url.host = std::string(rest.substr(0, colon));
    rest.remove_prefix(colon == std::string_view::npos ? rest.size() : colon);
  }
  if (rest.starts_with(':')) {
    url.port = std::string(rest.substr(1));
    if (url.port.empty() || !std::all_of(url.port.begin(), url.port.end(),
                                         [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
  }
  if (url.host.empty()) return std::nullopt;
  return url;
}

struct reply {
  unsigned status = 0;
  std::string body;
};

using request_type = http::request<http::empty_body>;

// One request and its answer on a connected stream; `timed` is the layer holding the deadline.
template <class Stream, class Timed>
asio::awaitable<reply> exchange(Stream& stream, Timed& timed, const request_type& request,
                                std::chrono::milliseconds timeout) {
  timed.expires_after(timeout);
  co_await http::async_write(stream, request, asio::use_awaitable);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(max_answer_bytes);
  timed.expires_after(timeout);
  co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
  co_return reply{parser.get().result_int(), std::move(parser.get().body())};
}

class status_client {
 public:
  status_client(broker_url url, const status_options& options, std::optional<std::string> key)
      : url_(std::move(url)), timeout_(options.timeout), key_(std::move(key)) {
    if (url_.kind != broker_url::scheme::https) return;
    tls_.emplace(asio::ssl::context::tls_client);
    tls_->set_verify_mode(asio::ssl::verify_peer);
    try {
      if (options.ca_file) {
        tls_->load_verify_file(*options.ca_file);
      } else {
        tls_->set_default_verify_paths();
      }
      if (options.cert_file) {
        tls_->use_certificate_chain_file(*options.cert_file);
        tls_->use_private_key_file(*options.cert_key_file, asio::ssl::context::pem);
      }
    } catch (const boost::system::system_error& error) {
      throw status_error(fmt::format("cannot load the TLS files: {}", error.code().message()));
    }
  }

  // Throws status_error when there is no HTTP answer.
  reply get(const std::string& target) {
    asio::io_context io;
    std::optional<reply> answer;
    std::exception_ptr failure;
    asio::co_spawn(io, fetch(target), [&](std::exception_ptr error, reply got) {
      if (error) {
        failure = error;
      } else {
        answer = std::move(got);
      }
    });
    io.run();
    try {
      if (failure) std::rethrow_exception(failure);
    } catch (const boost::system::system_error& error) {
      const auto why = error.code() == beast::error::timeout
                           ? fmt::format("no answer within {} ms", timeout_.count())
                           : error.code().message();
      throw status_error(fmt::format("GET {}: {}", target, why));
    }
    return std::move(*answer);
  }

 private:
  asio::awaitable<reply> fetch(std::string target) {
    const auto executor = co_await asio::this_coro::executor;
    request_type request{http::verb::get, target, 11};
    request.set(http::field::host, url_.host_header);
    request.set(http::field::user_agent,
                fmt::format("token-broker-status/{}", TOKEN_BROKER_VERSION));
    request.set(http::field::connection, "close");
    if (key_) request.set(http::field::authorization, fmt::format("Bearer {}", *key_));

    if (url_.kind == broker_url::scheme::unix_socket) {
      beast::basic_stream<asio::local::stream_protocol> stream(executor);
      stream.expires_after(timeout_);
      const asio::local::stream_protocol::endpoint socket(url_.socket_path);
      co_await stream.async_connect(socket, asio::use_awaitable);
      auto exchanged = exchange(stream, stream, request, timeout_);
      co_return co_await std::move(exchanged);
    }

    asio::ip::tcp::resolver resolver(executor);
    const auto endpoints =
        co_await resolver.async_resolve(url_.host, url_.port, asio::use_awaitable);
    beast::tcp_stream tcp(executor);
    tcp.expires_after(timeout_);
    co_await tcp.async_connect(endpoints, asio::use_awaitable);
    if (url_.kind == broker_url::scheme::http) {
      auto exchanged = exchange(tcp, tcp, request, timeout_);
      co_return co_await std::move(exchanged);
    }

    beast::ssl_stream<beast::tcp_stream> tls(std::move(tcp), *tls_);
    // SNI, so a listener serving several names picks the right certificate (not for an IP).
    error_code not_an_address;
    static_cast<void>(asio::ip::make_address(url_.host, not_an_address));
    if (not_an_address && !SSL_set_tlsext_host_name(tls.native_handle(), url_.host.c_str())) {
      throw status_error("cannot set the TLS server name");
    }
    // The certificate must name the host (or IP) the URL names, not just chain to a trusted CA.
    tls.set_verify_callback(asio::ssl::host_name_verification(url_.host));
    beast::get_lowest_layer(tls).expires_after(timeout_);
    co_await tls.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    auto exchanged = exchange(tls, beast::get_lowest_layer(tls), request, timeout_);
    auto answer = co_await std::move(exchanged);
    // The answer is complete (Content-Length); a peer that closes without close_notify
    // (stream_truncated) or is slow to answer ours changes nothing, so errors are ignored.
    beast::get_lowest_layer(tls).expires_after(timeout_);
    co_await tls.async_shutdown(asio::as_tuple(asio::use_awaitable));
    co_return answer;
  }

  broker_url url_;
  std::chrono::milliseconds timeout_;
  std::optional<std::string> key_;
  std::optional<asio::ssl::context> tls_;
};

// The client key, from --key-file or the environment; empty when neither gives one.
std::optional<std::string> read_client_key(const status_options& options, std::string& source) {
  std::string key;
  if (options.client_key_file) {
    std::ifstream file(*options.client_key_file, std::ios::binary);
    if (!file)
      throw status_error(fmt::format("cannot read --key-file {}", *options.client_key_file));
    key.assign(std::istreambuf_iterator<char>(file), {});
    source = fmt::format("--key-file {}", *options.client_key_file);
  } else if (const char* from_environment = std::getenv(status_key_variable)) {
    key = from_environment;
    source = status_key_variable;
  }
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  if (key.empty()) {
    if (options.client_key_file) throw status_error("--key-file holds no key");
    source = "none";
    return std::nullopt;
  }
  return key;
}

std::string metric_version(const std::string& metrics) {
  static const std::regex build_info(R"re(token_broker_build_info\{version="([^"]*)"\})re");
  std::smatch found;
  if (std::regex_search(metrics, found, build_info)) return found[1].str();
  return "unknown";
}

// The suites this broker runs, by their suite_token series on /metrics (no listing of suites
// exists); each suite's corps are then read through the client-authenticated listing.
std::vector<std::string> metric_suites(const std::string& metrics) {
  static const std::regex suite_series(
      R"re(token_broker_token_expiry_timestamp_seconds\{app="([^"]*)",kind="suite_token"\})re");
  std::set<std::string> suites;
  for (std::sregex_iterator each(metrics.begin(), metrics.end(), suite_series), end; each != end;
       ++each) {
    suites.insert((*each)[1].str());
  }
  return {suites.begin(), suites.end()};
}

struct row {
  std::string credential;
  std::string kind;
  std::string state;
  std::string expires_in;
  std::string last_refresh;
};

std::string shorten(std::string text) {
  if (text.size() > max_reason_length) text = text.substr(0, max_reason_length - 3) + "...";
  return text;
}

std::string describe_last_refresh(const nlohmann::json& described) {
  const auto last = described.find("last_refresh");
  if (last == described.end()) return "?";  // a broker older than this field
  if (!last->is_object()) return "-";       // none by this process yet
  const auto outcome = last->value("outcome", std::string("?"));
  const auto ago = last->value("seconds_ago", std::int64_t{-1});
  auto text = ago >= 0 ? fmt::format("{} {} ago", outcome, human_duration(ago)) : outcome;
  if (outcome == "failed") {
    const auto errcode = last->value("errcode", 0);
    const auto errmsg = last->value("errmsg", std::string());
    // errcode -1: no WeCom answer at all (network, TLS, HTTP); errmsg says which.
    text += errcode == -1 ? fmt::format(": {}", shorten(errmsg))
                          : fmt::format(": errcode {} {}", errcode, shorten(errmsg));
  }
  return text;
}

row make_row(std::string credential, std::string kind, const nlohmann::json& described) {
  row made{std::move(credential), std::move(kind), described.value("state", std::string("?")), "",
           describe_last_refresh(described)};
  const auto expires_in = described.find("expires_in");
  if (expires_in == described.end()) {
    made.expires_in = "?";  // a broker older than this field: never guessed from our clock
  } else if (expires_in->is_number_integer()) {
    made.expires_in = human_duration(expires_in->get<std::int64_t>());
  } else {
    made.expires_in = "-";
  }
  return made;
}

void print_table(std::ostream& out, const std::vector<row>& rows) {
  const row heading{"CREDENTIAL", "KIND", "STATE", "EXPIRES IN", "LAST REFRESH"};
  std::array<std::size_t, 4> widths = {heading.credential.size(), heading.kind.size(),
                                       heading.state.size(), heading.expires_in.size()};
  for (const auto& each : rows) {
    widths[0] = std::max(widths[0], each.credential.size());
    widths[1] = std::max(widths[1], each.kind.size());
    widths[2] = std::max(widths[2], each.state.size());
    widths[3] = std::max(widths[3], each.expires_in.size());
  }
  const auto print = [&](const row& each) {
    out << fmt::format("{:<{}}  {:<{}}  {:<{}}  {:<{}}  {}\n", each.credential, widths[0],
                       each.kind, widths[1], each.state, widths[2], each.expires_in, widths[3],
                       each.last_refresh);
  };
  print(heading);
  for (const auto& each : rows) print(each);
}

nlohmann::json parse_listing(const reply& answer, const std::string& target) {
  auto parsed = nlohmann::json::parse(answer.body, nullptr, false);
  if (!parsed.is_array()) throw status_error(fmt::format("GET {}: not a JSON listing", target));
  return parsed;
}

std::string refusal(const reply& answer) {
  auto parsed = nlohmann::json::parse(answer.body, nullptr, false);
  if (parsed.is_object() && parsed.contains("message") && parsed["message"].is_string()) {
    return parsed["message"].get<std::string>();
  }
  return "refused";
}

}  // namespace

std::string human_duration(std::int64_t seconds) {
  if (seconds < 0) seconds = 0;
  const auto days = seconds / 86400;
  const auto hours = seconds % 86400 / 3600;
  const auto minutes = seconds % 3600 / 60;
  const auto rest = seconds % 60;
  if (days > 0) return fmt::format("{}d {}h {}m {}s", days, hours, minutes, rest);
  if (hours > 0) return fmt::format("{}h {}m {}s", hours, minutes, rest);
  if (minutes > 0) return fmt::format("{}m {}s", minutes, rest);
  return fmt::format("{}s", rest);
}

std::variant<status_options, std::string> parse_status_options(
    std::span<const std::string_view> arguments) {
  status_options parsed;
  for (std::size_t i = 0; i < arguments.size(); ++i) {
    const auto argument = arguments[i];
    const auto value_of = [&](std::string_view name) -> std::optional<std::string> {
      if (argument == name && i + 1 < arguments.size()) return std::string(arguments[++i]);
      if (argument.starts_with(name) && argument.substr(name.size()).starts_with('=')) {
        return std::string(argument.substr(name.size() + 1));
      }
      return std::nullopt;
    };
    if (auto url = value_of("--url")) {
      parsed.url = std::move(*url);
    } else if (auto key = value_of("--key-file")) {
      parsed.client_key_file = std::move(*key);
    } else if (auto ca = value_of("--ca-file")) {
      parsed.ca_file = std::move(*ca);
    } else if (auto cert = value_of("--cert-file")) {
      parsed.cert_file = std::move(*cert);
    } else if (auto cert_key = value_of("--cert-key-file")) {
      parsed.cert_key_file = std::move(*cert_key);
    } else {
      return fmt::format("status: unknown or incomplete option \"{}\"", argument);
    }
  }
  if (!parse_url(parsed.url)) {
    return std::string("status: --url must be http://HOST:PORT, https://HOST:PORT or unix:/PATH");
  }
  if (parsed.cert_file.has_value() != parsed.cert_key_file.has_value()) {
    return std::string("status: --cert-file and --cert-key-file go together");
  }
  const bool https = parsed.url.starts_with("https://");
  if (!https && (parsed.ca_file || parsed.cert_file)) {
    return std::string("status: --ca-file, --cert-file and --cert-key-file need an https:// --url");
  }
  return parsed;
}

int run_status(const status_options& options, std::ostream& out, std::ostream& err) {
  try {
    std::string key_source;
    auto key = read_client_key(options, key_source);
    status_client client(*parse_url(options.url), options, std::move(key));

    const auto health = client.get("/healthz");
    const auto metrics = client.get("/metrics");
    const auto ready = client.get("/readyz");
    const auto apps = client.get("/v1/apps");
    if (apps.status == 401 || apps.status == 403) {
      err << fmt::format("token-broker status: {} refused {} ({} {}): {}\n", options.url,
                         key_source == "none" ? "a request without a client key"
                                              : fmt::format("the client key from {}", key_source),
                         apps.status, apps.status == 401 ? "unauthorized" : "forbidden",
                         key_source == "none"
                             ? fmt::format("set {} or pass --key-file FILE", status_key_variable)
                             : refusal(apps));
      return status_failed;
    }
    if (apps.status != 200) {
      throw status_error(fmt::format("GET /v1/apps answered HTTP {}", apps.status));
    }

    std::vector<row> rows;
    for (const auto& app : parse_listing(apps, "/v1/apps")) {
      const auto id = app.value("app", std::string("?"));
      rows.push_back(make_row(id, "access_token", app));
      if (const auto tickets = app.find("tickets"); tickets != app.end() && tickets->is_object()) {
        for (const auto& [kind, ticket] : tickets->items())
          rows.push_back(make_row(id, kind, ticket));
      }
    }
    for (const auto& suite : metric_suites(metrics.body)) {
      const auto target = fmt::format("/v1/suites/{}/corps", suite);
      const auto corps = client.get(target);
      if (corps.status != 200) continue;  // not this client's suite (403), or gone (404)
      for (const auto& corp : parse_listing(corps, target)) {
        rows.push_back(make_row(fmt::format("{}/{}", suite, corp.value("corpid", std::string("?"))),
                                "corp_token", corp));
      }
    }

    const bool healthy = health.status == 200;
    const bool is_ready = ready.status == 200;
    out << fmt::format("Broker:      {}\n", options.url);
    out << fmt::format("Version:     {}\n", metric_version(metrics.body));
    out << fmt::format("Health:      {}\n",
                       healthy ? "ok" : fmt::format("failing (/healthz {})", health.status));
    std::string readiness =
        is_ready ? "ready" : fmt::format("not ready (/readyz {})", ready.status);
    if (!is_ready) {
      const auto failing = nlohmann::json::parse(ready.body, nullptr, false);
      if (failing.is_object() && failing.contains("failing") && failing["failing"].is_array()) {
        std::vector<std::string> names;
        for (const auto& name : failing["failing"]) {
          if (name.is_string()) names.push_back(name.get<std::string>());
        }
        readiness += fmt::format(": no valid value for {}", fmt::join(names, ", "));
      }
    }
    out << fmt::format("Ready:       {}\n", readiness);
    out << fmt::format("Client key:  {}\n\n", key_source);
    if (rows.empty()) {
      out << "(no credential visible to this client)\n";
    } else {
      print_table(out, rows);
    }

    const bool all_fresh = std::all_of(rows.begin(), rows.end(), [](const row& each) {
      return each.state == "fresh" || each.state == "refreshing";
    });
    return healthy && is_ready && all_fresh ? status_ready : status_not_ready;
  } catch (const std::exception& error) {  // status_error, or a broken answer: never a crash
    err << fmt::format("token-broker status: {}: {}\n", options.url, error.what());
    return status_failed;
  }
}

}  // namespace token_broker
