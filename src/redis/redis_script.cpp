#include "token_broker/redis/redis_script.hpp"

#include <spdlog/spdlog.h>

#include "token_broker/core/secret_digest.hpp"

namespace token_broker {

redis_script::redis_script(std::string text) : text_(std::move(text)), sha1_(sha1_hex(text_)) {}

asio::awaitable<std::optional<redis_reply>> redis_script::run(
    redis_connection& connection, std::vector<std::string> keys,
    std::vector<std::string> arguments) const {
  std::vector<std::string> command{"EVALSHA", sha1_, std::to_string(keys.size())};
  command.insert(command.end(), std::make_move_iterator(keys.begin()),
                 std::make_move_iterator(keys.end()));
  command.insert(command.end(), std::make_move_iterator(arguments.begin()),
                 std::make_move_iterator(arguments.end()));
  auto by_sha1 = command;  // the text replaces the SHA-1 if Redis lacks the script
  auto [error, reply] = co_await connection.command(std::move(by_sha1));
  if (!error && reply.type == redis_reply::kind::error && reply.text.starts_with("NOSCRIPT")) {
    command[0] = "EVAL";
    command[1] = text_;
    std::tie(error, reply) = co_await connection.command(std::move(command));
  }
  if (error) co_return std::nullopt;
  if (reply.type == redis_reply::kind::error) {
    spdlog::warn("redis script failed: {}", connection.redacted(reply.text));
    co_return std::nullopt;
  }
  co_return std::move(reply);
}

}  // namespace token_broker
