#include "token_broker/core/logging.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace token_broker {

void init_logging(std::string_view level) {
  auto logger = spdlog::stderr_color_mt("token-broker");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
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
