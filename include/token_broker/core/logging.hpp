// The daemon's log: spdlog to stderr (journald adds its own timestamps under systemd).
#pragma once

#include <string>
#include <string_view>

namespace token_broker {

// `level` is a validated config log_level ("trace" … "off"), `format` a validated log_format:
// "text" (the time, the level and the message, as a person reads them) or "json" (the same
// fields as one JSON object per line, json_log_formatter). Throws std::invalid_argument for any
// other format.
void init_logging(std::string_view level, std::string_view format = "text");

// `text` with every occurrence of `secret` replaced by "***", for a log line that quotes what
// another party said (an exception, a server's error) and so cannot be trusted to hold none.
std::string masked(std::string text, std::string_view secret);

}  // namespace token_broker
