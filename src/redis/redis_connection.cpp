#include "token_broker/redis/redis_connection.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <array>
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

// A command in RESP, as Redis reads it.
std::string encoded(const std::vector<std::string>& arguments) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& argument : arguments) {
    argv.push_back(argument.data());
    lengths.push_back(argument.size());
  }
  char* command = nullptr;
  const auto size =
      redisFormatCommandArgv(&command, static_cast<int>(argv.size()), argv.data(), lengths.data());
  if (size < 0) throw std::bad_alloc();
  std::string bytes(command, static_cast<std::size_t>(size));
  redisFreeCommand(command);
  return bytes;
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
      role_(std::move(role)),
      timeouts_(timeouts),
      state_changed_(strand_) {}

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
}

void redis_connection::stop() {
  asio::post(strand_, [self = shared_from_this()] {
    self->stopping_ = true;
    self->notify();
  });
}

asio::awaitable<void> redis_connection::run() {
  const auto self = shared_from_this();  // the loop keeps its connection alive
  // Restarted after an unexpected end: the connection it may have left behind is dropped.
  up_.store(false, std::memory_order_release);
  drop("restarted");
  std::mt19937_64 random(std::random_device{}());
  asio::steady_timer pause(strand_);
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
                   role_, endpoint_.to_string(), last_error_);
    } else {
      spdlog::debug("redis {} still unreachable (attempt {}): {}", role_, failed_attempts,
                    last_error_);
    }
    // Equal jitter, so replicas that lost Redis together do not return in step.
    const auto jittered = backoff / 2 + milliseconds{std::uniform_int_distribution<long>(
                                            0, static_cast<long>(backoff.count() / 2))(random)};
    pause.expires_after(jittered);
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    backoff = std::min(backoff * 2, timeouts_.backoff_max);
  }
  drop("stopping");
}

// One connection from connect to loss. True if it was up at some point.
asio::awaitable<bool> redis_connection::connect_and_serve() {
  auto [stream, why] = co_await redis_stream::open(strand_, endpoint_, timeouts_.connect);
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
  up_.store(true, std::memory_order_release);
  tried_.store(true, std::memory_order_release);
  spdlog::info("redis {} connected to {}/{}{}", role_, endpoint_.to_string(), settings_.database,
               endpoint_.tls ? " (TLS)" : "");
  if (on_up_) on_up_();

  co_await check_health(stream);
  up_.store(false, std::memory_order_release);
  if (!stopping_) {
    spdlog::warn("redis {} connection to {} lost: {}; reconnecting, serving from memory", role_,
                 endpoint_.to_string(), last_error_);
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
  const auto answered = std::move(pending_.front());
  pending_.pop_front();
  answered->answered = true;
  answered->reply = std::move(reply);
  answered->answered_or_timeout.cancel();  // resumes the waiting coroutine, never inline
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

// Redis does not echo passwords in its errors, but a log line is no place to rely on that.
std::string redis_connection::redacted(std::string text) const {
  return masked(std::move(text), settings_.password);
}

}  // namespace token_broker
