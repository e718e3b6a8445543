// Upstream's answer to a gateway call as the gateway needs it: the status, the two fields it
// passes on, and the body written where the caller says, as Beast's buffer_body does. Beast's
// own response parser keeps every field in a container of its own, an allocation each, on
// every call.
#pragma once

#include <cstring>
#include <string>

#include "token_broker/core/asio.hpp"

namespace token_broker {

class api_answer_parser final : public http::basic_parser<false> {
 public:
  unsigned status() const { return status_; }
  // Empty when upstream sent none.
  const std::string& content_type() const { return content_type_; }
  const std::string& content_disposition() const { return content_disposition_; }

  // Where the next body bytes go: at most `size` of them at `data`. When it is full, reading
  // stops with http::error::need_buffer, as with buffer_body.
  void body_into(char* data, std::size_t size) {
    into_ = data;
    room_ = size;
  }
  // What is left of the room given to body_into().
  std::size_t room() const { return room_; }

 private:
  void on_request_impl(http::verb, beast::string_view, beast::string_view, int,
                       error_code&) override {}  // never called: this parses responses
  void on_response_impl(int code, beast::string_view, int, error_code&) override {
    status_ = static_cast<unsigned>(code);
  }
  void on_field_impl(http::field name, beast::string_view, beast::string_view value,
                     error_code&) override {
    if (name == http::field::content_type) content_type_.assign(value.data(), value.size());
    if (name == http::field::content_disposition) {
      content_disposition_.assign(value.data(), value.size());
    }
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(beast::string_view body, error_code& ec) override {
    return put(body, ec);
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, error_code& ec) override {
    return put(body, ec);
  }
  void on_finish_impl(error_code&) override {}

  std::size_t put(beast::string_view body, error_code& ec) {
    const auto taken = std::min(body.size(), room_);
    if (taken > 0) std::memcpy(into_, body.data(), taken);
    into_ += taken;
    room_ -= taken;
    if (taken < body.size()) ec = http::error::need_buffer;
    return taken;
  }

  unsigned status_ = 0;
  std::string content_type_;
  std::string content_disposition_;
  char* into_ = nullptr;
  std::size_t room_ = 0;
};

}  // namespace token_broker
