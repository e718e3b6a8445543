// Which app an access_token this broker handed out belongs to, for the drop-ins keyed by a
// token instead of an app (SPEC §4 /cgi-bin/get_jsapi_ticket?access_token=T, the gateway): an
// app's current token, and the tokens it replaced less than `grace` ago, which callers may
// still hold. Any other value is unknown, as WeCom would have it (40014).
#pragma once

#include <chrono>
#include <deque>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "token_broker/core/clock.hpp"

namespace token_broker {

class handed_out_tokens {
 public:
  static constexpr std::chrono::minutes grace{5};

  // Any thread. `app_id`'s token changed from `before` to `after` ("" for none).
  void changed(const std::string& app_id, std::string_view before, std::string_view after,
               time_point now);
  std::optional<std::string> app_of(const std::string& value, time_point now) const;

 private:
  struct holder {
    std::string app_id;
    std::optional<time_point> replaced_at;  // none while it is the app's current token
  };
  void forget_replaced_before(time_point cutoff);

  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, holder> by_value_;
  std::deque<std::pair<time_point, std::string>> replaced_;  // oldest first
};

}  // namespace token_broker
