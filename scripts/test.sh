#!/usr/bin/env bash
# The test suite (the README's second command): builds the Release preset and runs every test
# under it — unit tests, the real binary against the fake of WeCom, replicas on a real Redis,
# the systemd unit. About 10 minutes from a fresh clone on 2 cores, seconds when built.
# The thorough stages (sanitizers, fuzzing, the fault soak) are scripts/thorough.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/run-preset.sh release
