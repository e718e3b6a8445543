#!/usr/bin/env bash
# Installs the Debian 12 packages token-broker is built, tested and demonstrated with, and the
# npm packages of the tests (tests/sdk, tests/openapi). Idempotent: installs only what is
# missing, and touches nothing when all is there.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config
  libboost1.81-dev libssl-dev nlohmann-json3-dev libspdlog-dev
  libgtest-dev libgmock-dev
  libhiredis-dev redis-server
  libpugixml-dev  # WeCom's callback XML
  libfaketime  # the Redis tests run replicas whose wall clock is off (LD_PRELOAD)
  clang-14 libclang-rt-14-dev  # the sanitizer builds and libFuzzer (scripts/thorough.sh)
  curl ca-certificates faketime
  systemd procps
  prometheus  # prometheus and promtool: deploy/prometheus's rules and the dashboard's queries
  groff-base man-db  # the man page's check renders it
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$package")
done
# Node.js for the SDK test, by command: a nodejs package of another origin may bundle npm (and
# conflict with Debian's).
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)

if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  echo "installing: ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# The npm packages of the tests, exactly as locked, each only when its lock changed since:
# the SDK test's WeCom SDK, and the OpenAPI document's linter.
for tooling in tests/sdk tests/openapi; do
  dir="$(dirname "$0")/../$tooling"
  if [ ! "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    echo "installing: $tooling/node_modules (npm ci)"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
