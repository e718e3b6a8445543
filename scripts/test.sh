#!/usr/bin/env bash
# The full test suite: builds the Release and the ASan+UBSan presets and runs every test
# (unit, and the real binary against the fake of WeCom) under both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

for preset in release asan; do
  echo "=== $preset: build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "=== $preset: test"
  ctest --preset "$preset" -j2
done
