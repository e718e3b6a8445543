#!/usr/bin/env bash
# Builds the image of docker/Dockerfile with podman and checks it for real: run read-only,
# with no capabilities, on the host's network, the container fetches a token from the
# bundled fake of WeCom over verified TLS, hands it to a client with a bearer key, writes it
# to a real redis-server, passes its own HEALTHCHECK and runs as non-root. Needs root on
# Debian 12 and only Debian's archive: the base images are made with debootstrap (and kept,
# as is the image, so a second run is quick). Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
image=localhost/token-broker:latest
app=verify
corpid=ww00000000000000d0

fail() { echo "docker-verify: FAIL: $*" >&2; exit 1; }
source scripts/lib/containers.sh
step() { echo "==> [$((SECONDS - started)) s] $*"; }
[ "$(id -u)" -eq 0 ] || fail "run as root (podman, apt-get, debootstrap)"

step "packages and base images"
scripts/install-deps.sh  # the build of the fake, redis-server, curl
ensure_podman
ensure_base_images

step "image (podman build)"
# The build compiles; this machine's 2 cores are shared with other builds.
# --format docker: the OCI format has no HEALTHCHECK.
mkdir -p build && log=build/docker-verify-build.log
flock /tmp/build.lock "${podman[@]}" build --format docker --network host \
  -f docker/Dockerfile -t "$image" . >"$log" 2>&1 ||
  { tail -n 40 "$log" >&2; fail "podman build (whole log: $log)"; }
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
echo "image $image: $((size / 1000000)) MB"

step "fake WeCom and redis-server"
flock /tmp/build.lock sh -c 'cmake --preset release >/dev/null &&
  cmake --build --preset release --target fake-wecom >/dev/null'

work=$(mktemp -d /tmp/docker-verify.XXXXXX)
chmod 0755 "$work"
container=token-broker-verify-$$
pids=()
trap clean_up EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$work" --logfile "$work/redis.log" &
pids+=($!)

secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
build/release/tests/fake-wecom --port 0 --port-file "$work/fake.port" --ca-out "$work/ca.pem" \
  --app "$corpid:$secret" >"$work/fake.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
[ -s "$work/fake.port" ] || fail "fake WeCom did not start"
fake_port=$(cat "$work/fake.port")
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" ping >/dev/null 2>&1 || fail "redis-server did not start"

step "container"
# Secrets as Docker secrets are: files under /run/secrets, readable by the broker's uid only.
key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
mkdir -m 0700 "$work/secrets"
printf '%s\n' "$secret" >"$work/secrets/wecom_secret"
chown 10001 "$work/secrets/wecom_secret" && chmod 0400 "$work/secrets/wecom_secret"
printf 'Authorization: Bearer %s\n' "$key" >"$work/auth-header"
chmod 0600 "$work/auth-header"
broker_port=$(free_port)
cat >"$work/config.json" <<EOF
{
  // Written by scripts/docker-verify.sh for one run.
  "listen": "127.0.0.1:$broker_port",
  "threads": 2,
  "upstream": { "base_url": "https://localhost:$fake_port", "ca_file": "/etc/token-broker/wecom-ca.pem" },
  "redis": { "url": "redis://127.0.0.1:$redis_port/0" },
  "apps": { "$app": { "corpid": "$corpid", "secret_file": "/run/secrets/wecom_secret" } },
  "clients": { "verify": { "key_sha256": "$(printf %s "$key" | sha256sum | cut -d' ' -f1)", "apps": ["$app"] } }
}
EOF
# Without systemd, podman logs errors about the health-check timer it cannot add: keep
# podman's stderr aside, shown on failure.
"${podman[@]}" run -d --name "$container" --network host --read-only --cap-drop=ALL \
  --security-opt no-new-privileges -e HEALTHCHECK_PORT="$broker_port" \
  -v "$work/config.json:/etc/token-broker/config.json:ro" \
  -v "$work/ca.pem:/etc/token-broker/wecom-ca.pem:ro" \
  -v "$work/secrets/wecom_secret:/run/secrets/wecom_secret:ro" \
  "$image" >/dev/null 2>"$work/podman.err" || { cat "$work/podman.err" >&2; fail "podman run"; }

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$broker_port/healthz" >/dev/null && break
  [ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$container")" = true ] ||
    { "${podman[@]}" logs "$container" >&2; fail "the container exited"; }
  sleep 0.1
done

step "checks"
answer=$(curl -sf -H @"$work/auth-header" "http://127.0.0.1:$broker_port/v1/apps/$app/token") ||
  { "${podman[@]}" logs "$container" >&2; fail "no token from GET /v1/apps/$app/token"; }
token=$(printf '%s' "$answer" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || fail "no access_token in the answer"
echo "token: ${#token} characters"

status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$broker_port/v1/apps/$app/token")
[ "$status" = 401 ] || fail "a call without the bearer key got $status, not 401"

stored=""
for _ in $(seq 50); do
  stored=$(redis-cli -p "$redis_port" GET "wecom:access_token:$app")
  [ -n "$stored" ] && break
  sleep 0.1
done
[ "$stored" = "$token" ] || fail "Redis does not hold the token handed out"
echo "redis: wecom:access_token:$app holds it"

health=$("${podman[@]}" healthcheck run "$container" 2>&1) || fail "healthcheck: $health"
health=${health:-healthy}
echo "healthcheck: $health"

pid=$("${podman[@]}" inspect -f '{{.State.Pid}}' "$container")
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
caps=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
nnp=$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$pid/status")
[ "$uids" = "10001 10001 10001 10001" ] || fail "the broker runs as uid $uids, not 10001"
[ "$caps" = 0000000000000000 ] || fail "the broker has capabilities $caps"
[ "$nnp" = 1 ] || fail "the broker may gain privileges (NoNewPrivs $nnp)"
echo "process: uid 10001, no capabilities, no new privileges"

"${podman[@]}" stop -t 10 "$container" >/dev/null 2>>"$work/podman.err" ||
  { cat "$work/podman.err" >&2; fail "podman stop"; }
code=$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] || fail "the broker exited $code on SIGTERM"

echo
echo "docker-verify: OK — image $((size / 1000000)) MB, token ${#token} characters," \
  "healthcheck $health, $((SECONDS - started)) s"
