#!/usr/bin/env bash
# The fault soak (issue 6): builds the fault_soak program (release preset, or SOAK_PRESET)
# if needed and runs it for SECONDS (default 180): two replicas on one real Redis, 6-second
# tokens, clients on both, and every upstream fault class, early revocations, Redis restarts
# and a replica SIGKILLed and restarted, at random. Prints the figures and a verdict per
# assertion; exits non-zero when any assertion fails (1) or the soak could not run (2).
#
#   scripts/soak.sh [SECONDS]
#   SOAK_SEED=N      replay the chaos schedule of an earlier run (the run prints its seed)
#   SOAK_VERBOSE=1   print the chaos events as they happen
#   SOAK_LOG_DIR=D   keep the brokers' logs, Redis's log and the timeline in D
#   SOAK_PRESET=asan run against the AddressSanitizer build (memory bound then says little)
#
# Timing matters: on a shared machine, do not run it beside a compile.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-180}
preset=${SOAK_PRESET:-release}

scripts/install-deps.sh
[ -f "build/$preset/CMakeCache.txt" ] || cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" --target fault_soak token-broker

exec "build/$preset/tests/fault_soak" "$seconds"
