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
# ThreadSanitizer runs the suites of the real daemon (the tsan test preset's labels): it finds
# races where threads meet, and those are the daemon's (HTTP workers, the control loop, the
# audit writer); the unit tests' and the simulation's code runs on them there too.
targets=(token-broker binary_tests redis_tests sdk_tests)
[ "$preset" = tsan ] || targets+=(unit_tests simulation_tests)
# The Prometheus test runs the fake of WeCom as a process (in Release only: the asan preset
# leaves its label out).
[ "$preset" = release ] && targets+=(fake-wecom)
cmake --build --preset "$preset" --target "${targets[@]}"
echo "=== $preset: test"
reports="build/$preset/reports"
rm -rf "$reports" && mkdir -p "$reports"
ctest --preset "$preset" -j2
if compgen -G "$reports/*" >/dev/null; then
  cat "$reports"/*
  echo "=== $preset: sanitizer reports above" >&2
  exit 1
fi
