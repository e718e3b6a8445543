// Where the HTTP API listens: "host:port", "[v6]:port" or "unix:/path".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace token_broker {

struct listen_address {
  enum class kind { tcp, unix_socket };

  kind type = kind::tcp;
  std::string host = "127.0.0.1";  // an IP literal, without brackets
  std::uint16_t port = 8080;
  std::string path;  // for unix sockets

  // Loopback and unix sockets are reachable only from this machine, so an open API is allowed.
  bool is_local() const;
  std::string to_string() const;
  bool operator==(const listen_address&) const = default;
};

// Parses the config's "listen" value; nullopt with `reason` set when it is not valid.
std::optional<listen_address> parse_listen_address(std::string_view text, std::string& reason);

// A TCP port in decimal, 1 to 65535; nullopt otherwise. Also used for the ports in URLs.
std::optional<std::uint16_t> parse_port(std::string_view text);

}  // namespace token_broker
