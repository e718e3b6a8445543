#include "token_broker/ops/systemd_notify.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace token_broker {
namespace {

std::optional<long long> environment_number(const char* name) {
  const char* text = std::getenv(name);
  if (!text || !*text) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || value <= 0) return std::nullopt;
  return value;
}

}  // namespace

systemd_notifier::systemd_notifier() {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return;
  const std::string_view where(path);
  if ((where[0] != '/' && where[0] != '@') || where.size() >= sizeof(address_.sun_path)) {
    spdlog::warn("NOTIFY_SOCKET is not a unix socket path; not notifying systemd");
    return;
  }
  address_.sun_family = AF_UNIX;
  std::memcpy(address_.sun_path, where.data(), where.size());
  if (where[0] == '@') address_.sun_path[0] = '\0';  // Linux abstract namespace
  address_size_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + where.size());
  socket_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (socket_ < 0) {
    spdlog::warn("cannot open a socket to notify systemd: {}", std::strerror(errno));
    return;
  }

  // WATCHDOG_PID names the process systemd watches; keep-alives from another one are ignored.
  const auto watched_pid = environment_number("WATCHDOG_PID");
  const auto watchdog_usec = environment_number("WATCHDOG_USEC");
  if (watchdog_usec && (!watched_pid || *watched_pid == getpid())) {
    watchdog_interval_ = std::chrono::microseconds{*watchdog_usec / 2};
  }
}

systemd_notifier::~systemd_notifier() {
  if (socket_ >= 0) ::close(socket_);
}

void systemd_notifier::notify(std::string_view state) const {
  if (socket_ < 0) return;
  const auto sent = ::sendto(socket_, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                             reinterpret_cast<const sockaddr*>(&address_), address_size_);
  if (sent < 0) spdlog::warn("notifying systemd of {} failed: {}", state, std::strerror(errno));
}

asio::awaitable<void> systemd_notifier::feed_watchdog() const {
  if (socket_ < 0 || !watchdog_interval_) co_return;
  spdlog::info("systemd watchdog: keep-alive every {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog_interval_).count());
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    notify("WATCHDOG=1");
    timer.expires_after(*watchdog_interval_);
    co_await timer.async_wait(asio::use_awaitable);
  }
}

}  // namespace token_broker
