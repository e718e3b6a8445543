// Keeps the credentials this replica holds and the shared store in agreement, at a cost in
// steady state that does not grow with the number of credentials (none polls the store):
//  - an event names a credential: it is compared with the store (the events of a burst
//    together, in batches);
//  - when the store is reachable again (a connection came back: events may have been lost,
//    a restarted Redis may have lost every key), and every sweep period otherwise: every
//    credential is compared, in batches.
// Comparing reads digests, not values (token_store::digests). A credential whose stored value
// is newer loads it; held values the store lacks or holds older are written back in batches
// (token_store::save_all), never over a newer one.
//
// Part of the engine: it runs on the engine's strand and walks the engine's registry.
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "token_broker/core/asio.hpp"
#include "token_broker/credentials/credential.hpp"
#include "token_broker/credentials/token_lifecycle.hpp"
#include "token_broker/store/token_store.hpp"

namespace token_broker {

// What comparing one credential's held value with the store's says.
enum class store_difference {
  none,             // they agree (expiries within expiry_rounding)
  store_is_newer,   // load: another value that lives longer, or the same ending sooner
  store_is_behind,  // write back: nothing stored, an older value, or the same ending later
};

// `held`: the value this replica serves, or nullptr.
store_difference compare_with_store(const token* held, const stored_digest& stored);

template <class Clock>
class basic_engine;

template <class Clock>
class basic_store_sync {
 public:
  using timer = asio::basic_waitable_timer<Clock>;

  explicit basic_store_sync(basic_engine<Clock>& engine);

  // On the engine's strand. `id`: an event named it; nullopt: compare everything.
  void notice(std::optional<credential_id> id);
  asio::awaitable<void> run();
  void stop();

 private:
  using refresher = typename basic_engine<Clock>::refresher;
  asio::awaitable<void> compare(std::vector<std::shared_ptr<refresher>> credentials, bool sweep);

  basic_engine<Clock>& engine_;
  timer wake_;
  bool idle_ = false;              // run() waits for news; notice() wakes it
  bool sweep_due_ = false;         // compare everything next
  std::set<credential_id> named_;  // named by events since the last comparison
  bool stopping_ = false;
};

}  // namespace token_broker
