#!/usr/bin/env bash
# Checks the systemd unit as shipped (systemd/token-broker.service, unmodified):
#   1. `systemd-analyze verify` reports no error and no warning;
#   2. `systemd-analyze security --offline` rates its exposure at most 2.5;
#   3. with a CONFIG, `token-broker --config CONFIG --check` accepts it when
#      $CREDENTIALS_DIRECTORY holds a stand-in for each LoadCredential= of the unit.
#
#   verify-unit.sh BINARY [UNIT [CONFIG]]    BINARY: the built token-broker
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
binary=${1:?usage: $0 BINARY [UNIT [CONFIG]]}
unit=$(realpath "${2:-$here/../../systemd/token-broker.service}")
config=${3:-}
max_exposure=2.5

fail() { echo "FAIL: $*" >&2; exit 1; }

command -v systemd-analyze >/dev/null ||
  fail "systemd-analyze not found (Debian package: systemd)"
[ -x "$binary" ] || fail "$binary is not an executable"
[ -f "$unit" ] || fail "$unit not found"
name=$(basename "$unit")
echo "unit: $unit"
systemd-analyze --version | sed -n 1p

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# verify insists that every Exec*= binary exists, and reads units only from its --root when
# given one; so it gets a scratch root holding the unit, the built binary where ExecStart=
# expects it, the host's /bin/kill for ExecReload=, and the targets every service is ordered
# against. Other units the unit names (network-online.target, redis-server.service) are
# absent there, which verify accepts silently, as it does on a host without Redis.
root=$scratch/root
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd/system" "$root/usr/local/bin" \
         "$root/usr/bin"
ln -s usr/bin "$root/bin"
cp "$unit" "$root/etc/systemd/system/$name"
cp "$binary" "$root/usr/local/bin/token-broker"
[ -x /bin/kill ] || fail "/bin/kill not found (Debian package: procps); ExecReload= uses it"
cp /bin/kill "$root/usr/bin/kill"
for target in sysinit.target basic.target shutdown.target; do
  cp "/lib/systemd/system/$target" "$root/usr/lib/systemd/system/"
done

echo "--- systemd-analyze verify --root=ROOT $name"
# verify exits 0 even when it warns (unknown keys, unparsable values are "ignoring" lines), so
# anything it prints counts as a failure.
status=0
systemd-analyze verify --root="$root" "$name" >"$scratch/verify.out" 2>&1 || status=$?
cat "$scratch/verify.out"
[ "$status" -eq 0 ] || fail "systemd-analyze verify exited $status"
[ ! -s "$scratch/verify.out" ] || fail "systemd-analyze verify printed the lines above"
echo "verify: no errors, no warnings"

# --threshold takes an integer on systemd's internal 0-100 scale, ten times the printed
# exposure: 25 means 2.5. The table goes to stdout; anything on stderr is a failure.
threshold=$(awk -v e="$max_exposure" 'BEGIN { printf "%d", e * 10 }')
echo "--- systemd-analyze security --offline=yes --root=ROOT --threshold=$threshold $name"
status=0
systemd-analyze security --offline=yes --root="$root" --threshold="$threshold" "$name" \
  >"$scratch/security.out" 2>"$scratch/security.err" || status=$?
cat "$scratch/security.err" >&2
grep '^✗' "$scratch/security.out" || true   # the settings that still cost exposure
score_line=$(grep -F 'Overall exposure level' "$scratch/security.out") ||
  fail "no exposure score in the output of systemd-analyze security"
echo "$score_line"
[ "$status" -eq 0 ] ||
  fail "systemd-analyze security exited $status: exposure above $max_exposure, or an error"
[ ! -s "$scratch/security.err" ] || fail "systemd-analyze security printed the lines above"

if [ -n "$config" ]; then
  echo "--- token-broker --config $config --check, with the unit's credentials"
  credentials=$scratch/credentials
  mkdir -m 0700 "$credentials"
  ids=$(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' "$unit")
  [ -n "$ids" ] || fail "the unit has no LoadCredential= line"
  for id in $ids; do
    printf 'stand-in-secret-for-%s\n' "$id" >"$credentials/$id"
    echo "credential: $id"
  done
  CREDENTIALS_DIRECTORY=$credentials "$binary" --config "$config" --check ||
    fail "$config does not pass --check with the unit's credentials"
  echo "config: valid, every secret_file resolves"
fi
echo "PASS"
