#!/usr/bin/env bash
# Installs the Debian 12 packages token-broker is built, tested and demonstrated with.
# Idempotent: installs only what is missing, and touches nothing when all is there.
set -euo pipefail

packages=(
  g++ cmake make pkg-config
  libboost1.81-dev libssl-dev nlohmann-json3-dev libspdlog-dev
  libgtest-dev libgmock-dev
  libhiredis-dev redis-server
  libfaketime  # the Redis tests run replicas whose wall clock is off (LD_PRELOAD)
  clang-14 libclang-rt-14-dev  # libFuzzer, for scripts/fuzz.sh
  curl ca-certificates faketime
  systemd procps
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "installing: ${missing[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
