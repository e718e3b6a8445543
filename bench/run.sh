#!/usr/bin/env bash
# The benchmark (issues 5, 13, 14): builds Release, then measures on this machine and prints
# one table.
#
#   1-2. GET /v1/apps/{app}/token (open, and with client auth) and /cgi-bin/gettoken with
#        wrk, the broker against nginx serving the broker's exact answer as a static file:
#        alternating runs, medians, the ratio broker/nginx. Servers and wrk on separate
#        cores (half each), so that latency is the server's; and the token path once more
#        as the issue's reference runs it, everything sharing every core (wrk -t2 -c64).
#   3.   JS-SDK (issue 14), placed as in 1-2: GET /v1/apps/{app}/jsapi_ticket, and
#        POST /v1/apps/{app}/jssdk_signature with a fixed url, noncestr and timestamp (so its
#        answer's bytes are fixed) for an app with both tickets (two SHA-1s) and for one with
#        the jsapi ticket only (one SHA-1), against nginx answering the same POST with the
#        same bytes from a static file.
#   4.   cold fan-in: 10,000 connections ask for an app the instant a reload adds it, while
#        upstream answers after 200 ms: gettoken calls (must be 1) and time to the last answer.
#   5.   resident memory with 1, 100, 1,000 and 10,000 configured apps.
#   6.   gettoken calls per app under full load with 10 s tokens, against the policy's floor.
#   7.   the gateway (issue 15): GET /v1/apps/{app}/api/cgi-bin/user/get through the broker
#        against nginx proxy_pass (an upstream keep-alive pool of the same size, session
#        reuse, the same CA verified), both in front of one HTTPS upstream: a second nginx
#        serving WeCom-shaped JSON under a CA made for the run. Alternating runs as in 1,
#        at full load, then at equal offered load (a pause between calls on each of wrk's
#        connections) for p99; then the upstream TLS handshakes per 100,000 gateway calls,
#        from the upstream's log.
#        Placement: the proxy (broker or nginx) and the upstream nginx share the servers'
#        half of the cores, each with one thread/worker per core of it, wrk has the other
#        half, as in 1: a call's latency is then the work of both servers, and wrk taking
#        turns with the upstream would charge the turn to whichever proxy runs. Both sides
#        get the same upstream on the same cores, which is what makes the ratio fair.
#   8.   TLS listeners and the audit log (SPEC v2 §3), placed as in 1: GET /v1/apps/{app}/token
#        over HTTPS on kept-alive connections, the broker's TLS listener against nginx serving
#        its exact answer over TLS with the same certificate and key (EC P-256, for 127.0.0.1,
#        under a CA made for the run); then the same with Connection: close, a new TLS
#        connection per request (handshakes per second: reported, no target; whether wrk's
#        reconnections resume their session is read from nginx's $ssl_session_reused); then
#        the plain token path on a broker writing an audit_log file against the same broker
#        without one, and the file's lines against the requests served.
#
# Environment: BENCH_DURATION (wrk run length, default 10s), BENCH_ROUNDS (runs per side,
# default 3), BENCH_FAN_IN (connections, default 10000), BENCH_LOAD_S (scenario 6's load,
# default 30), BENCH_SKIP_BUILD=1 (measure the binaries already in build/release),
# BENCH_ONLY (a comma-separated subset of throughput,tickets,fan_in,memory,calls,gateway,tls;
# default all of them).
# Run as root: it installs packages and raises the descriptor limit.
# Exits 0 when every measurement ran, even if a target is missed (FAIL in the table); 1 when
# something did not start or answered wrongly.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10s}
rounds=${BENCH_ROUNDS:-3}
fan_in_connections=${BENCH_FAN_IN:-10000}
load_seconds=${BENCH_LOAD_S:-30}
scenarios=${BENCH_ONLY:-throughput,tickets,fan_in,memory,calls,gateway,tls}
cores=$(nproc)

build=build/release
broker_binary=$build/token-broker
fake_binary=$build/tests/fake-wecom
fan_in_binary=$build/bench/bench-fan-in

# ---------------------------------------------------------------------------------------------
# Setup

install_dependencies() {
  scripts/install-deps.sh
  local missing=()
  for package in wrk nginx-light; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  echo "installing: ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # The package starts a system nginx on port 80; the benchmark runs its own.
  "${as_root[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
}

build_binaries() {
  cmake --preset release >/dev/null
  cmake --build --preset release --target token-broker fake-wecom bench-fan-in
}

. bench/common.sh  # the scripts run from the repository root

selected() { [[ ,$scenarios, == *,$1,* ]]; }
for scenario in ${scenarios//,/ }; do
  case $scenario in
    throughput | tickets | fan_in | memory | calls | gateway | tls) ;;
    *) die "BENCH_ONLY: unknown scenario $scenario (throughput, tickets, fan_in, memory, calls, gateway, tls)" ;;
  esac
done


http_status() { curl -s -o /dev/null -w '%{http_code}' "$@" || true; }

wait_for_status() {  # URL STATUS SECONDS [CURL_OPTIONS…]
  local deadline=$((SECONDS + $3))
  while [ "$(http_status "${@:4}" "$1")" != "$2" ]; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------------
# Placement: which cores the servers (broker or nginx) and wrk run on.
#
# isolated: the servers on the first half of the cores with one worker per core, wrk on the
#   other half with one thread per core. Latency then measures the server: when wrk shares
#   cores with a server that outruns it, its own threads take turns on a core and every
#   request of the waiting thread pays for the turn (the faster the server, the more).
# shared: no pinning, servers with one worker per core, wrk -t2 (the issue's reference).

placement=shared
server_threads=$cores
client_threads=2
server_pin=()
client_pin=()

set_placement() {
  placement=$1
  if [ "$placement" = isolated ] && [ "$cores" -ge 2 ]; then
    server_threads=$((cores / 2))
    client_threads=$((cores - server_threads))
    server_pin=(taskset -c "0-$((server_threads - 1))")
    client_pin=(taskset -c "$server_threads-$((cores - 1))")
  else
    server_threads=$cores
    client_threads=2
    server_pin=()
    client_pin=()
  fi
}

placement_note() {
  if [ "$placement" = isolated ] && [ "$cores" -ge 2 ]; then
    echo "servers on cores 0-$((server_threads - 1)) with $server_threads worker(s), wrk -t$client_threads -c64 on the rest"
  else
    echo "all sharing $cores cores: servers with $server_threads workers, wrk -t$client_threads -c64"
  fi
}

# ---------------------------------------------------------------------------------------------
# The fake of WeCom and the broker

fake_port=""
fake_pid=""
# Where the broker's upstream is, and the CA its certificate is checked against: the fake's,
# or scenario 7's nginx.
upstream_url=""
upstream_ca=""

# start_fake APP_FILE [fake-wecom flags…]: secrets come from the file, never the command line.
start_fake() {
  local app_file=$1
  shift
  rm -f "$work/fake.port"
  "$fake_binary" --ca-out "$work/ca.pem" --port-file "$work/fake.port" --app-file "$app_file" \
    "$@" >"$work/fake.log" 2>&1 &
  fake_pid=$!
  pids+=("$fake_pid")
  for _ in $(seq 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
  [ -s "$work/fake.port" ] || die "fake WeCom did not start: $(cat "$work/fake.log")"
  fake_port=$(cat "$work/fake.port")
  upstream_url=https://localhost:$fake_port
  upstream_ca=$work/ca.pem
}

# The number of gettoken calls the fake saw for CORPID.
fake_calls() {
  curl -s --cacert "$work/ca.pem" "https://localhost:$fake_port/fake/stats" |
    grep -o "\"$1\":[0-9]*" | cut -d: -f2 || echo 0
}

broker_port=""
broker_pid=""

# What write_config puts in every config it writes while set (scenario 8): the listeners, as
# JSON (else the one plain listener on 127.0.0.1:$broker_port), and an audit_log path.
config_listen=""
config_audit_log=""

# write_config FILE APPS_JSON [REFRESH_JSON [CLIENTS_JSON [GATEWAY_JSON]]]: written whole and
# then renamed, so a reload never reads half a file. Inline secrets, so the file is private.
write_config() {
  local file=$1 apps=$2
  local refresh=${3:-'{"jitter_s": 5}'} clients=${4:-} gateway=${5:-}
  (
    umask 077
    {
      echo '{'
      echo "  \"listen\": ${config_listen:-\"127.0.0.1:$broker_port\"},"
      echo "  \"threads\": $server_threads, \"log_level\": \"warn\","
      [ -n "$config_audit_log" ] && echo "  \"audit_log\": \"$config_audit_log\","
      echo "  \"upstream\": {\"base_url\": \"$upstream_url\","
      echo "               \"ca_file\": \"$upstream_ca\", \"timeout_ms\": 60000},"
      echo "  \"refresh\": $refresh,"
      [ -n "$clients" ] && echo "  \"clients\": $clients,"
      [ -n "$gateway" ] && echo "  \"gateway\": $gateway,"
      echo "  \"apps\": {"
      cat "$apps"
      echo '  }'
      echo '}'
    } >"$file.tmp"
  )
  mv "$file.tmp" "$file"
}

# start_broker CONFIG: returns once every app holds a token (/readyz 200).
start_broker() {
  "$broker_binary" --config "$1" --check >/dev/null 2>>"$work/broker.log" ||
    die "the broker rejected its config: $(tail -1 "$work/broker.log")"
  "${server_pin[@]}" "$broker_binary" --config "$1" 2>>"$work/broker.log" &
  broker_pid=$!
  pids+=("$broker_pid")
  wait_for_status "http://127.0.0.1:$broker_port/readyz" 200 300 ||
    die "the broker did not become ready: $(tail -3 "$work/broker.log")"
}

# app_entries COUNT PREFIX: JSON members "PREFIXi": {corpid, secret} for i in 0..COUNT-1 in
# $work/PREFIX.json, and the fake's matching CORPID:SECRET lines in $work/PREFIX.apps. The
# secret reaches awk through the environment, not its command line.
app_entries() {
  local count=$1 prefix=$2
  (
    umask 077
    export BENCH_SECRET=$run_secret
    awk -v n="$count" -v p="$prefix" 'BEGIN { s = ENVIRON["BENCH_SECRET"]
      for (i = 0; i < n; i++)
        printf "    \"%s%d\": {\"corpid\": \"ww%s%06d\", \"secret\": \"%s-%d\"}%s\n",
               p, i, p, i, s, i, (i < n - 1 ? "," : "") }' >"$work/$prefix.json"
    awk -v n="$count" -v p="$prefix" 'BEGIN { s = ENVIRON["BENCH_SECRET"]
      for (i = 0; i < n; i++) printf "ww%s%06d:%s-%d\n", p, i, s, i }' >"$work/$prefix.apps"
  )
}

# ---------------------------------------------------------------------------------------------
# wrk

# wrk latencies come as 250.00us, 1.20ms or 1.01s: microseconds, as an integer.
to_microseconds() {
  awk -v value="$1" 'BEGIN {
    number = value + 0; unit = value; sub(/^[0-9.]+/, "", unit)
    if (unit == "us") factor = 1; else if (unit == "ms") factor = 1000; else if (unit == "s") factor = 1000000
    else { print "?"; exit }
    printf "%d\n", number * factor + 0.5 }'
}

# Failed requests in wrk's output: answers other than 2xx/3xx, and socket errors.
wrk_errors() {
  awk '/Non-2xx or 3xx responses:/ {n += $NF}
       /Socket errors:/ {for (i = 4; i <= NF; i += 2) n += $i}
       END {print n + 0}' <<<"$1"
}

# More options for every wrk of run_wrk while set (scenario 8's -H 'Connection: close').
wrk_options=()

# run_wrk URL SCRIPT: prints "requests_per_second p50_us p99_us errors requests". The script
# sets the path and headers, which keeps secrets and keys out of the command line.
run_wrk() {
  local output
  output=$("${client_pin[@]}" wrk -t"$client_threads" -c64 -d"$duration" --latency \
    "${wrk_options[@]}" -s "$2" "$1")
  local rps p50 p99 errors requests
  rps=$(awk '/^Requests\/sec:/ {printf "%d", $2}' <<<"$output")
  p50=$(to_microseconds "$(awk '$1 == "50%" {print $2}' <<<"$output")")
  p99=$(to_microseconds "$(awk '$1 == "99%" {print $2}' <<<"$output")")
  errors=$(wrk_errors "$output")
  requests=$(awk '/ requests in / {print $1}' <<<"$output")
  echo "$rps $p50 $p99 $errors $requests"
}

median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# "low–high" of the runs: a wide spread means something else was using the cores.
spread() { printf '%s\n' "$@" | sort -n | awk 'NR == 1 {low = $1} {high = $1} END {print low "–" high}'; }

# wrk_script FILE PATH [AUTHORIZATION [BODY_FILE]]: a POST of BODY_FILE's JSON when given.
wrk_script() {
  (
    umask 077
    echo "wrk.path = \"$2\""
    [ -n "${3:-}" ] && echo "wrk.headers[\"Authorization\"] = \"$3\""
    if [ -n "${4:-}" ]; then
      echo 'wrk.method = "POST"'
      echo 'wrk.headers["Content-Type"] = "application/json"'
      echo "local body = assert(io.open(\"$4\", \"rb\"))"
      echo 'wrk.body = body:read("*a")'
      echo 'body:close()'
    fi
    true
  ) >"$1"
}

# fixed_rate_lua RATE: a wrk delay() that sends at RATE calls per second (per wrk thread)
# whatever the server's latency, as long as it keeps up: an open-loop schedule.
fixed_rate_lua() {
  cat <<EOF_LUA
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec* now);
]]
local clock_now = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock_now)  -- CLOCK_MONOTONIC
  return tonumber(clock_now.tv_sec) * 1000 + tonumber(clock_now.tv_nsec) / 1e6
end
local interval_ms, next_free = 1000 / $1, 0
function delay()
  local now = now_ms()
  local slot = math.max(now, next_free)
  next_free = slot + interval_ms
  return math.floor(slot - now)
end
EOF_LUA
}

# nginx_preamble DIR: what every nginx of the benchmark starts its configuration with, up to
# inside http {}; the caller adds its servers and the closing brace.
nginx_preamble() {
  local dir=$1
  cat <<EOF_NGINX
worker_processes $server_threads;
worker_rlimit_nofile $(ulimit -n);
$([ "$(id -u)" -eq 0 ] && echo "user root;")  # the files sit in a private temp dir
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  types {}
  default_type application/json;
  etag off;
  keepalive_requests 1000000;
  keepalive_timeout 65s;
  client_body_temp_path $dir/temp/body;
  proxy_temp_path $dir/temp/proxy;
  fastcgi_temp_path $dir/temp/fastcgi;
  uwsgi_temp_path $dir/temp/uwsgi;
  scgi_temp_path $dir/temp/scgi;
EOF_NGINX
}

# launch_nginx DIR: runs nginx with DIR/nginx.conf on the servers' cores; its pid in
# launched_pid.
launched_pid=""
launch_nginx() {
  "${server_pin[@]}" nginx -p "$1" -e "$1/error.log" -c "$1/nginx.conf" &
  launched_pid=$!
  pids+=("$launched_pid")
}

nginx_port=""
nginx_pid=""

start_nginx() {
  local dir=$work/nginx
  mkdir -p "$dir/root" "$dir/temp"
  {
    echo "# As a site would serve a small static JSON file, tuned for it: the reference to beat."
    nginx_preamble "$dir"
    cat <<EOF_NGINX
  # A body of a few hundred bytes goes out faster copied into the answer than by sendfile:
  # 130-140k req/s against 75-95k on one core of the project machine (100-110k with
  # tcp_nopush): one pread and one writev of header and body, rather than a writev of the
  # header and a sendfile of the body, two segments for the client to read.
  sendfile off;
  open_file_cache max=64 inactive=1h;
  server {
    listen 127.0.0.1:$nginx_port;
    root $dir/root;
    # The static module refuses POST (405); the error page sends the request on as a GET of
    # the same file, so a POST gets the same bytes a GET does.
    location / { add_header Cache-Control no-store; error_page 405 =200 \$uri; }
  }
}
EOF_NGINX
  } >"$dir/nginx.conf"
  launch_nginx "$dir"
  nginx_pid=$launched_pid
}

# serve_with_nginx PATH BODY_FILE: nginx ignores the query string when it serves a file.
serve_with_nginx() {
  local file=$work/nginx/root${1%%\?*}
  mkdir -p "$(dirname "$file")"
  cp "$2" "$file"
  chmod 644 "$file"
}

rows=()  # the table, markdown
add_row() { rows+=("| $1 | $2 | $3 | $4 | $5 |"); }

# answer_of PORT PATH BODY_OUT [AUTHORIZATION [BODY_FILE]]: the HTTP status of PATH on
# 127.0.0.1:PORT, its body in BODY_OUT. The path may hold a secret, so it goes to curl through
# a config file rather than the command line; a POST of BODY_FILE's JSON when given.
answer_of() {
  local port=$1 path=$2 out=$3 authorization=${4:-} request_body=${5:-}
  local curl_headers=()
  [ -n "$authorization" ] && curl_headers=(-H "Authorization: $authorization")
  (
    umask 077
    printf 'url = "http://127.0.0.1:%s%s"\n' "$port" "$path"
    if [ -n "$request_body" ]; then
      printf 'data-binary = "@%s"\n' "$request_body"
      echo 'header = "Content-Type: application/json"'
    fi
  ) >"$work/curl.conf"
  curl -s -K "$work/curl.conf" "${curl_headers[@]}" -o "$out" -w '%{http_code}' || true
}

# compare NAME TARGET_RATIO PATH [AUTHORIZATION [BODY_FILE]]: the broker against nginx serving
# the broker's exact answer as a static file. With BODY_FILE every request is a POST of it.
compare() {
  local name=$1 target_ratio=$2 path=$3 authorization=${4:-} request_body=${5:-}
  local body=$work/body.$RANDOM served=$work/served.$RANDOM script=$work/wrk.$RANDOM.lua
  [ "$(answer_of "$broker_port" "$path" "$body" "$authorization" "$request_body")" = 200 ] ||
    die "$name: the broker did not answer 200"
  serve_with_nginx "$path" "$body"
  answer_of "$nginx_port" "$path" "$served" "$authorization" "$request_body" >/dev/null
  cmp -s "$body" "$served" || die "$name: nginx does not serve the broker's bytes"
  wrk_script "$script" "$path" "$authorization" "$request_body"
  measure "$name" "$target_ratio" "$script" "$script"
}

# compare_proxied NAME TARGET_RATIO BROKER_PATH NGINX_PATH EXPECTED_BODY_FILE: GETs of
# different paths that the broker and an nginx proxy both must answer with EXPECTED_BODY_FILE.
compare_proxied() {
  local name=$1 target_ratio=$2 broker_path=$3 nginx_path=$4 expected=$5
  local body=$work/body.$RANDOM broker_script=$work/wrk.$RANDOM.lua nginx_script
  nginx_script=$work/wrk.$RANDOM.lua
  [ "$(answer_of "$broker_port" "$broker_path" "$body")" = 200 ] ||
    die "$name: the broker did not answer 200"
  cmp -s "$body" "$expected" || die "$name: the broker's answer is not upstream's"
  [ "$(answer_of "$nginx_port" "$nginx_path" "$body")" = 200 ] ||
    die "$name: nginx did not answer 200"
  cmp -s "$body" "$expected" || die "$name: nginx's answer is not upstream's"
  wrk_script "$broker_script" "$broker_path"
  wrk_script "$nginx_script" "$nginx_path"
  measure "$name" "$target_ratio" "$broker_script" "$nginx_script"
}

broker_requests=0  # what measure()'s wrk runs sent the broker, all rounds
measured_nginx_rps=0  # nginx's median req/s in measure()'s last row
# Where measure() sends wrk: plain HTTP to broker_port and nginx_port, unless a scenario points
# it elsewhere (scenario 8: HTTPS to the TLS listeners).
wrk_scheme=http
wrk_broker_port=""
wrk_nginx_port=""

# measure NAME TARGET_RATIO BROKER_SCRIPT NGINX_SCRIPT: alternating wrk runs, broker first;
# one table row. An empty TARGET_RATIO reports the ratios without a verdict.
measure() {
  local name=$1 target_ratio=$2 broker_script=$3 nginx_script=$4
  local broker_rps=() broker_p50=() broker_p99=() nginx_rps=() nginx_p50=() nginx_p99=()
  local round side port script rps p50 p99 errors requests
  broker_requests=0
  for ((round = 1; round <= rounds; round++)); do
    for side in broker nginx; do
      port=${wrk_broker_port:-$broker_port} script=$broker_script
      [ $side = nginx ] && port=${wrk_nginx_port:-$nginx_port} script=$nginx_script
      read -r rps p50 p99 errors requests < <(run_wrk "$wrk_scheme://127.0.0.1:$port/" "$script")
      if [ -z "$requests" ] || [ "$p50" = "?" ] || [ "$p99" = "?" ]; then
        die "$name: wrk failed against $side"
      fi
      [ "$errors" = 0 ] || broken+=("$name: $side had $errors failed requests")
      [ $side = broker ] && broker_requests=$((broker_requests + requests))
      eval "${side}_rps+=($rps); ${side}_p50+=($p50); ${side}_p99+=($p99)"
      echo "  $name round $round $side: $rps req/s, p50 ${p50} µs, p99 ${p99} µs"
    done
  done

  local b_rps b_p50 b_p99 n_rps n_p50 n_p99 ratio verdict=FAIL
  b_rps=$(median "${broker_rps[@]}") b_p50=$(median "${broker_p50[@]}")
  b_p99=$(median "${broker_p99[@]}")
  n_rps=$(median "${nginx_rps[@]}") n_p50=$(median "${nginx_p50[@]}")
  n_p99=$(median "${nginx_p99[@]}")
  measured_nginx_rps=$n_rps
  ratio=$(awk -v b="$b_rps" -v n="$n_rps" 'BEGIN {printf "%.3f", (n > 0 ? b / n : 0)}')
  # p99 "no worse": each round's broker run against the nginx run right after it (the
  # machine's other load drifts less between neighbours than across the whole row), the
  # median of those ratios within p99_tolerance. A run's p99 is its worst 1 % of calls, which
  # one stall of the machine's other tenants fills: nginx's own p99 moves by up to 40 % from
  # one of its rounds to the next here.
  local tail_ratios=() i
  for ((i = 0; i < rounds; i++)); do
    tail_ratios+=("$(awk -v b="${broker_p99[i]}" -v n="${nginx_p99[i]}" \
      'BEGIN {printf "%.3f", b / n}')")
  done
  local tail_ratio
  tail_ratio=$(median "${tail_ratios[@]}")
  echo "  $name: p99 broker/nginx by round ${tail_ratios[*]}, median $tail_ratio"
  local reference row_name broker_cell
  reference="nginx: $n_rps req/s ($(spread "${nginx_rps[@]}")), p50 $n_p50 µs"
  reference+=", p99 $n_p99 µs ($(spread "${nginx_p99[@]}"))"
  row_name="$name — $(placement_note) (median of $rounds × $duration)"
  broker_cell="$b_rps req/s ($(spread "${broker_rps[@]}")), p50 $b_p50 µs, p99 $b_p99 µs"
  if [ -z "$target_ratio" ]; then
    add_row "$row_name" "$broker_cell" "$reference" \
      "none, reported: broker/nginx **${ratio}×**; p99 **${tail_ratio}×** nginx's" "—"
    return
  fi
  local throughput=FAIL tail=FAIL
  # Against the ratios as measured, not as printed.
  awk -v b="$b_rps" -v n="$n_rps" -v target="$target_ratio" 'BEGIN {exit !(b >= target * n)}' &&
    throughput=PASS
  awk -v r="$tail_ratio" -v limit="$p99_tolerance" 'BEGIN {exit !(r <= limit)}' && tail=PASS
  verdict="throughput $throughput, p99 $tail"
  [ "$throughput$tail" = PASSPASS ] && verdict=PASS
  add_row "$row_name" "$broker_cell" "$reference" \
    "≥ ${target_ratio}× nginx: **${ratio}×**; p99 ≤ ${p99_tolerance}× nginx's: **${tail_ratio}×**" \
    "$verdict"
}

# ---------------------------------------------------------------------------------------------
# Scenarios

# Targets, as ratios to nginx: the prepared answers must beat it by a margin (issue 13), the
# drop-in must match it, a signature (parsed body, one SHA-1 per ticket) reach 0.8× (issue 14).
token_target=1.2
signature_target=0.8
# p99 "no worse than nginx's": the median of the rounds' ratios, within what a round's p99
# moves by for reasons of the machine's (see measure).
p99_tolerance=1.05

# 1 and 2: the hot path, open and with client auth, and the drop-in, with servers and wrk on
# separate cores; then the hot path again with everything sharing every core.
scenario_throughput() {
  echo "== 1-2. throughput against nginx"
  cat >"$work/hr.json" <<EOF
    "hr": {"corpid": "wwbenchhr", "secret": "$run_secret-hr"}
EOF
  printf 'wwbenchhr:%s-hr\n' "$run_secret" >"$work/hr.apps"
  start_fake "$work/hr.apps"
  broker_port=$(free_port)
  nginx_port=$(free_port)
  set_placement isolated
  echo "  placement: $(placement_note)"
  start_nginx

  write_config "$work/open.json" "$work/hr.json"
  start_broker "$work/open.json"
  compare "GET /v1/apps/hr/token" "$token_target" /v1/apps/hr/token
  compare "GET /cgi-bin/gettoken" 1.0 "/cgi-bin/gettoken?corpid=wwbenchhr&corpsecret=$run_secret-hr"
  stop_process "$broker_pid"

  local key
  key=$(random_hex 24)
  write_config "$work/auth.json" "$work/hr.json" '{"jitter_s": 5}' \
    "{\"bench\": {\"key_sha256\": \"$(printf %s "$key" | sha256sum | cut -d' ' -f1)\", \"apps\": [\"*\"]}}"
  start_broker "$work/auth.json"
  [ "$(http_status "http://127.0.0.1:$broker_port/v1/apps/hr/token")" = 401 ] ||
    die "client auth is not on"
  compare "GET /v1/apps/hr/token, client auth" "$token_target" /v1/apps/hr/token "Bearer $key"
  stop_process "$broker_pid"
  stop_process "$nginx_pid"

  set_placement shared
  echo "  placement: $(placement_note)"
  start_nginx
  write_config "$work/open.json" "$work/hr.json"
  start_broker "$work/open.json"
  compare "GET /v1/apps/hr/token" "$token_target" /v1/apps/hr/token
  stop_process "$broker_pid"
  stop_process "$nginx_pid"
  stop_process "$fake_pid"
}

# 3: JS-SDK tickets and signatures, servers and wrk on separate cores as in 1. "hr" holds both
# tickets, so its signature answer carries two signatures; "js" the jsapi ticket only, one.
scenario_tickets() {
  echo "== 3. JS-SDK tickets and signatures against nginx"
  cat >"$work/tickets.json" <<EOF
    "hr": {"corpid": "wwbenchhr", "agentid": 1000002, "secret": "$run_secret-hr",
           "tickets": ["jsapi", "agent_config"]},
    "js": {"corpid": "wwbenchjs", "secret": "$run_secret-js", "tickets": ["jsapi"]}
EOF
  printf 'wwbenchhr:%s-hr\nwwbenchjs:%s-js\n' "$run_secret" "$run_secret" >"$work/tickets.apps"
  # A fixed nonce and timestamp, so the answer's bytes are the same on every request.
  printf '%s' '{"url":"https://bench.example.com/app/index.html?from=menu#top","noncestr":"Wm3WZYTPz0wzccnW","timestamp":1414587457}' \
    >"$work/signature-request.json"
  start_fake "$work/tickets.apps"
  broker_port=$(free_port)
  nginx_port=$(free_port)
  set_placement isolated
  echo "  placement: $(placement_note)"
  start_nginx
  write_config "$work/tickets-config.json" "$work/tickets.json"
  start_broker "$work/tickets-config.json"
  compare "GET /v1/apps/hr/jsapi_ticket" "$token_target" /v1/apps/hr/jsapi_ticket
  compare "POST /v1/apps/hr/jssdk_signature, jsapi + agent_config (2 SHA-1)" "$signature_target" \
    /v1/apps/hr/jssdk_signature "" "$work/signature-request.json"
  compare "POST /v1/apps/js/jssdk_signature, jsapi only (1 SHA-1)" "$signature_target" \
    /v1/apps/js/jssdk_signature "" "$work/signature-request.json"
  stop_process "$broker_pid"
  stop_process "$nginx_pid"
  stop_process "$fake_pid"
}

# 4: a reload adds "cold" while 10,000 connections wait to ask for it.
scenario_fan_in() {
  echo "== 4. cold fan-in, $fan_in_connections connections"
  cat >"$work/hr.json" <<EOF
    "hr": {"corpid": "wwbenchhr", "secret": "$run_secret-hr"}
EOF
  cat >"$work/hr-cold.json" <<EOF
    "hr": {"corpid": "wwbenchhr", "secret": "$run_secret-hr"},
    "cold": {"corpid": "wwbenchcold", "secret": "$run_secret-cold"}
EOF
  printf 'wwbenchhr:%s-hr\nwwbenchcold:%s-cold\n' "$run_secret" "$run_secret" >"$work/fan-in.apps"
  start_fake "$work/fan-in.apps" --delay-ms 200
  broker_port=$(free_port)
  write_config "$work/fan-in.json" "$work/hr.json"
  start_broker "$work/fan-in.json"

  write_config "$work/fan-in.json" "$work/hr-cold.json"
  local results
  results=$("$fan_in_binary" --port "$broker_port" --connections "$fan_in_connections" \
    --app cold --hup-pid "$broker_pid") || broken+=("fan-in: not every answer was a 200")
  echo "$results"
  local calls ok distinct reload_ms write_ms
  calls=$(fake_calls wwbenchcold)
  ok=$(sed -n 's/^answers_200=//p' <<<"$results")
  distinct=$(sed -n 's/^distinct_tokens=//p' <<<"$results")
  reload_ms=$(sed -n 's/^reload_to_last_answer_ms=//p' <<<"$results" | awk '{printf "%d", $1}')
  write_ms=$(sed -n 's/^first_write_to_last_answer_ms=//p' <<<"$results" | awk '{printf "%d", $1}')
  local verdict=FAIL
  [ "$calls" = 1 ] && [ "$ok" = "$fan_in_connections" ] && [ "$distinct" = 1 ] && verdict=PASS
  add_row "cold fan-in: $fan_in_connections connections, upstream answers after 200 ms" \
    "gettoken calls: **$calls**; $ok × 200 with $distinct distinct token(s); last answer $reload_ms ms after SIGHUP, $write_ms ms after the first request" \
    "" "1 gettoken, every answer 200" "$verdict"
  stop_process "$broker_pid"
  stop_process "$fake_pid"
}

# 5: VmRSS / VmHWM once every app holds a token.
scenario_memory() {
  echo "== 5. resident memory"
  app_entries 10000 mem
  start_fake "$work/mem.apps"
  broker_port=$(free_port)
  local count
  for count in 1 100 1000 10000; do
    head -n "$count" "$work/mem.json" | sed '$ s/,$//' >"$work/mem-$count.json"
    write_config "$work/memory.json" "$work/mem-$count.json"
    local started=$SECONDS
    start_broker "$work/memory.json"
    local ready_s=$((SECONDS - started))
    sleep 1
    local rss hwm
    rss=$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$broker_pid/status")
    hwm=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$broker_pid/status")
    echo "  $count apps: VmRSS $rss MB, VmHWM $hwm MB (ready after ${ready_s}s)"
    local target="" verdict=""
    if [ "$count" = 1000 ]; then
      target="≤ 30 MB"
      verdict=FAIL
      awk -v r="$rss" 'BEGIN {exit !(r <= 30)}' && verdict=PASS
    fi
    add_row "resident memory, $count configured app(s)" "VmRSS **$rss MB**, VmHWM $hwm MB" "" \
      "$target" "$verdict"
    stop_process "$broker_pid"
  done
  stop_process "$fake_pid"
}

# 6: with 10 s tokens that are new on every call, the policy refreshes each app
# min(ahead_s, lifetime/2) before its token's expiry, counted from when the call was sent:
# once every lifetime − min(ahead_s, lifetime/2) seconds. No jitter, and a min_interval_s
# below that period, so the count over a window is exact; load must add nothing.
scenario_calls_under_load() {
  local lifetime=10 ahead=2 apps=4
  local period=$((lifetime - (ahead < lifetime / 2 ? ahead : lifetime / 2)))
  echo "== 6. gettoken calls under load: $apps apps, ${lifetime}s tokens, ${load_seconds}s of load"
  app_entries "$apps" load
  start_fake "$work/load.apps" --behaviour new --lifetime "$lifetime"
  broker_port=$(free_port)
  write_config "$work/load-config.json" "$work/load.json" \
    "{\"ahead_s\": $ahead, \"jitter_s\": 0, \"min_interval_s\": 1, \"retry_min_ms\": 500, \"retry_max_ms\": 5000}"
  local started_ms ready_ms ended_ms
  started_ms=$(date +%s%3N)
  start_broker "$work/load-config.json"
  ready_ms=$(date +%s%3N)

  local i script=$work/rotate.lua
  {
    echo 'local paths = {'
    for ((i = 0; i < apps; i++)); do echo "  \"/v1/apps/load$i/token\","; done
    echo '}'
    echo 'local requests, index = {}, 0'
    echo 'init = function() for i, path in ipairs(paths) do requests[i] = wrk.format("GET", path) end end'
    echo 'request = function() index = index % #requests + 1; return requests[index] end'
  } >"$script"
  local output errors
  output=$(wrk -t2 -c64 -d"${load_seconds}s" -s "$script" "http://127.0.0.1:$broker_port/")
  ended_ms=$(date +%s%3N)
  errors=$(wrk_errors "$output")
  [ "$errors" = 0 ] || broken+=("calls under load: $errors requests failed")
  local rps
  rps=$(awk '/^Requests\/sec:/ {printf "%d", $2}' <<<"$output")

  # The first call falls between the broker's start and its first /readyz 200; each later
  # one a period after the one before (plus that call's latency, which only delays it).
  local floor_low floor_high
  floor_low=$((1 + (ended_ms - ready_ms) / (period * 1000)))
  floor_high=$((1 + (ended_ms - started_ms) / (period * 1000)))
  local counts=() verdict=PASS calls
  for ((i = 0; i < apps; i++)); do
    calls=$(fake_calls "$(printf 'wwload%06d' "$i")")
    counts+=("$calls")
    { [ "$calls" -ge "$floor_low" ] && [ "$calls" -le "$floor_high" ]; } || verdict=FAIL
  done
  local floor=$floor_high
  [ "$floor_low" = "$floor_high" ] || floor="$floor_low–$floor_high"
  echo "  calls per app: ${counts[*]}; the policy's floor: $floor (a call every ${period}s); load $rps req/s, $errors errors"
  add_row "gettoken per app, ${load_seconds}s at full load ($rps req/s over $apps apps), ${lifetime}s tokens" \
    "calls per app: **${counts[*]}**" "policy floor: $floor (one call per ${period}s)" \
    "at the floor" "$verdict"
  stop_process "$broker_pid"
  stop_process "$fake_pid"
}

# 7: the gateway against nginx proxy_pass, both in front of one HTTPS upstream (an nginx
# serving WeCom-shaped JSON), placed as in 1 with the upstream on the servers' cores.
gateway_connections=64

# make_certificates DIR NAME: a CA made for this run (DIR/ca.pem) and an EC P-256 certificate
# for NAME ("DNS:localhost", "IP:127.0.0.1") signed by it (DIR/server.pem, DIR/server.key).
make_certificates() {
  local dir=$1 name=$2
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=token-broker bench CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=${name#*:}" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    openssl x509 -req -days 2 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -out "$dir/server.pem" \
      -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$name") 2>/dev/null
  ) || die "openssl could not make the certificates for $name"
  chmod 644 "$dir/ca.pem"
}

upstream_port=""            # the upstream as the broker reaches it
upstream_reference_port=""  # the same server as the reference nginx reaches it
upstream_pid=""

# start_upstream TOKEN: WeCom's gettoken (answering TOKEN) and user/get as static files over
# HTTPS. One line per connection in connections.log, at its first request: the port it came
# in on, its number, "r" when its TLS session was resumed, the path (never the query).
start_upstream() {
  local dir=$work/upstream
  mkdir -p "$dir/root/cgi-bin/user" "$dir/temp"
  make_certificates "$dir" DNS:localhost
  printf '{"errcode":0,"errmsg":"ok","access_token":"%s","expires_in":7200}' "$1" \
    >"$dir/root/cgi-bin/gettoken"
  cat >"$dir/root/cgi-bin/user/get" <<'EOF_USER'
{"errcode":0,"errmsg":"ok","userid":"zhangsan","name":"张三","department":[1,2],"order":[1,2],"position":"后台工程师","mobile":"13800000000","gender":"1","email":"zhangsan@example.com","biz_mail":"zhangsan@qyycs2.wecom.work","is_leader_in_dept":[1,0],"direct_leader":["lisi"],"avatar":"https://wework.qpic.cn/wwpic/avatar/0","thumb_avatar":"https://wework.qpic.cn/wwpic/avatar/100","telephone":"020-123456","alias":"jackzhang","address":"广州市海珠区新港中路","open_userid":"woAJ2GCAAAd4uL12hdfsdasassdDmAAAAA","main_department":1,"status":1,"qr_code":"https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=xxx","external_position":"产品经理"}
EOF_USER
  chmod -R go+rX "$dir/root"
  {
    echo "# WeCom as fast as it can be: static answers over HTTPS, connections kept."
    nginx_preamble "$dir"
    cat <<EOF_NGINX
  sendfile off;
  open_file_cache max=64 inactive=1h;
  ssl_certificate $dir/server.pem;
  ssl_certificate_key $dir/server.key;
  ssl_session_cache shared:upstream:1m;
  map \$connection_requests \$first_request { 1 1; default 0; }
  log_format connections '\$server_port \$connection \$ssl_session_reused \$uri';
  server {
    listen 127.0.0.1:$upstream_port ssl;
    listen 127.0.0.1:$upstream_reference_port ssl;
    keepalive_requests 100000000;  # the pools' connections live as long as the run
    keepalive_timeout 300s;
    access_log $dir/connections.log connections if=\$first_request;
    root $dir/root;
  }
}
EOF_NGINX
  } >"$dir/nginx.conf"
  launch_nginx "$dir"
  upstream_pid=$launched_pid
  # A gettoken, which the count of the gateway's connections leaves out.
  wait_for_status "https://localhost:$upstream_port/cgi-bin/gettoken" 200 10 \
    --cacert "$dir/ca.pem" || die "the upstream nginx did not start: $(cat "$dir/error.log")"
}

# start_proxy_nginx TOKEN: the reference, as one would proxy to WeCom with nginx: a pool of
# kept-alive connections of the gateway's size, TLS sessions reused, upstream's certificate
# checked against the same CA. It sets access_token as the gateway does, so that upstream
# gets the same request from both.
start_proxy_nginx() {
  local dir=$work/proxy
  mkdir -p "$dir/temp"
  (
    umask 077  # the token
    nginx_preamble "$dir"
    cat <<EOF_NGINX
  upstream wecom {
    server 127.0.0.1:$upstream_reference_port;
    keepalive $gateway_connections;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass https://wecom\$uri?\$args&access_token=$1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost:$upstream_reference_port;
      proxy_ssl_session_reuse on;
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $work/upstream/ca.pem;
    }
  }
}
EOF_NGINX
  ) >"$dir/nginx.conf"
  launch_nginx "$dir"
  nginx_pid=$launched_pid
}

# upstream_handshakes PORT: "handshakes resumed" of the connections upstream took on PORT
# other than the credential refreshes' and start_upstream's (whose first request is a
# gettoken).
upstream_handshakes() {
  awk -v port="$1" '$1 == port && $4 != "/cgi-bin/gettoken" {n++; if ($3 == "r") r++}
                    END {print n + 0, r + 0}' "$work/upstream/connections.log"
}

scenario_gateway() {
  echo "== 7. the gateway against nginx proxy_pass, in front of one HTTPS upstream"
  local token
  token=$(random_hex 32)  # made up for this run, as the other secrets; never printed
  broker_port=$(free_port)
  nginx_port=$(free_port)
  upstream_port=$(free_port)
  upstream_reference_port=$(free_port)
  set_placement isolated
  echo "  placement: $(placement_note); the upstream nginx with the servers"
  start_upstream "$token"
  upstream_url=https://localhost:$upstream_port
  upstream_ca=$work/upstream/ca.pem
  printf '    "hr": {"corpid": "wwbenchhr", "secret": "%s-hr"}\n' "$run_secret" >"$work/hr.json"
  write_config "$work/gateway.json" "$work/hr.json" '{"jitter_s": 5}' "" \
    "{\"enabled\": true, \"max_connections\": $gateway_connections,
      \"budget\": {\"per_minute\": 100000000, \"per_hour\": 100000000}}"
  start_broker "$work/gateway.json"
  start_proxy_nginx "$token"

  local name="GET /v1/apps/hr/api/cgi-bin/user/get, the gateway against nginx proxy_pass"
  local broker_path="/v1/apps/hr/api/cgi-bin/user/get?userid=zhangsan"
  local nginx_path="/cgi-bin/user/get?userid=zhangsan"
  compare_proxied "$name (the upstream nginx on the servers' cores)" 1.0 \
    "$broker_path" "$nginx_path" "$work/upstream/root/cgi-bin/user/get"
  # The curl of compare_proxied's check was a gateway call too.
  local calls=$((broker_requests + 1))

  # p99 at equal offered load, as issue 15 asks: both servers get the same fixed rate, half
  # what nginx sustained above. wrk2's fixed rate is not in Debian, so wrk's script keeps the
  # schedule: each call a connection is ready to make takes the next free slot of a clock at
  # that rate (per wrk thread; LuaJIT's ffi reads CLOCK_MONOTONIC) and waits for it. The
  # throughput target then only says that both kept up with it.
  local rate=$((${measured_nginx_rps%.*} / 2))
  local broker_script=$work/wrk.$RANDOM.lua nginx_script=$work/wrk.$RANDOM.lua
  wrk_script "$broker_script" "$broker_path"
  wrk_script "$nginx_script" "$nginx_path"
  fixed_rate_lua $((rate / client_threads)) | tee -a "$broker_script" >>"$nginx_script"
  measure "$name at equal offered load ($rate calls/s, half nginx's above)" 0.95 \
    "$broker_script" "$nginx_script"
  calls=$((calls + broker_requests))

  local handshakes resumed reference_handshakes reference_resumed
  read -r handshakes resumed < <(upstream_handshakes "$upstream_port")
  read -r reference_handshakes reference_resumed < <(upstream_handshakes "$upstream_reference_port")
  local per_100k
  per_100k=$(awk -v h="$handshakes" -v c="$calls" 'BEGIN {printf "%.1f", h * 100000 / c}')
  echo "  upstream TLS handshakes per 100,000 calls: $per_100k (pool size $gateway_connections)"
  echo "  ($handshakes handshakes, $resumed of them resumed sessions, over $calls gateway calls;" \
    "nginx proxy_pass: $reference_handshakes, $reference_resumed resumed)"
  local verdict=FAIL
  awk -v p="$per_100k" -v m="$gateway_connections" 'BEGIN {exit !(p <= m)}' && verdict=PASS
  add_row "gateway: upstream TLS handshakes per 100,000 calls (pool of $gateway_connections)" \
    "**$per_100k** ($handshakes over $calls calls, $resumed resumed)" \
    "nginx proxy_pass: $reference_handshakes handshakes, $reference_resumed resumed" \
    "≤ pool size" "$verdict"
  stop_process "$broker_pid"
  stop_process "$nginx_pid"
  stop_process "$upstream_pid"
}

# 8: the TLS listener against nginx over TLS (same certificate, key and answer bytes), placed as
# in 1; then the audit log's cost on the plain token path.
audit_target=0.95

# start_tls_nginx PORT PROBE_PORT: the reference over HTTPS from serve_with_nginx's root, with
# the run's certificate. PROBE_PORT is the same server logging one line per connection (its
# protocol, cipher, key exchange group, "r" when resumed) for a short look at what wrk
# negotiates; PORT, the one measured, logs nothing, as the broker does not.
start_tls_nginx() {
  local dir=$work/nginx
  mkdir -p "$dir/root" "$dir/temp"
  {
    echo "# As a site would serve a small static JSON file over HTTPS: the reference to beat."
    nginx_preamble "$dir"
    cat <<EOF_NGINX
  sendfile off;  # as in start_nginx (and sendfile does not apply to TLS without kTLS)
  open_file_cache max=64 inactive=1h;
  ssl_certificate $work/tls/server.pem;
  ssl_certificate_key $work/tls/server.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  map \$connection_requests \$first_request { 1 1; default 0; }
  log_format handshakes '\$ssl_protocol \$ssl_cipher \$ssl_curve \$ssl_session_reused';
  server {
    listen 127.0.0.1:$1 ssl;
    root $dir/root;
    location / { add_header Cache-Control no-store; }
  }
  server {
    listen 127.0.0.1:$2 ssl;
    access_log $dir/handshakes.log handshakes if=\$first_request;
    root $dir/root;
    location / { add_header Cache-Control no-store; }
  }
}
EOF_NGINX
  } >"$dir/nginx.conf"
  launch_nginx "$dir"
  nginx_pid=$launched_pid
}

# tls_answer_of PORT PATH BODY_OUT: the status of an HTTPS GET of PATH on 127.0.0.1:PORT, its
# certificate checked against the run's CA and for the name 127.0.0.1.
tls_answer_of() {
  curl -s --cacert "$work/tls/ca.pem" -o "$3" -w '%{http_code}' "https://127.0.0.1:$1$2" || true
}

# tls_session PORT: what OpenSSL's defaults (wrk's too: it sets no ciphers nor versions)
# negotiate with 127.0.0.1:PORT, and whether a second connection resumes the first one's
# session. Each connection reads an answer to its end: a TLS 1.3 ticket comes after the
# handshake, so a connection that leaves at once has none to offer the next.
tls_session() {
  local request first second
  request=$'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'
  first=$(printf '%s' "$request" | timeout 10 openssl s_client -connect "127.0.0.1:$1" \
    -CAfile "$work/tls/ca.pem" -verify_return_error -ign_eof \
    -sess_out "$work/tls/session.pem" 2>/dev/null) || true
  second=$(printf '%s' "$request" | timeout 10 openssl s_client -connect "127.0.0.1:$1" \
    -CAfile "$work/tls/ca.pem" -verify_return_error -ign_eof \
    -sess_in "$work/tls/session.pem" 2>/dev/null) || true
  local negotiated group resumed=no
  negotiated=$(sed -n 's/^New, \(.*\), Cipher is \(.*\)$/\1 \2/p' <<<"$first" | head -1)
  group=$(sed -n 's/^Server Temp Key: \([^,]*\).*/\1/p' <<<"$first" | head -1)
  grep -q '^Reused,' <<<"$second" && resumed=yes
  echo "${negotiated:-no handshake} ${group:-?}; resumes a session: $resumed"
}

scenario_tls() {
  echo "== 8. TLS listeners and the audit log"
  cat >"$work/hr.json" <<EOF
    "hr": {"corpid": "wwbenchhr", "secret": "$run_secret-hr"}
EOF
  printf 'wwbenchhr:%s-hr\n' "$run_secret" >"$work/hr.apps"
  start_fake "$work/hr.apps"
  set_placement isolated
  echo "  placement: $(placement_note)"
  mkdir -p "$work/tls"
  make_certificates "$work/tls" IP:127.0.0.1

  # The broker with a plain listener (readiness, as everywhere) and a TLS one.
  broker_port=$(free_port)
  local broker_tls_port nginx_tls_port probe_port
  broker_tls_port=$(free_port)
  nginx_tls_port=$(free_port)
  probe_port=$(free_port)
  config_listen="[\"127.0.0.1:$broker_port\", {\"address\": \"127.0.0.1:$broker_tls_port\","
  config_listen+=" \"tls\": {\"cert_file\": \"$work/tls/server.pem\","
  config_listen+=" \"key_file\": \"$work/tls/server.key\"}}]"
  write_config "$work/tls-config.json" "$work/hr.json"
  config_listen=""
  start_broker "$work/tls-config.json"

  local path=/v1/apps/hr/token body=$work/body.$RANDOM served=$work/served.$RANDOM
  [ "$(tls_answer_of "$broker_tls_port" "$path" "$body")" = 200 ] ||
    die "TLS: the broker did not answer 200 over HTTPS"
  serve_with_nginx "$path" "$body"
  start_tls_nginx "$nginx_tls_port" "$probe_port"
  wait_for_status "https://127.0.0.1:$nginx_tls_port$path" 200 10 --cacert "$work/tls/ca.pem" ||
    die "TLS: nginx did not start: $(cat "$work/nginx/error.log")"
  tls_answer_of "$nginx_tls_port" "$path" "$served" >/dev/null
  cmp -s "$body" "$served" || die "TLS: nginx does not serve the broker's bytes"
  local broker_session nginx_session
  broker_session=$(tls_session "$broker_tls_port")
  nginx_session=$(tls_session "$nginx_tls_port")
  echo "  openssl s_client against the broker: $broker_session"
  echo "  openssl s_client against nginx: $nginx_session"
  add_row "TLS as OpenSSL's defaults negotiate it (openssl s_client; wrk sets no versions or ciphers either)" \
    "$broker_session" "nginx: $nginx_session" "" ""

  local script=$work/wrk.$RANDOM.lua
  wrk_script "$script" "$path"
  wrk_scheme=https wrk_broker_port=$broker_tls_port wrk_nginx_port=$nginx_tls_port
  measure "HTTPS GET $path, connections kept" 1.0 "$script" "$script"

  # A new connection per request. What wrk does on reconnecting (its OpenSSL keeps the session
  # of the connection it closed) is read off nginx's log of a short run against the probe port.
  wrk_options=(-H 'Connection: close')
  "${client_pin[@]}" wrk -t1 -c4 -d1s "${wrk_options[@]}" -s "$script" \
    "https://127.0.0.1:$probe_port/" >/dev/null
  local reconnections
  reconnections=$(awk '{n++; if ($4 == "r") r++; seen[$1 " " $2 " " $3]++}
    END {for (k in seen) if (seen[k] > best) {best = seen[k]; common = k}
         printf "%d of %d connections resumed their session (%s)", r, n, common}' \
    "$work/nginx/handshakes.log")
  echo "  wrk against nginx with Connection: close (1 s, -c4): $reconnections"
  measure "HTTPS GET $path, Connection: close: a TLS handshake per request (wrk resumes: in a probe of nginx, $reconnections)" \
    "" "$script" "$script"
  wrk_options=()
  wrk_scheme=http wrk_broker_port="" wrk_nginx_port=""
  stop_process "$broker_pid"
  stop_process "$nginx_pid"

  # The audit log: two brokers alike but for audit_log, on the servers' cores, wrk taking
  # turns between them as between broker and nginx in measure().
  local audit_file=$work/audit.log on_port off_port on_pid off_pid
  broker_port=$(free_port)
  on_port=$broker_port
  config_audit_log=$audit_file
  write_config "$work/audit-on.json" "$work/hr.json"
  config_audit_log=""
  start_broker "$work/audit-on.json"
  on_pid=$broker_pid
  broker_port=$(free_port)
  off_port=$broker_port
  write_config "$work/audit-off.json" "$work/hr.json"
  start_broker "$work/audit-off.json"
  off_pid=$broker_pid
  [ "$(answer_of "$on_port" "$path" "$body")" = 200 ] ||
    die "audit: the broker with audit_log did not answer 200"
  [ "$(answer_of "$off_port" "$path" "$body")" = 200 ] ||
    die "audit: the broker without audit_log did not answer 200"
  local served_on=1  # answer_of's request above

  local name="plain GET $path, audit_log to a file against none"
  local on_rps=() on_p50=() on_p99=() off_rps=() off_p50=() off_p99=()
  local round side port rps p50 p99 errors requests
  for ((round = 1; round <= rounds; round++)); do
    for side in on off; do
      port=$on_port
      [ $side = off ] && port=$off_port
      read -r rps p50 p99 errors requests < <(run_wrk "http://127.0.0.1:$port/" "$script")
      if [ -z "$requests" ] || [ "$p50" = "?" ] || [ "$p99" = "?" ]; then
        die "$name: wrk failed against the broker with audit $side"
      fi
      [ "$errors" = 0 ] || broken+=("$name: audit $side had $errors failed requests")
      [ $side = on ] && served_on=$((served_on + requests))
      eval "${side}_rps+=($rps); ${side}_p50+=($p50); ${side}_p99+=($p99)"
      echo "  $name round $round audit $side: $rps req/s, p50 ${p50} µs, p99 ${p99} µs"
    done
  done
  # SIGTERM: the broker writes what its audit writer still holds before it exits.
  stop_process "$on_pid"
  stop_process "$off_pid"
  local lines
  lines=$(wc -l <"$audit_file")
  echo "  audit log: $lines lines for $served_on requests answered; its first line:"
  echo "    $(head -1 "$audit_file")"

  local on off ratio verdict=FAIL
  on=$(median "${on_rps[@]}") off=$(median "${off_rps[@]}")
  ratio=$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
  awk -v a="$on" -v b="$off" -v target="$audit_target" 'BEGIN {exit !(a >= target * b)}' &&
    verdict=PASS
  add_row "$name — $(placement_note) (median of $rounds × $duration)" \
    "audit on: $on req/s ($(spread "${on_rps[@]}")), p50 $(median "${on_p50[@]}") µs, p99 $(median "${on_p99[@]}") µs" \
    "audit off: $off req/s ($(spread "${off_rps[@]}")), p50 $(median "${off_p50[@]}") µs, p99 $(median "${off_p99[@]}") µs" \
    "≥ ${audit_target}× off: **${ratio}×**" "$verdict"
  # wrk counts the answers it read; each run's last requests, up to one per connection, may
  # have been answered (and audited) after it stopped reading.
  local in_flight=$((64 * rounds))
  verdict=FAIL
  [ "$lines" -ge "$served_on" ] && [ "$lines" -le $((served_on + in_flight)) ] && verdict=PASS
  add_row "audit log lines after the audited runs" "**$lines** lines" \
    "$served_on requests answered (wrk's count and 1 check; up to $in_flight more in flight when wrk stopped)" \
    "one line per request" "$verdict"
  stop_process "$fake_pid"
}

describe_machine() {
  echo "Machine: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $cores cores" \
    "(nproc), $(awk '/^MemTotal:/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) RAM," \
    "Linux $(uname -r)"
  echo "Tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)," \
    "$(openssl version), $("$broker_binary" --version 2>&1 | head -1)"
  echo "wrk --latency on loopback, $duration per run; broker log_level warn, memory only;" \
    "broker threads = nginx worker_processes = the cores the servers have; scenarios 4-6" \
    "unpinned with threads = nproc; GLIBC_TUNABLES=$GLIBC_TUNABLES for every process (the unit's)"
}

# ---------------------------------------------------------------------------------------------

install_dependencies
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || build_binaries
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((fan_in_connections + 1024)) ] ||
  die "the descriptor limit ($(ulimit -n)) is too low for $fan_in_connections connections"
run_secret=$(random_hex 16)  # made up for this run; never printed

if selected throughput; then scenario_throughput; fi
if selected tickets; then scenario_tickets; fi
if selected fan_in; then scenario_fan_in; fi
if selected memory; then scenario_memory; fi
if selected calls; then scenario_calls_under_load; fi
if selected gateway; then scenario_gateway; fi
if selected tls; then scenario_tls; fi

echo
describe_machine
echo
echo "| measurement | token-broker | reference | target | result |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ ${#broken[@]} -gt 0 ]; then
  echo
  printf 'BROKEN RUN: %s\n' "${broken[@]}"
  exit 1
fi
