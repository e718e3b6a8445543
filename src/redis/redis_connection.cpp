#include "token_broker/redis/redis_connection.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <random>

#include "token_broker/core/logging.hpp"

namespace token_broker {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Boost's error_category has a protected non-virtual destructor by design; the warning is
// about a pattern that cannot go wrong here (a function-local static, never deleted).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class redis_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "redis"; }
  std::string message(int code) const override {
    switch (static_cast<redis_errc>(code)) {
      case redis_errc::not_connected:
        return "Redis is not connected";
      case redis_errc::timed_out:
        return "Redis did not answer in time";
      case redis_errc::connection_lost:
        return "the Redis connection was lost";
    }
    return "unknown Redis error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& redis_category() {
  static const redis_category_impl category;
  return category;
}

// One command awaiting its reply. The waiting coroutine sleeps on the timer; the reply, the
// connection's loss or the deadline ends the sleep, whichever comes first.
struct redis_connection::pending_command {
  explicit pending_command(asio::strand<asio::any_io_executor>& strand)
      : answered_or_timeout(strand) {}
  asio::steady_timer answered_or_timeout;
  bool answered = false;
  boost::system::error_code error;
  redis_reply reply;
};

namespace {

// The words of a sentinel's event, split at spaces.
std::vector<std::string_view> words(std::string_view text) {
  std::vector<std::string_view> found;
  while (!text.empty()) {
    const auto end = std::min(text.find(' '), text.size());
    if (end > 0) found.push_back(text.substr(0, end));
    text.remove_prefix(std::min(end + 1, text.size()));
  }
  return found;
}

redis_endpoint endpoint_of(const redis_config& settings) {
  redis_endpoint endpoint{settings.unix_path, settings.host, settings.port};
  if (settings.tls) {
    endpoint.tls = make_redis_tls_context(*settings.tls);
    endpoint.server_name = settings.tls->server_name;
  }
  return endpoint;
}

}  // namespace

redis_connection::redis_connection(asio::any_io_executor executor, redis_config settings,
                                   std::string role, redis_timeouts timeouts)
    : strand_(asio::make_strand(executor)),
      settings_(std::move(settings)),
      endpoint_(endpoint_of(settings_)),
      current_(endpoint_),
      role_(std::move(role)),
      timeouts_(timeouts),
      state_changed_(strand_),
      retry_pause_(strand_) {
  if (!settings_.sentinel) return;
  current_.host.clear();  // not located yet: the URL's host is not used
  sentinels_ = settings_.sentinel->nodes;
  for (const auto& node : sentinels_) {
    watches_.push_back(std::make_unique<sentinel_watch>(
        sentinel_watch{node, nullptr, asio::steady_timer(strand_)}));
  }
}

redis_connection::~redis_connection() = default;

void redis_connection::subscribe(std::string channel, message_handler on_message) {
  channel_ = std::move(channel);
  on_message_ = std::move(on_message);
}

void redis_connection::on_up(std::function<void()> handler) {
  on_up_ = std::move(handler);
}

void redis_connection::on_connect_send(std::vector<std::vector<std::string>> commands) {
  connect_commands_ = std::move(commands);
}

void redis_connection::start(supervisor& tasks) {
  tasks.spawn(strand_, "redis", "redis " + role_ + " connection",
              [self = shared_from_this()] { return self->run(); }, {settings_.password});
  for (const auto& watch : watches_) {
    tasks.spawn(
        strand_, "redis",
        "redis " + role_ + " watch of sentinel " + sentinel_endpoint(watch->node).to_string(),
        [self = shared_from_this(), &watch = *watch] { return self->watch_sentinel(watch); },
        {settings_.password, settings_.sentinel->password});
  }
}

void redis_connection::stop() {
  asio::post(strand_, [self = shared_from_this()] {
    self->stopping_ = true;
    for (const auto& watch : self->watches_) {
      if (watch->stream) watch->stream->close();
      watch->pause.cancel();
    }
    self->retry_pause_.cancel();
    self->notify();
  });
}

asio::awaitable<void> redis_connection::run() {
  const auto self = shared_from_this();  // the loop keeps its connection alive
  // Restarted after an unexpected end: the connection it may have left behind is dropped.
  up_.store(false, std::memory_order_release);
  drop("restarted");
  std::mt19937_64 random(std::random_device{}());
  auto backoff = timeouts_.backoff_min;
  int failed_attempts = 0;

  while (!stopping_) {
    const auto began = steady_clock::now();
    const bool was_up = co_await connect_and_serve();
    tried_.store(true, std::memory_order_release);
    // A connection that served a while and broke is tried again at once; one that breaks as
    // soon as it is up counts as a failure, so a flapping server is not hammered.
    if (was_up && steady_clock::now() - began >= timeouts_.backoff_max) {
      backoff = timeouts_.backoff_min;
      failed_attempts = 0;
      continue;
    }
    if (stopping_) break;
    // The first failure of an outage is news; the retries that follow are not.
    if (++failed_attempts == 1) {
      spdlog::warn("redis {} unreachable at {}: {}; retrying with backoff, serving from memory",
                   role_, location(), last_error_);
    } else {
      spdlog::debug("redis {} still unreachable (attempt {}): {}", role_, failed_attempts,
                    last_error_);
    }
    // Equal jitter, so replicas that lost Redis together do not return in step.
    const auto jittered = backoff / 2 + milliseconds{std::uniform_int_distribution<long>(
                                            0, static_cast<long>(backoff.count() / 2))(random)};
    retry_pause_.expires_after(jittered);
    co_await retry_pause_.async_wait(asio::as_tuple(asio::use_awaitable));
    backoff = std::min(backoff * 2, timeouts_.backoff_max);
  }
  drop("stopping");
}

// One connection from connect to loss. True if it was up at some point.
asio::awaitable<bool> redis_connection::connect_and_serve() {
  const auto switches = master_switches_;
  if (settings_.sentinel) {
    auto master = co_await locate_master();
    if (!master || stopping_) co_return false;
    current_ = std::move(*master);
  }
  auto [stream, why] = co_await redis_stream::open(strand_, current_, timeouts_.connect);
  if (!stream) {
    last_error_ = std::move(why);
    co_return false;
  }
  if (stopping_) {
    stream->close();
    co_return false;
  }
  stream_ = stream;
  ++generation_;
  reader_.emplace();
  last_heard_ = steady_clock::now();
  asio::co_spawn(strand_, read_replies(stream, generation_), asio::detached);

  if (!co_await prepare_session()) {
    drop(last_error_);
    co_return false;
  }
  if (master_switches_ != switches) {
    // Connected to the master of before the switch: it would lose what it is told.
    drop("the master moved while connecting");
    co_return false;
  }
  up_.store(true, std::memory_order_release);
  tried_.store(true, std::memory_order_release);
  spdlog::info("redis {} connected to {}/{}{}", role_, current_.to_string(), settings_.database,
               endpoint_.tls ? " (TLS)" : "");
  if (on_up_) on_up_();

  co_await check_health(stream);
  up_.store(false, std::memory_order_release);
  if (!stopping_) {
    spdlog::warn("redis {} connection to {} lost: {}; reconnecting, serving from memory", role_,
                 location(), last_error_);
  }
  drop("closed");
  co_return true;
}

// While the connection lasts: a PING whenever nothing was heard for a while. Its reply, or its
// timeout (which drops the connection), tells a silent connection from a quiet one.
asio::awaitable<void> redis_connection::check_health(const std::shared_ptr<redis_stream>& stream) {
  const auto gone = [this, &stream] { return stream_ != stream || stopping_; };
  while (!gone()) {
    co_await wait_until(last_heard_ + timeouts_.health_check, gone);
    if (gone() || steady_clock::now() < last_heard_ + timeouts_.health_check) continue;
    // Named: g++ 12 mishandles temporaries in a co_await's operand.
    // Every failure of send() has dropped the connection already (a timeout drops it).
    auto ping = send(std::vector<std::string>{"PING"});
    co_await std::move(ping);
  }
}

// AUTH and SELECT, then the connect commands, then SUBSCRIBE for an events connection.
asio::awaitable<bool> redis_connection::prepare_session() {
  std::vector<std::vector<std::string>> setup;
  if (!settings_.password.empty() && !settings_.username.empty()) {
    setup.push_back({"AUTH", settings_.username, settings_.password});
  } else if (!settings_.password.empty()) {
    setup.push_back({"AUTH", settings_.password});
  }
  if (settings_.database != 0) setup.push_back({"SELECT", std::to_string(settings_.database)});
  for (auto& arguments : setup) {
    const std::string name = arguments.front();
    auto [error, reply] = co_await send(std::move(arguments));
    if (error || reply.type == redis_reply::kind::error) {
      last_error_ = name + " failed: " + (error ? last_error_ : redacted(reply.text));
      co_return false;
    }
  }
  if (settings_.sentinel) {
    // A sentinel's answer may be stale (a failover under way): only a master will do.
    auto asking = send(std::vector<std::string>{"ROLE"});
    auto [error, reply] = co_await std::move(asking);
    const bool master = !error && reply.type == redis_reply::kind::array &&
                        !reply.elements.empty() && reply.elements[0].text == "master";
    if (!master) {
      last_error_ = error ? "ROLE failed: " + last_error_
                          : current_.to_string() + " is not the master of " +
                                settings_.sentinel->master + "; asking the sentinels again";
      co_return false;
    }
  }
  for (const auto& arguments : connect_commands_) {
    auto [error, reply] = co_await send(arguments);
    if (error) {
      last_error_ = arguments.front() + " failed: " + last_error_;
      co_return false;
    }
    if (reply.type == redis_reply::kind::error) {
      spdlog::warn("redis {}: {} refused: {}", role_, arguments.front(), redacted(reply.text));
    }
  }
  if (channel_.empty()) co_return true;
  auto subscribing = send(std::vector<std::string>{"SUBSCRIBE", channel_});
  auto [error, reply] = co_await std::move(subscribing);
  if (error || reply.type == redis_reply::kind::error) {
    last_error_ = "SUBSCRIBE failed: " + (error ? last_error_ : redacted(reply.text));
    co_return false;
  }
  co_return true;
}

asio::awaitable<std::tuple<boost::system::error_code, redis_reply>> redis_connection::command(
    std::vector<std::string> arguments) {
  // Named before the co_await: g++ 12 mishandles temporaries in its operand.
  auto operation = asio::co_spawn(strand_, send_if_up(std::move(arguments)), asio::use_awaitable);
  co_return co_await std::move(operation);
}

asio::awaitable<std::tuple<boost::system::error_code, redis_reply>> redis_connection::send_if_up(
    std::vector<std::string> arguments) {
  if (!up()) co_return std::tuple{make_error_code(redis_errc::not_connected), redis_reply{}};
  co_return co_await send(std::move(arguments));
}

asio::awaitable<std::tuple<boost::system::error_code, redis_reply>> redis_connection::send(
    std::vector<std::string> arguments) {
  const auto self = shared_from_this();
  if (!stream_) co_return std::tuple{make_error_code(redis_errc::not_connected), redis_reply{}};
  auto pending = std::make_shared<pending_command>(strand_);
  outgoing_ += encoded(arguments);
  pending_.push_back(pending);
  if (!writing_) {
    writing_ = true;
    asio::co_spawn(strand_, write_commands(stream_, generation_), asio::detached);
  }
  pending->answered_or_timeout.expires_after(timeouts_.command);
  co_await pending->answered_or_timeout.async_wait(asio::as_tuple(asio::use_awaitable));
  if (!pending->answered) {
    // A late answer would be read as the next command's: the connection goes.
    drop("no answer within " + std::to_string(timeouts_.command.count()) + " ms");
    co_return std::tuple{make_error_code(redis_errc::timed_out), redis_reply{}};
  }
  co_return std::tuple{pending->error, std::move(pending->reply)};
}

// Writes what is queued, in batches: commands sent while a write is under way go together in
// the next one.
asio::awaitable<void> redis_connection::write_commands(std::shared_ptr<redis_stream> stream,
                                                       std::uint64_t generation) {
  const auto self = shared_from_this();
  std::string batch;
  while (generation == generation_ && !outgoing_.empty()) {
    batch.clear();
    batch.swap(outgoing_);
    const auto error = co_await stream->write(asio::buffer(batch));
    if (generation != generation_) co_return;  // dropped meanwhile: the next one writes anew
    if (error) {
      drop("write failed: " + error.message());
      co_return;
    }
  }
  if (generation == generation_) writing_ = false;
}

asio::awaitable<void> redis_connection::read_replies(std::shared_ptr<redis_stream> stream,
                                                     std::uint64_t generation) {
  const auto self = shared_from_this();
  std::array<char, 16 * 1024> received;
  for (;;) {
    auto [error, size] = co_await stream->read_some(asio::buffer(received));
    if (generation != generation_) co_return;
    if (error) {
      drop(error == asio::error::eof ? std::string("Redis closed the connection")
                                     : "read failed: " + error.message());
      co_return;
    }
    try {
      reader_->feed(std::string_view(received.data(), size));
      while (auto reply = reader_->next()) {
        deliver(std::move(*reply));
        if (generation != generation_) co_return;
      }
    } catch (const redis_protocol_error& broken) {
      drop(std::string("not a Redis reply: ") + broken.what());
      co_return;
    }
  }
}

// A reply answers the oldest pending command, but for a message on the subscribed channel.
void redis_connection::deliver(redis_reply reply) {
  last_heard_ = steady_clock::now();
  if (!channel_.empty()) {
    if (const auto payload = message_payload(reply)) {
      if (on_message_) on_message_(*payload);
      return;
    }
  }
  if (pending_.empty()) {
    drop("a reply that no command asked for");
    return;
  }
  // After a failover the old master, now a replica, refuses writes, and a restarted one
  // answers nothing while it loads: the master is elsewhere, or not ready. The command fails
  // to its caller (what a replica holds is written back once reconnected: store_sync).
  const bool elsewhere = reply.type == redis_reply::kind::error &&
                         (reply.text.starts_with("READONLY") || reply.text.starts_with("LOADING"));
  const auto answered = std::move(pending_.front());
  pending_.pop_front();
  answered->answered = true;
  answered->reply = std::move(reply);
  answered->answered_or_timeout.cancel();  // resumes the waiting coroutine, never inline
  if (elsewhere) {
    drop(answered->reply.text.substr(0, answered->reply.text.find(' ')) + " from " +
         current_.to_string() + ": reconnecting");
  }
}

asio::awaitable<void> redis_connection::wait_until(steady_clock::time_point deadline,
                                                   std::function<bool()> done) {
  // notify() cancels the timer; a cancel that misses an already-queued completion only
  // costs one more look at `done`.
  while (!done() && steady_clock::now() < deadline) {
    state_changed_.expires_at(std::min(deadline, steady_clock::now() + std::chrono::hours{1}));
    co_await state_changed_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

// Closes the connection now and fails every command still waiting for its reply.
void redis_connection::drop(std::string why) {
  if (!stream_) return;
  last_error_ = redacted(std::move(why));
  stream_->close();
  stream_.reset();
  ++generation_;
  reader_.reset();
  outgoing_.clear();
  writing_ = false;
  for (const auto& waiting : std::exchange(pending_, {})) {
    waiting->answered = true;
    waiting->error = make_error_code(redis_errc::connection_lost);
    waiting->answered_or_timeout.cancel();
  }
  notify();
}

std::string redis_connection::location() const {
  if (!settings_.sentinel) return current_.to_string();
  const auto master = "master " + settings_.sentinel->master;
  return current_.host.empty() ? master : master + " (" + current_.to_string() + ")";
}

redis_endpoint redis_connection::sentinel_endpoint(const sentinel_address& node) const {
  redis_endpoint endpoint{.host = node.first, .port = node.second};
  if (settings_.sentinel->tls) endpoint.tls = endpoint_.tls;
  return endpoint;
}

void redis_connection::ask_first(const sentinel_address& node) {
  const auto found = std::find(sentinels_.begin(), sentinels_.end(), node);
  if (found != sentinels_.end()) std::rotate(sentinels_.begin(), found, found + 1);
}

std::vector<std::vector<std::string>> redis_connection::sentinel_commands(
    std::vector<std::string> command) const {
  const auto& sentinel = *settings_.sentinel;
  std::vector<std::vector<std::string>> commands;
  if (!sentinel.password.empty()) {
    commands.push_back(
        sentinel.username.empty()
            ? std::vector<std::string>{"AUTH", sentinel.password}
            : std::vector<std::string>{"AUTH", sentinel.username, sentinel.password});
  }
  commands.push_back(std::move(command));
  return commands;
}

asio::awaitable<std::optional<redis_endpoint>> redis_connection::locate_master() {
  const auto& master_name = settings_.sentinel->master;
  std::string failures;
  // A copy: the watch may reorder sentinels_ while this one waits for an answer.
  const auto nodes = sentinels_;
  for (std::size_t i = 0; i < nodes.size() && !stopping_; ++i) {
    const auto node = sentinel_endpoint(nodes[i]);
    const auto failed = [&](const std::string& why) {
      failures += (failures.empty() ? "" : "; ") + node.to_string() + ": " +
                  masked(redacted(why), settings_.sentinel->password);
    };
    auto [stream, why] = co_await redis_stream::open(strand_, node, timeouts_.connect);
    if (!stream) {
      failed(why);
      continue;
    }
    // Named: converse() holds a reference to it until it is done.
    const auto commands = sentinel_commands({"SENTINEL", "get-master-addr-by-name", master_name});
    auto asking = converse(strand_, stream, commands, timeouts_.command);
    auto [replies, trouble] = co_await std::move(asking);
    stream->close();
    if (!trouble.empty()) {
      failed(trouble);
      continue;
    }
    if (replies.front().type == redis_reply::kind::error) {
      failed(replies.front().text);
      continue;
    }
    const auto& answer = replies.back();
    std::uint16_t port = 0;
    const bool named =
        answer.type == redis_reply::kind::array && answer.elements.size() == 2 &&
        !answer.elements[0].text.empty() &&
        std::from_chars(answer.elements[1].text.data(),
                        answer.elements[1].text.data() + answer.elements[1].text.size(), port)
                .ec == std::errc{};
    if (!named) {
      failed("does not know the master " + master_name);
      continue;
    }
    ask_first(nodes[i]);
    auto master = endpoint_;
    master.host = answer.elements[0].text;
    master.port = port;
    co_return master;
  }
  last_error_ = "no sentinel named the master " + master_name + ": " + failures;
  co_return std::nullopt;
}

asio::awaitable<void> redis_connection::watch_sentinel(sentinel_watch& watch) {
  const auto self = shared_from_this();
  const auto& master_name = settings_.sentinel->master;
  // Whether a message says the master is no longer where this connection goes (or went last):
  // "+switch-master" "<name> <old ip> <old port> <new ip> <new port>", from every sentinel
  // once it has switched, or "+failover-state-reconf-slaves" "master <name> <ip> <port>", from
  // the leader of a failover once the promoted replica says it is the master.
  const auto moved_away = [&](const redis_reply& message) {
    const auto payload = message_payload(message);
    if (!payload) return false;
    const auto fields = words(*payload);
    const auto is_current = [&](std::string_view host, std::string_view port) {
      return current_.host == host && std::to_string(current_.port) == port;
    };
    const auto& channel = message.elements[1].text;
    if (channel == "+switch-master") {
      return fields.size() == 5 && fields[0] == master_name && !is_current(fields[3], fields[4]);
    }
    return channel == "+failover-state-reconf-slaves" && fields.size() == 4 &&
           fields[0] == "master" && fields[1] == master_name && is_current(fields[2], fields[3]);
  };
  const auto where = sentinel_endpoint(watch.node);
  bool failing = false;  // the first failure of a run of them is logged as a warning
  while (!stopping_) {
    auto [stream, why] = co_await redis_stream::open(strand_, where, timeouts_.connect);
    watch.stream = stream;
    if (stream && !stopping_) {
      const auto commands =
          sentinel_commands({"SUBSCRIBE", "+switch-master", "+failover-state-reconf-slaves"});
      auto subscribing = converse(strand_, stream, commands, timeouts_.command);
      auto [replies, trouble] = co_await std::move(subscribing);
      for (const auto& reply : replies) {
        if (trouble.empty() && reply.type == redis_reply::kind::error) trouble = reply.text;
      }
      why = std::move(trouble);
      if (why.empty()) failing = false;
      reply_reader reader;
      std::array<char, 4096> received;
      while (why.empty() && !stopping_) {
        auto [error, size] = co_await stream->read_some(asio::buffer(received));
        if (error) {
          why = "lost: " + error.message();
          break;
        }
        try {
          reader.feed(std::string_view(received.data(), size));
          while (auto message = reader.next()) {
            if (!moved_away(*message)) continue;
            // This sentinel names the new master already; the others may not yet.
            ++master_switches_;
            ask_first(watch.node);
            drop("the sentinels moved " + master_name + " to a new master");
            retry_pause_.cancel();  // down and waiting to retry: the master is there now
          }
        } catch (const redis_protocol_error& broken) {
          why = std::string("not a Redis reply: ") + broken.what();
        }
      }
      stream->close();
    }
    watch.stream.reset();
    if (stopping_) break;
    // Until it is back, the master's moves are heard from the other sentinels, or found on
    // the next reconnect.
    const auto message = masked(redacted(why), settings_.sentinel->password);
    if (!std::exchange(failing, true)) {
      spdlog::warn("redis {} watch of sentinel {}: {}; watching again every {} ms", role_,
                   where.to_string(), message, timeouts_.backoff_max.count());
    } else {
      spdlog::debug("redis {} watch of sentinel {} still failing: {}", role_, where.to_string(),
                    message);
    }
    watch.pause.expires_after(timeouts_.backoff_max);
    co_await watch.pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

// Redis does not echo passwords in its errors, but a log line is no place to rely on that.
std::string redis_connection::redacted(std::string text) const {
  return masked(std::move(text), settings_.password);
}

}  // namespace token_broker
