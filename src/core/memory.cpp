#include "token_broker/core/memory.hpp"

#include <malloc.h>

namespace token_broker {

void release_free_memory() {
  malloc_trim(0);
}

}  // namespace token_broker
