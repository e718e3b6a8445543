// The daemon's log: spdlog to stderr (journald adds its own timestamps under systemd).
#pragma once

#include <string_view>

namespace token_broker {

// `level` is a validated config log_level ("trace" … "off").
void init_logging(std::string_view level);

}  // namespace token_broker
