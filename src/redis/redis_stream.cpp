#include "token_broker/redis/redis_stream.hpp"

#include <hiredis/hiredis.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>

#include "token_broker/core/tls_peer.hpp"
#include "token_broker/redis/reply_reader.hpp"

namespace token_broker {
namespace {

constexpr auto on_error = asio::as_tuple(asio::use_awaitable);

// The attempt to open a connection and its deadline: when the deadline passes first, what the
// attempt is waiting on is closed, and it ends with an error. The attempt looks at `timed_out`
// after each step too: a deadline that passed between two steps closed nothing that the next
// step waits on.
struct opening {
  bool over = false;
  bool timed_out = false;
  std::function<void()> abort;  // closes what the attempt waits on now
};

std::string handshake_failure(SSL* ssl, const error_code& error) {
  const long verdict = SSL_get_verify_result(ssl);
  if (verdict != X509_V_OK) {
    return std::string("TLS: Redis's certificate was rejected: ") +
           X509_verify_cert_error_string(verdict) + " (redis.tls.ca_file, redis.tls.server_name)";
  }
  return "TLS handshake failed: " + error.message();
}

}  // namespace

std::string redis_endpoint::to_string() const {
  if (!unix_path.empty()) return unix_path;
  const bool ipv6 = host.find(':') != std::string::npos;
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::shared_ptr<asio::ssl::context> make_redis_tls_context(const redis_tls_config& settings) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1);
  context->set_verify_mode(asio::ssl::verify_peer);
  error_code error;
  if (settings.ca_file) {
    context->load_verify_file(settings.ca_file->string(), error);
    if (error) {
      throw config_error("redis.tls.ca_file", "not a usable PEM bundle: " + error.message());
    }
  } else {
    context->set_default_verify_paths(error);
    if (error) throw config_error("redis.tls", "cannot load the system's CA store");
  }
  if (settings.cert_file) {
    context->use_certificate_chain_file(settings.cert_file->string(), error);
    if (error) {
      throw config_error("redis.tls.cert_file", "not a usable PEM certificate: " + error.message());
    }
    context->use_private_key_file(settings.key_file->string(), asio::ssl::context::pem, error);
    if (error) throw config_error("redis.tls.key_file", "not a usable PEM key: " + error.message());
    if (SSL_CTX_check_private_key(context->native_handle()) != 1) {
      throw config_error("redis.tls.key_file", "is not the key of redis.tls.cert_file");
    }
  }
  return context;
}

asio::awaitable<std::tuple<std::shared_ptr<redis_stream>, std::string>> redis_stream::open(
    asio::any_io_executor executor, const redis_endpoint& to, std::chrono::milliseconds limit) {
  using result = std::tuple<std::shared_ptr<redis_stream>, std::string>;
  auto state = std::make_shared<opening>();
  asio::steady_timer deadline(executor, limit);
  deadline.async_wait([state](const error_code& error) {
    if (error || state->over) return;
    state->timed_out = true;
    if (state->abort) state->abort();
  });
  const auto failed = [&](std::string why) {
    state->over = true;
    deadline.cancel();
    if (state->timed_out) why = "no connection within " + std::to_string(limit.count()) + " ms";
    return result{nullptr, std::move(why)};
  };
  const auto opened = [&](auto socket) {
    state->over = true;
    deadline.cancel();
    return result{std::make_shared<redis_stream>(std::move(socket)), std::string()};
  };

  if (!to.unix_path.empty()) {
    unix_socket socket(executor);
    state->abort = [&socket] {
      error_code ignored;
      socket.close(ignored);
    };
    auto [error] = co_await socket.async_connect(to.unix_path, on_error);
    if (error || state->timed_out) co_return failed("cannot connect: " + error.message());
    co_return opened(std::move(socket));
  }

  // Names are resolved on asio's resolver thread, never on this io thread.
  asio::ip::tcp::resolver resolver(executor);
  state->abort = [&resolver] { resolver.cancel(); };
  auto [resolve_error, addresses] =
      co_await resolver.async_resolve(to.host, std::to_string(to.port), on_error);
  if (resolve_error || addresses.empty() || state->timed_out) {
    co_return failed("cannot resolve " + to.host + ": " + resolve_error.message());
  }
  tcp_socket socket(executor);
  state->abort = [&socket] {
    error_code ignored;
    socket.close(ignored);
  };
  auto [connect_error, connected] = co_await asio::async_connect(socket, addresses, on_error);
  if (connect_error || state->timed_out) {
    co_return failed("cannot connect: " + connect_error.message());
  }
  // Commands are small and answered one by one; a peer that vanished without a FIN is noticed.
  error_code ignored;
  socket.set_option(asio::ip::tcp::no_delay(true), ignored);
  socket.set_option(asio::socket_base::keep_alive(true), ignored);
  if (!to.tls) co_return opened(std::move(socket));

  tls_socket secured(std::move(socket), *to.tls);
  state->abort = [&secured] {
    error_code closing;
    secured.lowest_layer().close(closing);
  };
  if (!expect_peer(secured.native_handle(), to.server_name.empty() ? to.host : to.server_name)) {
    co_return failed("TLS: cannot check the server name");
  }
  auto [handshake_error] =
      co_await secured.async_handshake(asio::ssl::stream_base::client, on_error);
  if (handshake_error || state->timed_out) {
    co_return failed(handshake_failure(secured.native_handle(), handshake_error));
  }
  co_return opened(std::move(secured));
}

asio::awaitable<std::tuple<error_code, std::size_t>> redis_stream::read_some(
    asio::mutable_buffer into) {
  auto reading =
      std::visit([&](auto& socket) { return socket.async_read_some(into, on_error); }, socket_);
  co_return co_await std::move(reading);
}

asio::awaitable<error_code> redis_stream::write(asio::const_buffer bytes) {
  auto writing =
      std::visit([&](auto& socket) { return asio::async_write(socket, bytes, on_error); }, socket_);
  auto [error, written] = co_await std::move(writing);
  (void)written;
  co_return error;
}

void redis_stream::close() {
  error_code ignored;
  std::visit(
      [&](auto& socket) {
        if constexpr (std::is_same_v<std::decay_t<decltype(socket)>, tls_socket>) {
          socket.lowest_layer().close(ignored);
        } else {
          socket.close(ignored);
        }
      },
      socket_);
}

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

asio::awaitable<std::tuple<std::vector<redis_reply>, std::string>> converse(
    asio::any_io_executor executor, std::shared_ptr<redis_stream> stream,
    const std::vector<std::vector<std::string>>& commands, std::chrono::milliseconds limit) {
  using result = std::tuple<std::vector<redis_reply>, std::string>;
  auto over = std::make_shared<bool>(false);
  asio::steady_timer deadline(executor, limit);
  deadline.async_wait([over, weak = std::weak_ptr(stream)](const error_code& error) {
    if (error || *over) return;
    if (const auto alive = weak.lock()) alive->close();
  });
  const auto ended = [&](std::vector<redis_reply> replies, std::string why) {
    *over = true;
    deadline.cancel();
    return result{std::move(replies), std::move(why)};
  };
  std::string request;
  for (const auto& command : commands) request += encoded(command);
  if (const auto error = co_await stream->write(asio::buffer(request))) {
    co_return ended({}, "write failed: " + error.message());
  }
  reply_reader reader;
  std::vector<redis_reply> replies;
  std::array<char, 4096> received;
  while (replies.size() < commands.size()) {
    auto [error, size] = co_await stream->read_some(asio::buffer(received));
    if (error) {
      co_return ended({}, error == asio::error::operation_aborted
                              ? "no answer within " + std::to_string(limit.count()) + " ms"
                              : "read failed: " + error.message());
    }
    try {
      reader.feed(std::string_view(received.data(), size));
      while (auto reply = reader.next()) replies.push_back(std::move(*reply));
    } catch (const redis_protocol_error& broken) {
      co_return ended({}, std::string("not a Redis reply: ") + broken.what());
    }
  }
  co_return ended(std::move(replies), {});
}

}  // namespace token_broker
