// Giving the heap back after a burst.
#pragma once

namespace token_broker {

// Returns the free memory the allocator holds between live blocks to the system (glibc's
// malloc_trim). Costs a walk of the heap: call it after a burst, not on a hot path.
void release_free_memory();

}  // namespace token_broker
