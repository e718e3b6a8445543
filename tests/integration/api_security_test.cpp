// The API's own security through the real binary and real clients (curl, openssl): TLS and
// mutual-TLS listeners, unix-socket peers known by uid, certificates re-read on SIGHUP under
// an open keep-alive connection, the audit trail, JSON logs, and handshake abuse.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "broker_fixture.hpp"
#include "tls_material.hpp"
#include "token_broker/core/asio.hpp"

namespace token_broker::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* client_key = "billing-key-0123456789abcdef0123456789";

std::string quoted(const std::filesystem::path& path) {
  return fmt::format("'{}'", path.string());
}

// One PKI's files: its CA, a server certificate for 127.0.0.1 and a client certificate.
struct pki_files {
  std::filesystem::path ca, server_cert, server_key, client_cert, client_key;
};

pki_files write_pki(const scratch_directory& scratch, const std::string& name,
                    const fake::tls_material& material) {
  return {scratch.write(name + "-ca.pem", material.ca_pem),
          scratch.write(name + "-server.pem", material.certificate_pem),
          scratch.write(name + "-server.key", material.private_key_pem),
          scratch.write(name + "-client.pem", material.client_certificate_pem),
          scratch.write(name + "-client.key", material.client_private_key_pem)};
}

// What the config's cert_sha256 holds for a certificate: as an operator computes it.
std::string certificate_sha256(const std::filesystem::path& certificate) {
  const auto printed =
      run_shell("openssl x509 -in " + quoted(certificate) + " -outform DER | sha256sum");
  EXPECT_EQ(printed.exit_code, 0) << printed.output;
  return printed.output.substr(0, 64);
}

// curl over HTTPS to 127.0.0.1:`port`, trusting `ca`, with `options` added; prints the status
// code last ("\n<code>"), the body before it.
command_result curl_https(std::uint16_t port, const std::string& target,
                          const std::filesystem::path& ca, const std::string& options = {}) {
  return run_shell(
      "curl --silent --show-error --max-time 10 --cacert " + quoted(ca) + " " + options +
      " --write-out '\\n%{http_code}' 'https://127.0.0.1:" + std::to_string(port) + target + "'");
}

unsigned status_of(const command_result& curled) {
  const auto last = curled.output.rfind('\n');
  return last == std::string::npos ? 0 : std::stoul(curled.output.substr(last + 1));
}

json body_of(const command_result& curled) {
  return json::parse(curled.output.substr(0, curled.output.rfind('\n')), nullptr, false);
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    lines.push_back(json::parse(line, nullptr, /*allow_exceptions=*/false));
  }
  return lines;
}

// A keep-alive HTTPS connection made in-process, kept open across what the test does to the
// broker. Every read and write is bounded by the socket's timeouts.
class tls_connection {
 public:
  tls_connection(std::uint16_t port, const std::filesystem::path& ca)
      : context_(asio::ssl::context::tls_client), stream_(io_, context_) {
    context_.load_verify_file(ca.string());
    stream_.set_verify_mode(asio::ssl::verify_peer);
    auto& socket = stream_.next_layer();
    socket.connect({asio::ip::make_address("127.0.0.1"), port});
    const timeval limit{.tv_sec = 10, .tv_usec = 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    stream_.handshake(asio::ssl::stream_base::client);
  }
  http::response<http::string_body> get(const std::string& target) {
    http::request<http::empty_body> request(http::verb::get, target, 11);
    request.set(http::field::host, "127.0.0.1");
    request.set(http::field::authorization, std::string("Bearer ") + client_key);
    http::write(stream_, request);
    http::response<http::string_body> answer;
    http::read(stream_, buffer_, answer);
    return answer;
  }

 private:
  asio::io_context io_;
  asio::ssl::context context_;
  asio::ssl::stream<asio::ip::tcp::socket> stream_;
  beast::flat_buffer buffer_;
};

// What a TLS 1.2 client that asks to renegotiate after its handshake is told.
std::string renegotiation_error(std::uint16_t port, const std::filesystem::path& ca) {
  asio::io_context io;
  asio::ssl::context context(asio::ssl::context::tls_client);
  context.load_verify_file(ca.string());
  SSL_CTX_set_max_proto_version(context.native_handle(), TLS1_2_VERSION);  // 1.3 has none
  asio::ssl::stream<asio::ip::tcp::socket> stream(io, context);
  stream.set_verify_mode(asio::ssl::verify_peer);
  auto& socket = stream.next_layer();
  socket.connect({asio::ip::make_address("127.0.0.1"), port});
  const timeval limit{.tv_sec = 10, .tv_usec = 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  stream.handshake(asio::ssl::stream_base::client);
  if (SSL_renegotiate(stream.native_handle()) != 1) return "the client would not renegotiate";
  error_code error;
  stream.handshake(asio::ssl::stream_base::client, error);
  return error ? error.message() : "renegotiated";
}

class api_security_test : public broker_fixture {
 protected:
  void SetUp() override {
    broker_fixture::SetUp();
    hr_ = add_app("hr");
    crm_ = add_app("crm");
    pki_ = write_pki(scratch_, "main", fake::generate_tls_material());
  }

  // A broker with a plain loopback listener (for the fixture's readiness check) and
  // `listeners` after it; `billing` reads hr by bearer key.
  broker_process& start_with(const std::vector<json>& listeners, json clients = json::object(),
                             const json& changes = json::object()) {
    json listen = json::array({"127.0.0.1:" + std::to_string(free_port())});
    for (const auto& each : listeners) listen.push_back(each);
    clients["billing"] = {{"key_sha256", hex_sha256(client_key)}, {"apps", {"hr"}}};
    auto config = make_config(0, {{"clients", clients}});
    config["listen"] = listen;
    config.merge_patch(changes);
    config_ = config;
    return start_broker(config);
  }

  void expect_live_token(const json& body) const {
    ASSERT_TRUE(body.is_object() && body["access_token"].is_string()) << body;
    EXPECT_EQ(fake_->check(body["access_token"].get<std::string>()), fake::token_status::valid);
  }

  json tls_listener(std::uint16_t port, const json& extra = json::object()) const {
    json tls = {{"cert_file", pki_.server_cert.string()}, {"key_file", pki_.server_key.string()}};
    tls.merge_patch(extra);
    return {{"address", "127.0.0.1:" + std::to_string(port)}, {"tls", tls}};
  }

  app_spec hr_, crm_;
  pki_files pki_;
  json config_;
};

TEST_F(api_security_test, a_token_over_https_with_tls_1_2_or_1_3_and_session_resumption) {
  const auto port = free_port();
  start_with({tls_listener(port)});
  const std::string key = std::string("-H 'Authorization: Bearer ") + client_key + "'";

  const auto curled = curl_https(port, "/v1/apps/hr/token", pki_.ca, key);
  ASSERT_EQ(status_of(curled), 200u) << curled.output;
  expect_live_token(body_of(curled));
  EXPECT_EQ(status_of(curl_https(port, "/v1/apps/crm/token", pki_.ca, key)), 403u);
  EXPECT_EQ(status_of(curl_https(port, "/v1/apps/hr/token", pki_.ca)), 401u);

  const auto connect = "openssl s_client -connect 127.0.0.1:" + std::to_string(port) + " -CAfile " +
                       quoted(pki_.ca) + " -verify_return_error ";
  const auto tls13 = run_shell(connect + "-tls1_3 -brief < /dev/null");
  EXPECT_NE(tls13.output.find("Protocol version: TLSv1.3"), std::string::npos) << tls13.output;
  const auto tls12 = run_shell(connect + "-tls1_2 -brief < /dev/null");
  EXPECT_NE(tls12.output.find("Protocol version: TLSv1.2"), std::string::npos) << tls12.output;
  EXPECT_NE(tls12.output.find("ECDHE"), std::string::npos) << "forward secrecy: " << tls12.output;
  const auto tls11 = run_shell(connect + "-tls1_1 -brief < /dev/null");
  EXPECT_NE(tls11.exit_code, 0) << tls11.output;

  // Resumption: a second handshake with the first one's session (a TLS 1.3 ticket, which comes
  // after the handshake: so the first reads an answer through to the close) resumes.
  const auto session = scratch_.path() / "session.pem";
  const auto first =
      run_shell(R"(printf 'GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n' | )" +
                connect + "-ign_eof -sess_out " + quoted(session));
  ASSERT_NE(first.output.find("HTTP/1.1 200 OK"), std::string::npos) << first.output;
  const auto resumed = run_shell(connect + "-sess_in " + quoted(session) + " < /dev/null");
  EXPECT_NE(resumed.output.find("Reused, TLSv1.3"), std::string::npos) << resumed.output;
}

TEST_F(api_security_test, check_names_a_tls_file_that_is_no_certificate_or_not_the_key) {
  auto config = make_config(free_port());
  config["listen"] = json::array({config["listen"], tls_listener(free_port())});
  const auto broken = scratch_.write("not-a-cert.pem", "not a certificate");
  config["listen"][1]["tls"]["cert_file"] = broken.string();
  const auto checked = run_broker_command(
      {"--config", scratch_.write("bad-cert.json", config.dump()).string(), "--check"});
  EXPECT_EQ(checked.exit_code, 2);
  EXPECT_NE(checked.output.find("listen[1].tls.cert_file: not a usable PEM certificate chain"),
            std::string::npos)
      << checked.output;

  const auto other = fake::generate_tls_material();
  config["listen"][1]["tls"]["cert_file"] = pki_.server_cert.string();
  config["listen"][1]["tls"]["key_file"] = scratch_.write("other.key", other.private_key_pem);
  const auto mismatched = run_broker_command(
      {"--config", scratch_.write("other-key.json", config.dump()).string(), "--check"});
  EXPECT_EQ(mismatched.exit_code, 2);
  EXPECT_NE(mismatched.output.find("listen[1].tls.key_file: "), std::string::npos)
      << mismatched.output;
}

TEST_F(api_security_test, client_certificates_identify_clients_and_untrusted_ones_are_refused) {
  // Two CAs trusted for clients: a certificate of the second is trusted but no client's; a
  // third CA's client certificate is not trusted at all.
  const auto second = write_pki(scratch_, "second", fake::generate_tls_material());
  const auto untrusted = write_pki(scratch_, "untrusted", fake::generate_tls_material());
  const auto client_cas =
      scratch_.write("client-cas.pem", read_text(pki_.ca) + read_text(second.ca));
  const auto port = free_port();
  start_with({tls_listener(
                 port, {{"client_ca_file", client_cas.string()}, {"require_client_cert", true}})},
             {{"web", {{"cert_sha256", certificate_sha256(pki_.client_cert)}, {"apps", {"crm"}}}}});
  const auto presenting = [](const pki_files& files) {
    return "--cert " + quoted(files.client_cert) + " --key " + quoted(files.client_key);
  };

  const auto allowed = curl_https(port, "/v1/apps/crm/token", pki_.ca, presenting(pki_));
  ASSERT_EQ(status_of(allowed), 200u) << allowed.output;
  expect_live_token(body_of(allowed));
  // The certificate's client may read crm only.
  EXPECT_EQ(status_of(curl_https(port, "/v1/apps/hr/token", pki_.ca, presenting(pki_))), 403u);

  const auto unlisted = curl_https(port, "/v1/apps/crm/token", pki_.ca, presenting(second));
  EXPECT_EQ(status_of(unlisted), 403u) << unlisted.output;
  EXPECT_EQ(body_of(unlisted)["error"], "forbidden");
  // With a valid bearer key too, the unlisted certificate's request is the key's client's.
  const std::string key = std::string("-H 'Authorization: Bearer ") + client_key + "'";
  EXPECT_EQ(
      status_of(curl_https(port, "/v1/apps/hr/token", pki_.ca, presenting(second) + " " + key)),
      200u);

  const auto refused = curl_https(port, "/v1/apps/crm/token", pki_.ca, presenting(untrusted));
  EXPECT_NE(refused.exit_code, 0) << "an untrusted certificate's handshake: " << refused.output;
  EXPECT_EQ(status_of(refused), 0u);
  const auto without = curl_https(port, "/v1/apps/crm/token", pki_.ca);
  EXPECT_NE(without.exit_code, 0) << "no certificate where one is required: " << without.output;
}

TEST_F(api_security_test, a_unix_socket_peer_is_known_by_its_uid) {
  const auto socket_path = scratch_.path() / "api.sock";
  const auto by_uid = [&](const std::string& target) {
    return run_shell("curl --silent --show-error --max-time 10 --unix-socket " +
                     quoted(socket_path) + " --write-out '\\n%{http_code}' 'http://broker" +
                     target + "'");
  };
  const auto uid = static_cast<std::int64_t>(::getuid());
  auto& broker = start_with({"unix:" + socket_path.string()},
                            {{"local", {{"unix_uid", uid}, {"apps", {"crm"}}}}});
  const auto allowed = by_uid("/v1/apps/crm/token");
  ASSERT_EQ(status_of(allowed), 200u) << allowed.output;
  expect_live_token(body_of(allowed));
  EXPECT_EQ(status_of(by_uid("/v1/apps/hr/token")), 403u);

  // Another uid's client only: this process's uid is refused, by name.
  auto config = config_;
  config["clients"]["local"]["unix_uid"] = uid + 1;
  reload_broker(broker, config);
  const auto refused = by_uid("/v1/apps/crm/token");
  EXPECT_EQ(status_of(refused), 403u) << refused.output;
  EXPECT_NE(body_of(refused)["message"].get<std::string>().find("uid " + std::to_string(uid)),
            std::string::npos)
      << refused.output;
}

TEST_F(api_security_test, sighup_rereads_the_certificate_under_an_open_keep_alive_connection) {
  const auto port = free_port();
  auto& broker = start_with({tls_listener(port)});
  tls_connection kept(port, pki_.ca);
  ASSERT_EQ(kept.get("/v1/apps/hr/token").result_int(), 200u);

  // A renewed certificate (another CA's, so that which one is served tells them apart).
  const auto renewed = fake::generate_tls_material();
  const auto renewed_ca = scratch_.write("renewed-ca.pem", renewed.ca_pem);
  EXPECT_EQ(curl_https(port, "/healthz", renewed_ca).exit_code, 60) << "not yet renewed";
  scratch_.write("main-server.pem", renewed.certificate_pem);
  scratch_.write("main-server.key", renewed.private_key_pem);
  reload_broker(broker, config_);
  ASSERT_TRUE(log_shows(broker, "TLS certificate and key re-read", 5s)) << broker.log();

  EXPECT_EQ(kept.get("/v1/apps/hr/token").result_int(), 200u) << "the open connection stays";
  EXPECT_EQ(status_of(curl_https(port, "/healthz", renewed_ca)), 200u) << "new ones get the new";
  EXPECT_NE(curl_https(port, "/healthz", pki_.ca).exit_code, 0);

  // A broken certificate keeps the one in use, and says why.
  scratch_.write("main-server.pem", "not a certificate");
  reload_broker(broker, config_);
  ASSERT_TRUE(log_shows(broker, "keeps its TLS certificate", 5s)) << broker.log();
  EXPECT_EQ(status_of(curl_https(port, "/healthz", renewed_ca)), 200u);
  EXPECT_EQ(kept.get("/v1/apps/hr/token").result_int(), 200u);
}

TEST_F(api_security_test, the_audit_log_names_who_got_what_never_the_token_and_reopens_on_sighup) {
  const auto audit_path = scratch_.path() / "audit.log";
  const auto port = free_port();
  auto& broker =
      start_with({tls_listener(port)}, json::object(), {{"audit_log", audit_path.string()}});
  const std::string key = std::string("-H 'Authorization: Bearer ") + client_key + "'";
  const auto served = curl_https(port, "/v1/apps/hr/token", pki_.ca, key);
  ASSERT_EQ(status_of(served), 200u);
  const auto token = body_of(served)["access_token"].get<std::string>();
  ASSERT_EQ(status_of(curl_https(port, "/v1/apps/crm/token", pki_.ca, key)), 403u);
  ASSERT_EQ(status_of(curl_https(port, "/v1/apps/hr/token", pki_.ca)), 401u);
  ASSERT_EQ(status_of(curl_https(port, "/healthz", pki_.ca)), 200u);  // not a credential: none
  const auto gettoken = http_get(broker.port(), "/cgi-bin/gettoken?corpid=" + std::string(corpid) +
                                                    "&corpsecret=" + hr_.secret);
  ASSERT_EQ(gettoken.status, 200u);
  const auto wrong_secret = http_get(
      broker.port(), "/cgi-bin/gettoken?corpid=" + std::string(corpid) + "&corpsecret=wrong");
  ASSERT_NE(wrong_secret.body.find("40001"), std::string::npos) << wrong_secret.body;

  ASSERT_TRUE(eventually([&] { return json_lines(read_text(audit_path)).size() >= 5; }, 5s));
  const auto text = read_text(audit_path);
  EXPECT_EQ(text.find(token), std::string::npos) << "the token itself is never written";
  EXPECT_EQ(text.find(hr_.secret), std::string::npos);
  const auto lines = json_lines(text);
  ASSERT_EQ(lines.size(), 5u) << text;
  for (const auto& line : lines) {
    ASSERT_TRUE(line.is_object()) << text;
    EXPECT_TRUE(line["time"].is_string());
    EXPECT_EQ(line["kind"], "access_token");
  }
  const auto fingerprint = hex_sha256(token).substr(0, 12);
  EXPECT_EQ(lines[0]["client"], "billing");
  EXPECT_EQ(lines[0]["app"], "hr");
  EXPECT_EQ(lines[0]["status"], 200);
  EXPECT_EQ(lines[0]["route"], "token");
  EXPECT_EQ(lines[0]["listener"], "127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(lines[0]["peer"].get<std::string>().starts_with("127.0.0.1:"));
  EXPECT_EQ(lines[0]["fingerprint"], fingerprint);
  EXPECT_EQ(lines[1]["client"], "billing");
  EXPECT_EQ(lines[1]["app"], "crm");
  EXPECT_EQ(lines[1]["status"], 403);
  EXPECT_FALSE(lines[1].contains("fingerprint"));
  EXPECT_TRUE(lines[2]["client"].is_null());
  EXPECT_EQ(lines[2]["status"], 401);
  EXPECT_EQ(lines[3]["route"], "gettoken");
  EXPECT_EQ(lines[3]["app"], "hr");
  EXPECT_EQ(lines[3]["fingerprint"], fingerprint);
  EXPECT_FALSE(lines[3].contains("errcode"));
  EXPECT_EQ(lines[4]["route"], "gettoken");
  EXPECT_EQ(lines[4]["status"], 200);
  EXPECT_EQ(lines[4]["errcode"], 40001) << "a drop-in's refusal, in WeCom's shape";
  EXPECT_FALSE(lines[4].contains("app"));
  EXPECT_FALSE(lines[4].contains("fingerprint"));

  // logrotate: moved away, then SIGHUP; later lines go to a new file at the path.
  const auto rotated = scratch_.path() / "audit.log.1";
  std::filesystem::rename(audit_path, rotated);
  reload_broker(broker, config_);
  ASSERT_EQ(status_of(curl_https(port, "/v1/apps/hr/token", pki_.ca, key)), 200u);
  ASSERT_TRUE(eventually([&] { return json_lines(read_text(audit_path)).size() == 1; }, 5s));
  EXPECT_EQ(json_lines(read_text(audit_path))[0]["client"], "billing");
  EXPECT_EQ(json_lines(read_text(rotated)).size(), 5u);
}

TEST_F(api_security_test, json_logs_are_one_object_per_line) {
  auto& broker = start_with({}, json::object(), {{"log_format", "json"}});
  ASSERT_EQ(get_token(broker, "hr").status, 401u);
  reload_broker(broker, config_);
  const auto log = broker.log();
  const auto lines = json_lines(log);
  ASSERT_GE(lines.size(), 3u) << log;
  bool listening = false;
  for (const auto& line : lines) {
    ASSERT_TRUE(line.is_object()) << "not a JSON object: " << log;
    EXPECT_TRUE(line["time"].is_string());
    EXPECT_TRUE(line["level"].is_string());
    ASSERT_TRUE(line["message"].is_string());
    listening =
        listening || line["message"].get<std::string>().find("listening on") != std::string::npos;
  }
  EXPECT_TRUE(listening) << log;
}

TEST_F(api_security_test, handshake_abuse_never_keeps_a_normal_request_waiting) {
  const auto port = free_port();
  start_with({tls_listener(port)});
  asio::io_context io;
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
  std::vector<asio::ip::tcp::socket> abusers;
  const auto open_abuser = [&](std::string_view sends) {
    auto& socket = abusers.emplace_back(io);
    socket.connect(endpoint);
    asio::write(socket, asio::buffer(sends));
  };
  // Handshakes begun and never finished (slowloris on the handshake), garbage, plain HTTP.
  for (int i = 0; i < 50; ++i) open_abuser(std::string_view("\x16\x03\x01\x02\x00\x01", 6));
  for (int i = 0; i < 20; ++i) open_abuser(std::string(4096, '\xAB'));
  for (int i = 0; i < 20; ++i) open_abuser("GET /v1/apps/hr/token HTTP/1.1\r\nHost: x\r\n\r\n");
  // A TLS 1.2 client asking to renegotiate: refused, on its own connection.
  EXPECT_EQ(renegotiation_error(port, pki_.ca), "no renegotiation (SSL routines)");

  const auto started = std::chrono::steady_clock::now();
  tls_connection normal(port, pki_.ca);
  EXPECT_EQ(normal.get("/v1/apps/hr/token").result_int(), 200u);
  const auto took = std::chrono::steady_clock::now() - started;
  // The abusers' handshakes are only cut at request_timeout (10 s): a request stuck behind
  // them would take that long.
  EXPECT_LT(took, 2s) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count();

  // The plain-HTTP and garbage connections were closed, unanswered.
  std::array<char, 64> reply{};
  error_code error;
  abusers.back().read_some(asio::buffer(reply), error);
  EXPECT_EQ(error, asio::error::eof);
}

}  // namespace
}  // namespace token_broker::testing
