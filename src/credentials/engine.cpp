// The daemon's engine and refreshers: on boot_clock.
#include "token_broker/credentials/engine_impl.hpp"

namespace token_broker {

template class basic_refresher<boot_clock>;
template class basic_engine<boot_clock>;
template class basic_store_sync<boot_clock>;

}  // namespace token_broker
