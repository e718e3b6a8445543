#include "token_broker/redis/redis_connection.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <random>

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

// Shared by the waiting coroutine and hiredis's callback (which owns one reference through
// its privdata): whichever of answer and timeout comes first decides.
struct redis_connection::pending_command {
  explicit pending_command(asio::strand<asio::any_io_executor>& strand)
      : answered_or_timeout(strand) {}
  asio::steady_timer answered_or_timeout;
  bool answered = false;
  bool abandoned = false;
  boost::system::error_code error;
  redis_reply reply;
};

redis_connection::redis_connection(asio::any_io_executor executor, redis_config settings,
                                   std::string role, redis_timeouts timeouts)
    : strand_(asio::make_strand(executor)),
      settings_(std::move(settings)),
      role_(std::move(role)),
      timeouts_(timeouts),
      state_changed_(strand_) {}

redis_connection::~redis_connection() {
  // run() holds a reference while it lives, so no socket wait or hiredis callback is left.
  if (context_) redisAsyncFree(context_);
}

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
  drop();
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
                   role_, endpoint(), last_error_);
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
  drop();
}

// One connection from connect to loss. True if it was up at some point.
asio::awaitable<bool> redis_connection::connect_and_serve() {
  redisAsyncContext* context = nullptr;
  if (!settings_.unix_path.empty()) {
    context = redisAsyncConnectUnix(settings_.unix_path.c_str());
  } else {
    // hiredis would resolve a name with a blocking getaddrinfo on this io thread; asio's
    // resolver does it on its own thread.
    const auto address = co_await resolve();
    if (!address || stopping_) co_return false;
    context = redisAsyncConnect(address->c_str(), settings_.port);
  }
  if (!context) {
    last_error_ = "out of memory";
    co_return false;
  }
  if (context->err) {
    last_error_ = context->errstr;
    redisAsyncFree(context);
    co_return false;
  }
  attach(context);

  co_await wait_until(steady_clock::now() + timeouts_.connect,
                      [this] { return connected_ || !context_ || stopping_; });
  if (!connected_) {
    if (context_ && !stopping_) last_error_ = "connect timed out";
    drop();
    co_return false;
  }
  // A peer that vanished without a FIN is noticed (TCP only: a unix socket has no keepalive,
  // and hiredis would take the refused option for a broken connection).
  if (settings_.unix_path.empty()) redisEnableKeepAlive(&context_->c);

  if (!co_await prepare_session()) {
    drop();
    co_return false;
  }
  up_.store(true, std::memory_order_release);
  tried_.store(true, std::memory_order_release);
  spdlog::info("redis {} connected to {}", role_, endpoint());
  if (on_up_) on_up_();

  co_await wait_until(steady_clock::time_point::max(), [this] { return !context_ || stopping_; });
  up_.store(false, std::memory_order_release);
  if (!stopping_) {
    spdlog::warn("redis {} connection to {} lost: {}; reconnecting, serving from memory", role_,
                 endpoint(), last_error_);
  }
  drop();
  co_return true;
}

asio::awaitable<std::optional<std::string>> redis_connection::resolve() {
  asio::ip::tcp::resolver resolver(strand_);
  auto [error, results] = co_await resolver.async_resolve(
      settings_.host, std::to_string(settings_.port), asio::as_tuple(asio::use_awaitable));
  if (error || results.empty()) {
    last_error_ = "cannot resolve " + settings_.host + ": " + error.message();
    co_return std::nullopt;
  }
  co_return results.begin()->endpoint().address().to_string();
}

// AUTH and SELECT, then the connect commands, then SUBSCRIBE for an events connection.
asio::awaitable<bool> redis_connection::prepare_session() {
  std::vector<std::vector<std::string>> setup;
  if (!settings_.password.empty()) setup.push_back({"AUTH", settings_.password});
  if (settings_.database != 0) setup.push_back({"SELECT", std::to_string(settings_.database)});
  for (auto& arguments : setup) {
    const std::string name = arguments.front();
    auto [error, reply] = co_await send(std::move(arguments));
    if (error || reply.type == redis_reply::kind::error) {
      last_error_ = name + " failed: " + (error ? error.message() : redacted(reply.text));
      co_return false;
    }
  }
  for (const auto& arguments : connect_commands_) {
    auto [error, reply] = co_await send(arguments);
    if (error) {
      last_error_ = arguments.front() + " failed: " + error.message();
      co_return false;
    }
    if (reply.type == redis_reply::kind::error) {
      spdlog::warn("redis {}: {} refused: {}", role_, arguments.front(), redacted(reply.text));
    }
  }
  if (!channel_.empty() &&
      redisAsyncCommand(context_, &redis_connection::on_message, this, "SUBSCRIBE %b",
                        channel_.data(), channel_.size()) != REDIS_OK) {
    last_error_ = "SUBSCRIBE failed";
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
  if (!context_) co_return std::tuple{make_error_code(redis_errc::not_connected), redis_reply{}};

  std::vector<const char*> argv;
  std::vector<std::size_t> argv_lengths;
  for (const auto& argument : arguments) {
    argv.push_back(argument.data());
    argv_lengths.push_back(argument.size());
  }
  auto pending = std::make_shared<pending_command>(strand_);
  auto callback_share = std::make_unique<std::shared_ptr<pending_command>>(pending);
  if (redisAsyncCommandArgv(context_, &redis_connection::on_reply, callback_share.get(),
                            static_cast<int>(argv.size()), argv.data(),
                            argv_lengths.data()) != REDIS_OK) {
    co_return std::tuple{make_error_code(redis_errc::not_connected), redis_reply{}};
  }
  callback_share.release();  // on_reply owns it now

  pending->answered_or_timeout.expires_after(timeouts_.command);
  co_await pending->answered_or_timeout.async_wait(asio::as_tuple(asio::use_awaitable));
  if (!pending->answered) {
    pending->abandoned = true;
    last_error_ = "no answer within " + std::to_string(timeouts_.command.count()) + " ms";
    drop();  // fails every other pending command too, and run() reconnects
    co_return std::tuple{make_error_code(redis_errc::timed_out), redis_reply{}};
  }
  co_return std::tuple{pending->error, std::move(pending->reply)};
}

asio::awaitable<void> redis_connection::wait_until(steady_clock::time_point deadline,
                                                   const std::function<bool()>& done) {
  // notify() cancels the timer; a cancel that misses an already-queued completion only
  // costs one more look at `done`.
  while (!done() && steady_clock::now() < deadline) {
    state_changed_.expires_at(std::min(deadline, steady_clock::now() + std::chrono::hours{1}));
    co_await state_changed_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

void redis_connection::attach(redisAsyncContext* context) {
  context_ = context;
  ++generation_;
  connected_ = false;
  read_watch_ = write_watch_ = {};
  socket_.emplace(strand_, context->c.fd);
  context->data = this;
  context->ev.data = this;
  context->ev.addRead = &redis_connection::add_read;
  context->ev.delRead = &redis_connection::del_read;
  context->ev.addWrite = &redis_connection::add_write;
  context->ev.delWrite = &redis_connection::del_write;
  context->ev.cleanup = &redis_connection::cleanup;
  redisAsyncSetDisconnectCallback(context, &redis_connection::on_disconnect);
  // Also asks for writability, which is how hiredis learns that connect() finished.
  redisAsyncSetConnectCallback(context, &redis_connection::on_connect);
}

// Closes the connection now; hiredis answers every pending command with "no reply" and
// calls cleanup(). Never called from inside a hiredis callback.
void redis_connection::drop() {
  if (context_) redisAsyncFree(context_);
}

std::string redis_connection::endpoint() const {
  if (!settings_.unix_path.empty()) return settings_.unix_path;
  const bool ipv6 = settings_.host.find(':') != std::string::npos;
  return (ipv6 ? "[" + settings_.host + "]" : settings_.host) + ":" +
         std::to_string(settings_.port) + "/" + std::to_string(settings_.database);
}

// Redis does not echo passwords in its errors, but a log line is no place to rely on that.
std::string redis_connection::redacted(std::string text) const {
  if (settings_.password.empty()) return text;
  for (auto at = text.find(settings_.password); at != std::string::npos;
       at = text.find(settings_.password, at)) {
    text.replace(at, settings_.password.size(), "***");
  }
  return text;
}

// Waits for the socket to be ready in `direction` and lets hiredis act, for as long as
// hiredis wants that direction watched (its add/del hooks set `wanted`).
void redis_connection::watch(socket_watch& state,
                             asio::posix::stream_descriptor::wait_type direction,
                             void (*handle)(redisAsyncContext*)) {
  if (state.waiting || !socket_) return;
  state.waiting = true;
  socket_->async_wait(direction, [self = shared_from_this(), generation = generation_, &state,
                                  direction, handle](auto error) {
    if (generation != self->generation_) return;  // that connection is gone, and `state` reset
    state.waiting = false;
    if (error || !state.wanted) return;
    handle(self->context_);
    if (generation == self->generation_ && state.wanted) self->watch(state, direction, handle);
  });
}

void redis_connection::on_connect(const redisAsyncContext* context, int status) {
  auto* self = static_cast<redis_connection*>(context->data);
  if (status == REDIS_OK) {
    self->connected_ = true;
  } else {
    self->last_error_ = context->errstr;
  }
  self->notify();
}

void redis_connection::on_disconnect(const redisAsyncContext* context, int status) {
  auto* self = static_cast<redis_connection*>(context->data);
  if (status != REDIS_OK && context->errstr[0] != '\0') self->last_error_ = context->errstr;
}

void redis_connection::on_reply(redisAsyncContext* context, void* reply, void* data) {
  const std::unique_ptr<std::shared_ptr<pending_command>> share(
      static_cast<std::shared_ptr<pending_command>*>(data));
  auto& pending = **share;
  if (pending.abandoned) return;
  pending.answered = true;
  if (reply) {
    pending.reply = from_hiredis(*static_cast<const redisReply*>(reply));
  } else {
    pending.error = make_error_code(redis_errc::connection_lost);
  }
  (void)context;
  pending.answered_or_timeout.cancel();  // resumes the waiting coroutine, never inline
}

void redis_connection::on_message(redisAsyncContext* context, void* reply, void* data) {
  (void)context;
  auto* self = static_cast<redis_connection*>(data);
  if (!reply || !self->on_message_) return;  // no reply: the connection is going away
  const auto message = from_hiredis(*static_cast<const redisReply*>(reply));
  if (const auto payload = message_payload(message)) self->on_message_(*payload);
}

void redis_connection::add_read(void* data) {
  auto* self = static_cast<redis_connection*>(data);
  self->read_watch_.wanted = true;
  self->watch(self->read_watch_, asio::posix::stream_descriptor::wait_read, &redisAsyncHandleRead);
}

void redis_connection::del_read(void* data) {
  static_cast<redis_connection*>(data)->read_watch_.wanted = false;
}

void redis_connection::add_write(void* data) {
  auto* self = static_cast<redis_connection*>(data);
  self->write_watch_.wanted = true;
  self->watch(self->write_watch_, asio::posix::stream_descriptor::wait_write,
              &redisAsyncHandleWrite);
}

void redis_connection::del_write(void* data) {
  static_cast<redis_connection*>(data)->write_watch_.wanted = false;
}

// hiredis is done with the context and closes its socket itself: stop watching the fd and
// give it back without closing it.
void redis_connection::cleanup(void* data) {
  auto* self = static_cast<redis_connection*>(data);
  if (self->socket_) {
    boost::system::error_code ignored;
    self->socket_->cancel(ignored);
    self->socket_->release();
    self->socket_.reset();
  }
  self->context_ = nullptr;
  self->connected_ = false;
  ++self->generation_;
  self->notify();
}

}  // namespace token_broker
