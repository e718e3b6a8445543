#include "token_broker/http/responses.hpp"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

// ordered_json: keys go out in the order SPEC §4 lists them.

namespace token_broker {

response json_response(http::status status, std::string body) {
  response reply{status, 11};
  reply.set(http::field::content_type, "application/json");
  // Tokens are credentials: no proxy or client cache may keep an answer.
  reply.set(http::field::cache_control, "no-store");
  reply.body() = std::move(body);
  reply.prepare_payload();
  return reply;
}

response text_response(http::status status, std::string body) {
  auto reply = json_response(status, std::move(body));
  reply.set(http::field::content_type, "text/plain; charset=utf-8");
  return reply;
}

response error_response(http::status status, std::string_view code, std::string_view message) {
  return json_response(status,
                       nlohmann::ordered_json{{"error", code}, {"message", message}}.dump());
}

std::string response_head(const response& reply) {
  // The bytes Beast's serializer writes, formatted in one string: written with the body in
  // one call, the answer leaves without a trip through the event loop's queue.
  const auto reason = http::obsolete_reason(reply.result());
  std::string head;
  head.reserve(160);
  head.append("HTTP/1.1 ").append(std::to_string(reply.result_int())).append(" ");
  head.append(reason.data(), reason.size()).append("\r\n");
  for (const auto& field : reply) {
    head.append(field.name_string().data(), field.name_string().size()).append(": ");
    head.append(field.value().data(), field.value().size()).append("\r\n");
  }
  head.append("\r\n");
  return head;
}

formatted_response format_response(unsigned status, std::initializer_list<header_field> fields,
                                   std::string body) {
  const auto reason = http::obsolete_reason(static_cast<http::status>(status));
  formatted_response formatted{.status = status, .head = {}, .body = std::move(body)};
  auto& head = formatted.head;
  head.reserve(192);
  head.append("HTTP/1.1 ").append(std::to_string(status)).append(" ");
  head.append(reason.data(), reason.size()).append("\r\n");
  for (const auto& [name, value] : fields) {
    if (!value.empty()) head.append(name).append(": ").append(value).append("\r\n");
  }
  head.append("Content-Length: ").append(std::to_string(formatted.body.size())).append("\r\n");
  return formatted;
}

token_answer our_token_answer(std::shared_ptr<const credential_view> view, time_point now) {
  const auto expires_in = seconds_left(*view->current, now);
  const auto body = view->answers.ours();
  return token_answer{std::move(view), body, expires_in};
}

token_answer wecom_token_answer(std::shared_ptr<const credential_view> view, time_point now) {
  const auto expires_in = seconds_left(*view->current, now);
  const auto body = view->answers.wecom();
  return token_answer{std::move(view), body, expires_in};
}

unsigned status_of(const answer& outgoing) {
  if (const auto* other = std::get_if<response>(&outgoing)) return other->result_int();
  if (const auto* relayed = std::get_if<relayed_answer>(&outgoing)) {
    return relayed->head.result_int();
  }
  if (const auto* formatted = std::get_if<formatted_response>(&outgoing)) {
    return formatted->status;
  }
  return 200;
}

token_answer_bytes::token_answer_bytes(const token_answer& outgoing, bool keep_alive)
    : body_(outgoing.body) {
  // By hand rather than with fmt: this runs for every token answer, and the profile showed
  // fmt's format-string parsing as the largest cost left in it.
  seconds_size_ = static_cast<std::size_t>(
      std::to_chars(seconds_.begin(), seconds_.end(), outgoing.expires_in).ptr - seconds_.begin());
  const auto length =
      body_.before_expires_in.size() + seconds_size_ + body_.after_expires_in.size();

  // The headers json_response sets, in Beast's order; Beast adds Connection: close last.
  constexpr std::string_view status_and_fields =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
      "Content-Length: ";
  constexpr std::string_view closing = "\r\nConnection: close";
  static_assert(status_and_fields.size() + 20 + closing.size() + 4 <= sizeof(head_));
  char* out = std::copy(status_and_fields.begin(), status_and_fields.end(), head_.begin());
  out = std::to_chars(out, head_.end(), length).ptr;
  if (!keep_alive) out = std::copy(closing.begin(), closing.end(), out);
  out = std::copy_n("\r\n\r\n", 4, out);
  head_size_ = static_cast<std::size_t>(out - head_.begin());
}

std::array<asio::const_buffer, 4> token_answer_bytes::buffers() const {
  return {asio::buffer(head_.data(), head_size_), asio::buffer(body_.before_expires_in),
          asio::buffer(seconds_.data(), seconds_size_), asio::buffer(body_.after_expires_in)};
}

response unavailable_response(const credential_id& id, const token_outcome& outcome) {
  nlohmann::ordered_json body{{"error", "unavailable"}};
  const auto missing = "no valid " + std::string(to_string(id.kind)) + " for " + log_name(id);
  if (outcome.failure) {
    body["message"] =
        missing + (outcome.failure->kind == failure_class::rationed ? ": its call budget is spent"
                                                                    : ": upstream failing");
    body["errcode"] = outcome.failure->errcode;
    body["errmsg"] = outcome.failure->errmsg;
  } else {
    body["message"] = missing + " yet";
  }
  auto reply = json_response(http::status::service_unavailable, body.dump());
  reply.set(http::field::retry_after, std::to_string(outcome.retry_after.count()));
  return reply;
}

void describe(nlohmann::ordered_json& into, const credential_refresher& credential,
              time_point now) {
  const auto view = credential.view();
  const token* current = view->servable(now);
  into["state"] = to_string(view->state_at(now));
  into["expires_at"] = current ? nlohmann::ordered_json(unix_seconds(current->expires_at_wall))
                               : nlohmann::ordered_json(nullptr);
  // Counted here, on the broker's clock, so that a reader (`token-broker status`) never compares
  // expires_at with a clock of its own.
  into["expires_in"] = current ? nlohmann::ordered_json(seconds_left(*current, now))
                               : nlohmann::ordered_json(nullptr);
  into["last_refresh"] = nullptr;
  if (const auto& last = view->last_refresh) {
    auto& described = into["last_refresh"];
    using enum refresh_outcome::result;
    described["outcome"] = last->outcome == fetched   ? "ok"
                           : last->outcome == adopted ? "adopted"
                                                      : "failed";
    if (last->failure) {
      described["errcode"] = last->failure->errcode;
      described["errmsg"] = last->failure->errmsg;
    }
    described["seconds_ago"] =
        std::chrono::duration_cast<std::chrono::seconds>(now - last->at).count();
  }
}

response wecom_error_response(int errcode, std::string_view errmsg) {
  return json_response(http::status::ok,
                       nlohmann::ordered_json{{"errcode", errcode}, {"errmsg", errmsg}}.dump());
}

}  // namespace token_broker
