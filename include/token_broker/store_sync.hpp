// Keeps the tokens this replica holds and the shared store in agreement, at a cost in steady
// state that does not grow with the number of apps (no app polls the store):
//  - an event names an app: that app is compared with the store (the events of a burst
//    together, in batches);
//  - when the store is reachable again (a connection came back: events may have been lost,
//    a restarted Redis may have lost every key), and every sweep period otherwise: every app
//    is compared, in batches.
// Comparing reads digests, not values (token_store::digests). An app whose stored token is
// newer loads it (app_refresher::store_changed); held tokens the store lacks or holds older
// are written back in batches (token_store::save_all), never over a newer one.
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "token_broker/asio.hpp"
#include "token_broker/published.hpp"
#include "token_broker/token_lifecycle.hpp"
#include "token_broker/token_store.hpp"

namespace token_broker {

class app_set;
class app_refresher;

// What comparing one app's held token with the store's says.
enum class store_difference {
  none,             // they agree (expiries within expiry_rounding)
  store_is_newer,   // load: another token that lives longer, or the same ending sooner
  store_is_behind,  // write back: nothing stored, an older token, or the same ending later
};

// `held`: the token this replica serves, or nullptr.
store_difference compare_with_store(const token* held, const stored_digest& stored);

class store_sync : public std::enable_shared_from_this<store_sync> {
 public:
  // `store` and `apps` outlive it.
  store_sync(asio::any_io_executor executor, token_store& store, const published<app_set>& apps);

  void start();
  void stop();
  // What token_store::start reports, from any thread: an app id (an event: compare that app)
  // or "" (the store is reachable again: compare every app).
  void notice(const std::string& app_id);

 private:
  asio::awaitable<void> run();
  asio::awaitable<void> compare(std::vector<std::shared_ptr<app_refresher>> apps, bool sweep);

  // Everything below is touched only on strand_.
  asio::strand<asio::any_io_executor> strand_;
  token_store& store_;
  const published<app_set>& apps_;
  asio::steady_timer wake_;
  bool idle_ = false;            // run() waits for news; notice() wakes it
  bool sweep_due_ = false;       // compare every app next
  std::set<std::string> named_;  // apps named by events since the last comparison
  bool stopping_ = false;
};

}  // namespace token_broker
