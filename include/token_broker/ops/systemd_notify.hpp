// The systemd notify protocol (sd_notify(3)) without libsystemd: one datagram per state change
// to $NOTIFY_SOCKET, and watchdog keep-alives sent from the io loop, so that a wedged loop
// stops them and systemd restarts the daemon.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <optional>
#include <string_view>

#include "token_broker/core/asio.hpp"

namespace token_broker {

class systemd_notifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. Outside systemd (no NOTIFY_SOCKET)
  // every notification does nothing.
  systemd_notifier();
  ~systemd_notifier();
  systemd_notifier(const systemd_notifier&) = delete;
  systemd_notifier& operator=(const systemd_notifier&) = delete;

  // "READY=1", "STOPPING=1", "WATCHDOG=1"… Failures are logged, never thrown: systemd going
  // away must not take the daemon with it.
  void notify(std::string_view state) const;

  // Sends WATCHDOG=1 at half of WATCHDOG_USEC for as long as the io loop runs; returns at once
  // when systemd expects no keep-alives from this process.
  asio::awaitable<void> feed_watchdog() const;

 private:
  int socket_ = -1;
  sockaddr_un address_{};
  socklen_t address_size_ = 0;
  std::optional<std::chrono::microseconds> watchdog_interval_;
};

}  // namespace token_broker
