#!/usr/bin/env bash
# Makes the .deb from the built release tree (cpack: no compile) and checks it for real:
# lintian without errors, then in a clean bookworm container running systemd as PID 1:
# `apt-get install ./token-broker_*.deb` starts the service; configured against the fake of
# WeCom on the host it hands out a token; a reload adds an app; an upgrade to a rebuilt
# package keeps the edited conffile and restarts the service; a purge leaves nothing behind.
# Needs root on Debian 12 and only Debian's archive. The base image (debootstrap, as
# scripts/docker-verify.sh makes it) and the systemd image are kept, so a rerun is quick.
# Everything it starts is stopped on exit.
#
#   scripts/deb-verify.sh      MAN_PAGE=FILE: a manual page other than docs/token-broker.8
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
base=docker.io/library/debian:bookworm
image=localhost/token-broker-deb-verify:systemd

fail() { echo "deb-verify: FAIL: $*" >&2; exit 1; }
source scripts/lib/containers.sh
step() { echo "==> [$((SECONDS - started)) s] $*"; }
[ "$(id -u)" -eq 0 ] || fail "run as root (podman, apt-get, debootstrap)"

step "packages"
# dpkg-dev: dpkg-shlibdeps, which fills in Depends.
ensure_podman lintian dpkg-dev

work=$(mktemp -d /tmp/deb-verify.XXXXXX)
container=token-broker-deb-verify-$$
pids=()
trap clean_up EXIT

step "build tree"
# Up to date after CI's build, so this compiles nothing; it also writes CPackConfig.cmake.
flock /tmp/build.lock sh -c 'cmake --preset release >/dev/null &&
  cmake --build --preset release --target token-broker fake-wecom >/dev/null'

step "package"
man_page=${MAN_PAGE:-$PWD/docs/token-broker.8}
pack() {  # pack RELEASE: the .deb with that Debian revision, in $work/RELEASE
  cpack --config build/release/CPackConfig.cmake -B "$work/$1" \
    -D CPACK_DEBIAN_PACKAGE_RELEASE="$1" -D CPACK_TOKEN_BROKER_MAN_PAGE="$man_page" \
    >"$work/cpack-$1.log" 2>&1 || { cat "$work/cpack-$1.log" >&2; fail "cpack"; }
  ls "$work/$1"/token-broker_*-"$1"_*.deb
}
deb=$(pack 1)
echo "$(basename "$deb"): $(($(stat -c %s "$deb") / 1000)) kB"
dpkg-deb -f "$deb" Depends

step "lintian"
# Warnings, each explained in cmake/packaging.cmake; errors fail the run.
lintian --display-level '>=warning' "$deb" 2>&1 | grep -v 'root privileges' >"$work/lintian.out" ||
  true
cat "$work/lintian.out"
! grep -q '^E: ' "$work/lintian.out" || fail "lintian reports errors"
echo "lintian: $(grep -c '^E: ' "$work/lintian.out" || true) errors," \
  "$(grep -c '^W: ' "$work/lintian.out" || true) warnings"

step "images"
ensure_base_images
if ! "${podman[@]}" image exists "$image"; then
  mkdir "$work/context"
  printf '%s\n' "FROM $base" \
    'RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \' \
    '    --no-install-recommends systemd systemd-sysv curl ca-certificates >/dev/null' \
    >"$work/context/Containerfile"
  "${podman[@]}" build --network host -t "$image" "$work/context" >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; fail "podman build of $image"; }
fi

step "fake WeCom"
# Two apps: the first configured at once, the second added by a reload.
corpid_first=ww00000000000000e1
corpid_second=ww00000000000000e2
secret_first=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
secret_second=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
build/release/tests/fake-wecom --port 0 --port-file "$work/fake.port" --ca-out "$work/ca.pem" \
  --app "$corpid_first:$secret_first" --app "$corpid_second:$secret_second" \
  >"$work/fake.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
[ -s "$work/fake.port" ] || fail "fake WeCom did not start"
fake_port=$(cat "$work/fake.port")

step "container (systemd as PID 1)"
# The host's network: the container reaches the fake at 127.0.0.1, and apt the mirror.
"${podman[@]}" run -d --name "$container" --network host --systemd=always "$image" /sbin/init \
  >/dev/null 2>"$work/podman.err" || { cat "$work/podman.err" >&2; fail "podman run"; }
inside() { "${podman[@]}" exec "$container" "$@"; }
state=""
for _ in $(seq 300); do
  state=$(inside systemctl is-system-running 2>/dev/null || true)
  case $state in running | degraded) break ;; esac
  sleep 0.1
done
case $state in running | degraded) ;; *) fail "systemd in the container is '$state'" ;; esac
echo "systemd: $state"

journal() { inside journalctl -u token-broker --no-pager -o cat | tail -n 20 >&2; }
# The service's MainPID once it is active (Type=notify: READY=1 sent), else fail.
wait_active() {
  local pid=0
  for _ in $(seq 300); do
    if [ "$(inside systemctl is-active token-broker 2>/dev/null || true)" = active ]; then
      pid=$(inside systemctl show -P MainPID token-broker)
      [ "$pid" != 0 ] && { echo "$pid"; return; }
    fi
    sleep 0.1
  done
  journal
  fail "token-broker is not active"
}
# GET a token from the broker in the container: prints its length, never the token.
token_length() {
  local answer token
  answer=$(inside curl -sf --max-time 10 "http://127.0.0.1:$broker_port/v1/apps/$1/token") ||
    { journal; fail "no token for app $1"; }
  token=$(printf '%s' "$answer" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
  [ -n "$token" ] || fail "no access_token in the answer for app $1"
  echo "${#token}"
}

step "install $(basename "$deb")"
# The container shares the host's network, where the packaged config listens.
! (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null ||
  fail "127.0.0.1:8080 is taken on this host: the packaged config listens there"
"${podman[@]}" cp "$deb" "$container:/tmp/"
inside apt-get update -qq
inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "/tmp/$(basename "$deb")" \
  >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "apt-get install"; }
pid=$(wait_active)
echo "token-broker: active as shipped (pid $pid), $(inside systemctl is-enabled token-broker)"
# The unit as packaged: no error or warning (the man page is not installed in the container).
inside systemd-analyze verify --man=no token-broker.service ||
  fail "systemd-analyze verify of the packaged unit"

step "configure against the fake WeCom, restart"
broker_port=$(free_port)
"${podman[@]}" cp "$work/ca.pem" "$container:/etc/token-broker/wecom-ca.pem"
inside chmod 0644 /etc/token-broker/wecom-ca.pem
# Secrets through stdin, into root-only files the unit loads as credentials.
printf '%s\n' "$secret_first" | "${podman[@]}" exec -i "$container" \
  sh -c 'umask 077 && cat >/etc/token-broker/credentials/first'
printf '%s\n' "$secret_second" | "${podman[@]}" exec -i "$container" \
  sh -c 'umask 077 && cat >/etc/token-broker/credentials/second'
config() {  # config APPS_JSON: writes config.json with those apps
  printf '%s\n' '// Edited by scripts/deb-verify.sh.' \
    "{ \"listen\": \"127.0.0.1:$broker_port\"," \
    "  \"upstream\": { \"base_url\": \"https://localhost:$fake_port\"," \
    '                "ca_file": "/etc/token-broker/wecom-ca.pem" },' \
    "  \"apps\": { $1 } }" |
    "${podman[@]}" exec -i "$container" sh -c 'cat >/etc/token-broker/config.json'
}
first="\"first\": { \"corpid\": \"$corpid_first\", \"secret_file\": \"wecom_first\" }"
second="\"second\": { \"corpid\": \"$corpid_second\", \"secret_file\": \"wecom_second\" }"
config "$first"
inside systemctl restart token-broker || { journal; fail "systemctl restart"; }
pid=$(wait_active)
echo "first: token of $(token_length first) characters"

step "reload: add an app"
config "$first, $second"
edited=$(inside sha256sum /etc/token-broker/config.json)
reloads() { inside journalctl -u token-broker --no-pager -o cat | grep -c 'reload: .* applied'; }
before=$(reloads || true)
inside systemctl reload token-broker || { journal; fail "systemctl reload"; }
# systemctl returns once SIGHUP is sent, not once the daemon has read the file: wait for its
# log line.
for _ in $(seq 100); do [ "$(reloads || true)" -gt "$before" ] && break; sleep 0.1; done
[ "$(reloads || true)" -gt "$before" ] || { journal; fail "the journal shows no reload applied"; }
inside journalctl -u token-broker --no-pager -o cat | grep 'reload: .* applied' | tail -n 1
[ "$(wait_active)" = "$pid" ] || fail "the reload restarted the service"
echo "second: token of $(token_length second) characters"

step "upgrade to a rebuilt package"
deb2=$(pack 2)
"${podman[@]}" cp "$deb2" "$container:/tmp/"
# Not interactive: the packaged conffile is unchanged, so dpkg keeps the edited one unasked.
inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "/tmp/$(basename "$deb2")" \
  </dev/null >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log" >&2; fail "upgrade"; }
version=$(inside dpkg-query -W -f='${Version}' token-broker)
[ "$version" = "$(dpkg-deb -f "$deb2" Version)" ] || fail "version $version after the upgrade"
[ "$(inside sha256sum /etc/token-broker/config.json)" = "$edited" ] ||
  fail "the upgrade changed the edited config.json"
! inside sh -c 'ls /etc/token-broker/*.dpkg-*' 2>/dev/null || fail "dpkg left a .dpkg-* file"
new_pid=$(wait_active)
[ "$new_pid" != "$pid" ] || fail "the upgrade did not restart the service"
echo "token-broker $version: restarted (pid $pid -> $new_pid), edited config.json kept"
echo "first: $(token_length first), second: $(token_length second) characters"

step "purge"
inside env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq token-broker \
  >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "apt-get purge"; }
left=$(inside sh -c 'for path in /usr/bin/token-broker /etc/token-broker \
    /lib/systemd/system/token-broker.service /etc/systemd/system/token-broker.service.d \
    /etc/systemd/system/multi-user.target.wants/token-broker.service \
    /var/lib/systemd/deb-systemd-helper-enabled/token-broker.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/token-broker.service \
    /var/lib/systemd/deb-systemd-helper-masked/token-broker.service \
    /var/log/token-broker /var/log/private/token-broker /run/token-broker \
    /usr/share/doc/token-broker /usr/share/man/man8/token-broker.8.gz; do
    [ -e "$path" ] || [ -L "$path" ] && echo "$path"; done
  find / -xdev \( -path /proc -o -path /sys -o -path /tmp \) -prune -o \
    -name "*token-broker*" -print; true')
[ -z "$left" ] || fail "left behind: $left"
inside dpkg-query -W -f='${Status}\n' token-broker 2>/dev/null | grep -qv 'not-installed' &&
  fail "dpkg still knows the package: $(inside dpkg-query -W -f='${Status}' token-broker)"
[ "$(inside systemctl show -P LoadState token-broker)" = not-found ] ||
  fail "systemd still has a token-broker unit"
echo "nothing left: files, unit, enablement state, logs, dpkg status"

echo
echo "deb-verify: OK — $(basename "$deb") ($(($(stat -c %s "$deb") / 1000)) kB)," \
  "lintian $(grep -c '^W: ' "$work/lintian.out" || true) warnings, install/reload/upgrade/purge" \
  "in systemd, $((SECONDS - started)) s"
