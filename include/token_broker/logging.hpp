// The daemon's log: spdlog to stderr (journald adds its own timestamps under systemd).
#pragma once

#include <exception>
#include <functional>
#include <string>
#include <string_view>

namespace token_broker {

// `level` is a validated config log_level ("trace" … "off").
void init_logging(std::string_view level);

// The completion handler for a long-lived coroutine (a refresher, a Redis connection) that
// handles every expected failure itself: an exception reaching it is a broken invariant,
// logged as critical with `what_stopped` ("app=hr refresher").
std::function<void(std::exception_ptr)> log_unexpected_end(std::string what_stopped);

}  // namespace token_broker
