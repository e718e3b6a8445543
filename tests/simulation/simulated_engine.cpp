#include "simulated_engine.hpp"

#include "token_broker/credentials/engine_impl.hpp"

namespace token_broker {

template class basic_refresher<simulation::simulated_clock>;
template class basic_engine<simulation::simulated_clock>;
template class basic_store_sync<simulation::simulated_clock>;

}  // namespace token_broker
