#!/usr/bin/env bash
# The full test suite: builds the Release, ASan+UBSan and TSan presets and runs every test
# (unit, and the real binary against the fake of WeCom) under each; then each libFuzzer
# target for FUZZ_SECONDS (60) and the fault soak for SOAK_SECONDS (180).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

for preset in release asan tsan; do
  echo "=== $preset: build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "=== $preset: test"
  # ThreadSanitizer writes its reports here (log_path in the preset), the brokers' too: a
  # race in a child process must fail the run even where its test would not notice.
  reports="build/$preset/reports"
  rm -rf "$reports" && mkdir -p "$reports"
  ctest --preset "$preset" -j2
  if compgen -G "$reports/*" >/dev/null; then
    cat "$reports"/*
    echo "=== $preset: sanitizer reports above" >&2
    exit 1
  fi
done

echo "=== fuzz: each target for ${FUZZ_SECONDS:-60} s"
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"

echo "=== fault soak: ${SOAK_SECONDS:-180} s"
scripts/soak.sh "${SOAK_SECONDS:-180}"
