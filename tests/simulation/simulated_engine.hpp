// The engine and refreshers of the daemon, instantiated on simulated time.
#pragma once

#include "simulated_clock.hpp"
#include "token_broker/credentials/engine.hpp"

namespace token_broker::simulation {

using simulated_engine = basic_engine<simulated_clock>;
using simulated_refresher = basic_refresher<simulated_clock>;

}  // namespace token_broker::simulation

namespace token_broker {
extern template class basic_refresher<simulation::simulated_clock>;
extern template class basic_engine<simulation::simulated_clock>;
}  // namespace token_broker
