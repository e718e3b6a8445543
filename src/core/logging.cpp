#include "token_broker/core/logging.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "token_broker/core/json_log_formatter.hpp"

namespace token_broker {

void init_logging(std::string_view level, std::string_view format) {
  std::shared_ptr<spdlog::logger> logger;
  if (format == "text") {
    logger = spdlog::stderr_color_mt("token-broker");
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
  } else if (format == "json") {
    // No colours: escape sequences inside a JSON line would be part of its text.
    logger = spdlog::stderr_logger_mt("token-broker");
    logger->set_formatter(std::make_unique<json_log_formatter>());
  } else {
    throw std::invalid_argument("init_logging: unknown log format " + std::string(format));
  }
  logger->set_level(spdlog::level::from_str(std::string(level)));
  spdlog::set_default_logger(std::move(logger));
}

std::string masked(std::string text, std::string_view secret) {
  if (secret.empty()) return text;
  constexpr std::string_view mask = "***";
  // Searched on after the mask: a secret that is itself made of '*' cannot loop forever.
  for (auto at = text.find(secret); at != std::string::npos;
       at = text.find(secret, at + mask.size())) {
    text.replace(at, secret.size(), mask);
  }
  return text;
}

}  // namespace token_broker
