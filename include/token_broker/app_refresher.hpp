// One app's token, kept fresh: a coroutine that drives token_lifecycle with real time and
// real gettoken calls, and the lock-free view every HTTP worker reads on the hot path.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "token_broker/asio.hpp"
#include "token_broker/config.hpp"
#include "token_broker/metrics.hpp"
#include "token_broker/published.hpp"
#include "token_broker/token_answer.hpp"
#include "token_broker/token_lifecycle.hpp"
#include "token_broker/token_store.hpp"
#include "token_broker/upstream_client.hpp"

namespace token_broker {

// What any thread may read about one app without taking a lock; replaced whole on change.
struct app_view {
  app_state state = app_state::unknown;
  std::optional<token> current;    // the held token unless revoked; check serve_until
  prepared_token_answers answers;  // current's 200 answers, when there is a current

  const token* servable(time_point now) const {
    return current && now < current->serve_until ? &*current : nullptr;
  }
  // The state as of `now`: a token can expire without anything being published.
  app_state state_at(time_point now) const {
    return state == app_state::fresh && !servable(now) ? app_state::unknown : state;
  }
};

// The answer to someone who needs the token: the token, or why there is none and when
// to come back.
struct token_outcome {
  std::shared_ptr<const app_view> view;  // with a servable token, or null
  std::optional<fetch_failure> failure;  // the last upstream failure, if that is the reason
  std::chrono::seconds retry_after{1};
};

class app_refresher : public std::enable_shared_from_this<app_refresher> {
 public:
  // How a refresher begins: as at start (a token with time left in the store is adopted),
  // or with credentials a reload changed (the store's token came from the old ones, so the
  // first token is fetched with the new ones, proving they work).
  enum class origin { configured, credentials_changed };

  // `wait_limit` bounds how long a caller waits for a refresh (upstream.timeout_ms).
  app_refresher(asio::any_io_executor executor, app_config app, const refresh_config& refresh,
                std::chrono::milliseconds wait_limit, shared_upstream& upstream, token_store& store,
                origin how = origin::configured);

  const app_config& app() const { return app_; }
  std::shared_ptr<const app_view> view() const { return view_.load(); }
  // For the hot path: read through a published<app_view>::reader.
  const published<app_view>& published_view() const { return view_; }
  const upstream_metrics& upstream_results() const { return upstream_results_; }

  void start();
  void stop();
  // A reload's refresh settings and wait limit, for the decisions still to come.
  void apply(const refresh_config& refresh, std::chrono::milliseconds wait_limit);

  // The token, waiting for an in-flight or imminent refresh if there is no valid one.
  asio::awaitable<token_outcome> wait_for_token();
  // A caller saw upstream reject `value` (SPEC §4 invalidate): compare, refresh once, answer.
  asio::awaitable<token_outcome> invalidate(std::string value);
  // The shared store holds a newer token (another replica's event, store_sync's sweep):
  // load it now.
  void store_changed();

 private:
  asio::awaitable<void> run();
  asio::awaitable<void> refresh();
  asio::awaitable<void> call_upstream(bool holds_permit);
  asio::awaitable<void> save_held();
  asio::awaitable<void> load_from_store();
  bool adopt_stored(const stored_token& stored);
  void record(const fetch_result& result, time_point started_at);
  asio::awaitable<token_outcome> wait_on_strand();
  asio::awaitable<token_outcome> invalidate_on_strand(std::string value);
  token_outcome unavailable(time_point now) const;
  void publish();
  double jitter_unit() { return std::uniform_real_distribution<double>(0.0, 1.0)(random_); }

  // Everything below is touched only on strand_.
  asio::strand<asio::any_io_executor> strand_;
  app_config app_;
  std::chrono::milliseconds wait_limit_;
  shared_upstream& upstream_;
  token_store& store_;
  token_lifecycle lifecycle_;
  asio::steady_timer wake_;                   // the refresher's sleep; cancelled to re-plan
  std::vector<asio::steady_timer*> waiters_;  // callers waiting for the next change
  std::minstd_rand random_;    // jitter needs spread, not quality: 8 bytes, not mt19937_64's 2.5 KB
  bool store_news_ = false;    // store_changed() since the last look at the store
  bool ignore_store_ = false;  // credentials changed: adopt nothing until a fetch succeeds
  bool stopping_ = false;

  upstream_metrics upstream_results_;  // any thread
  published<app_view> view_;
};

}  // namespace token_broker
