#include "token_broker/config/listen_address.hpp"

#include <arpa/inet.h>
#include <sys/un.h>

#include <array>
#include <charconv>

namespace token_broker {
namespace {

constexpr std::string_view unix_prefix = "unix:";

// inet_pton accepts only plain literals (no names, no leading zeros in IPv4), and inet_ntop
// gives the canonical spelling, so "[0:0::1]" and "[::1]" end up as the same host.
std::optional<std::string> canonical_ip(int family, std::string_view text) {
  // inet_pton reads a C string: a NUL would end the address early, the rest unchecked.
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  const std::string literal(text);
  std::array<unsigned char, sizeof(in6_addr)> binary{};
  if (inet_pton(family, literal.c_str(), binary.data()) != 1) return std::nullopt;
  std::array<char, INET6_ADDRSTRLEN> canonical{};
  if (!inet_ntop(family, binary.data(), canonical.data(), canonical.size())) return std::nullopt;
  return std::string(canonical.data());
}

std::optional<listen_address> parse_unix(std::string_view path, std::string& reason) {
  if (!path.starts_with('/')) {
    reason = "unix socket path must be absolute (\"unix:/run/token-broker/api.sock\")";
    return std::nullopt;
  }
  // The kernel's limit, sun_path with its terminating NUL; a longer path fails only at bind.
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    reason = "unix socket path must be shorter than " +
             std::to_string(sizeof(sockaddr_un::sun_path)) + " bytes";
    return std::nullopt;
  }
  if (path.find('\0') != std::string_view::npos) {
    reason = "unix socket path must not contain a NUL byte";
    return std::nullopt;
  }
  listen_address address;
  address.type = listen_address::kind::unix_socket;
  address.path = path;
  return address;
}

}  // namespace

std::optional<std::uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  const auto* const end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc{} || stop != end || value == 0 || value > 65535) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

std::optional<listen_address> parse_listen_address(std::string_view text, std::string& reason) {
  if (text.starts_with(unix_prefix)) return parse_unix(text.substr(unix_prefix.size()), reason);

  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    reason = "missing port (\"host:port\", \"[v6]:port\" or \"unix:/path\")";
    return std::nullopt;
  }
  std::string_view host = text.substr(0, colon);
  const auto port = parse_port(text.substr(colon + 1));

  std::optional<std::string> ip;
  if (host.starts_with('[') && host.ends_with(']')) {
    ip = canonical_ip(AF_INET6, host.substr(1, host.size() - 2));
  } else if (host.find(':') != std::string_view::npos) {
    reason = "an IPv6 address needs brackets (\"[::1]:8080\")";
    return std::nullopt;
  } else if (host == "localhost") {
    // Pinned to IPv4 so "localhost" never depends on /etc/hosts or on which family resolves.
    ip = "127.0.0.1";
  } else {
    ip = canonical_ip(AF_INET, host);
  }
  if (!ip) {
    // We bind to it, so it must be an address; a name could resolve to anything.
    reason = host.empty() ? "missing host (use 0.0.0.0 or [::] for every interface)"
                          : "host must be an IP address or localhost";
    return std::nullopt;
  }
  if (!port) {
    reason = "port must be from 1 to 65535";
    return std::nullopt;
  }
  listen_address address;
  address.host = std::move(*ip);
  address.port = *port;
  return address;
}

bool listen_address::is_local() const {
  if (type == kind::unix_socket) return true;
  if (host.find(':') != std::string::npos) return host == "::1";
  return host.starts_with("127.");
}

std::string listen_address::to_string() const {
  if (type == kind::unix_socket) return std::string(unix_prefix) + path;
  const auto bracketed = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return bracketed + ":" + std::to_string(port);
}

}  // namespace token_broker
