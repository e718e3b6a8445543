#include "token_broker/core/json_log_formatter.hpp"

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace token_broker {
namespace {

void append(spdlog::memory_buf_t& out, std::string_view text) {
  out.append(text.data(), text.data() + text.size());
}

}  // namespace

json_log_formatter::json_log_formatter()
    : time_("%Y-%m-%dT%H:%M:%S.%e%z", spdlog::pattern_time_type::local, "") {}

void json_log_formatter::format(const spdlog::details::log_msg& message,
                                spdlog::memory_buf_t& out) {
  // The time and the level's name hold nothing JSON must escape.
  append(out, R"({"time":")");
  time_.format(message, out);
  append(out, R"(","level":")");
  const auto level = spdlog::level::to_string_view(message.level);
  out.append(level.data(), level.data() + level.size());
  append(out, R"(","message":)");
  const nlohmann::json text(std::string(message.payload.data(), message.payload.size()));
  append(out, text.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  append(out, "}\n");
}

std::unique_ptr<spdlog::formatter> json_log_formatter::clone() const {
  return std::make_unique<json_log_formatter>();
}

}  // namespace token_broker
