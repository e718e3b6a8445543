#include "token_broker/logging.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace token_broker {

void init_logging(std::string_view level) {
  auto logger = spdlog::stderr_color_mt("token-broker");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(std::string(level)));
  spdlog::set_default_logger(std::move(logger));
}

std::function<void(std::exception_ptr)> log_unexpected_end(std::string what_stopped) {
  return [what_stopped = std::move(what_stopped)](std::exception_ptr failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& error) {
      spdlog::critical("{} stopped: {}", what_stopped, error.what());
    }
  };
}

}  // namespace token_broker
