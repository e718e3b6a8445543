#!/usr/bin/env bash
# The thorough stages, after scripts/test.sh: the whole suite under ASan+UBSan and under
# ThreadSanitizer, each libFuzzer target for FUZZ_SECONDS (30), and the fault soak for
# SOAK_SECONDS (120). About 40 minutes on 2 cores; .ci/run runs it on every submission.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

scripts/run-preset.sh asan
scripts/run-preset.sh tsan

echo "=== fuzz: each target for ${FUZZ_SECONDS:-30} s"
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

echo "=== fault soak: ${SOAK_SECONDS:-120} s"
scripts/soak.sh "${SOAK_SECONDS:-120}"
