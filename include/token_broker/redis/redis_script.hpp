// A Lua script that Redis runs by its SHA-1 (EVALSHA): each call sends a few dozen bytes
// instead of the script. The text goes along only when Redis lacks it (NOSCRIPT: a restarted
// server, or SCRIPT FLUSH), and with it Redis has it again for every call after.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "token_broker/core/asio.hpp"
#include "token_broker/redis/redis_connection.hpp"

namespace token_broker {

class redis_script {
 public:
  explicit redis_script(std::string text);

  const std::string& sha1() const { return sha1_; }
  // SCRIPT LOAD of this script: sent on connect, so that the first calls find it.
  std::vector<std::string> load_command() const { return {"SCRIPT", "LOAD", text_}; }

  // Runs it on `connection`. nullopt when Redis cannot be reached or the script fails (that is
  // logged; the connection logs its own state changes).
  asio::awaitable<std::optional<redis_reply>> run(redis_connection& connection,
                                                  std::vector<std::string> keys,
                                                  std::vector<std::string> arguments) const;

 private:
  std::string text_;
  std::string sha1_;
};

}  // namespace token_broker
