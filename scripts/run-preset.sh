#!/usr/bin/env bash
# Builds one CMake preset and runs its whole test suite. Sanitizer reports of every process
# (the brokers the tests start too) land in build/PRESET/reports (log_path in the preset): a
# report fails the run even where the test that caused it passed.
#
#   scripts/run-preset.sh release|asan|tsan
set -euo pipefail
cd "$(dirname "$0")/.."
preset=$1

echo "=== $preset: build"
cmake --preset "$preset" >/dev/null
# Only what the tests run: the soak, the fuzzers, the demo and the benchmarks build their own.
cmake --build --preset "$preset" \
  --target token-broker unit_tests simulation_tests binary_tests redis_tests sdk_tests
echo "=== $preset: test"
reports="build/$preset/reports"
rm -rf "$reports" && mkdir -p "$reports"
ctest --preset "$preset" -j2
if compgen -G "$reports/*" >/dev/null; then
  cat "$reports"/*
  echo "=== $preset: sanitizer reports above" >&2
  exit 1
fi
