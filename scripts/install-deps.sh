#!/usr/bin/env bash
# Installs the Debian 12 packages token-broker is built, tested and demonstrated with, and the
# npm packages of the SDK test (tests/sdk). Idempotent: installs only what is missing, and
# touches nothing when all is there.
set -euo pipefail

packages=(
  g++ cmake make pkg-config
  libboost1.81-dev libssl-dev nlohmann-json3-dev libspdlog-dev
  libgtest-dev libgmock-dev
  libhiredis-dev redis-server
  libpugixml-dev  # WeCom's callback XML
  libfaketime  # the Redis tests run replicas whose wall clock is off (LD_PRELOAD)
  clang-14 libclang-rt-14-dev  # the sanitizer builds and libFuzzer (scripts/thorough.sh)
  curl ca-certificates faketime
  systemd procps
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

# The SDK test's packages, exactly as locked; again only when the lock changed since.
sdk="$(dirname "$0")/../tests/sdk"
if [ ! "$sdk/node_modules/.package-lock.json" -nt "$sdk/package-lock.json" ]; then
  echo "installing: $sdk/node_modules (npm ci)"
  npm ci --prefix "$sdk" --no-audit --no-fund --loglevel=error
fi
