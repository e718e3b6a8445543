#include "token_broker/credentials/store_sync.hpp"

namespace token_broker {

store_difference compare_with_store(const token* held, const stored_digest& stored) {
  if (!held) return stored.present ? store_difference::store_is_newer : store_difference::none;
  if (!stored.present) return store_difference::store_is_behind;
  if (stored.digest != token_digest(held->value)) {
    // The save script decides again, atomically: a different value replaces only one that
    // ends sooner.
    return stored.expires_at > held->expires_at ? store_difference::store_is_newer
                                                : store_difference::store_is_behind;
  }
  if (stored.expires_at < held->expires_at - expiry_rounding) {
    return store_difference::store_is_newer;
  }
  if (stored.expires_at > held->expires_at + expiry_rounding) {
    return store_difference::store_is_behind;
  }
  return store_difference::none;
}

}  // namespace token_broker
