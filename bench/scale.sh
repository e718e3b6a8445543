#!/usr/bin/env bash
# The scale benchmark (issue 13, "Scale"): the real token-broker against the real fake-wecom
# and a redis-server of its own, measured from outside only (/proc, HTTP, redis-cli), so it
# holds whatever the broker's insides look like. Prints one table.
#
#   1. For each N in BENCH_SCALE_COUNTS (default 1000 10000 100000) configured apps sharing
#      Redis, upstream answering at once with 7200 s tokens: the time from start until
#      /readyz is 200 (every app holds a token); VmRSS and VmHWM then; and over a steady window
#      that follows (no refresh is due in it), the broker's CPU (utime + stime, % of one core)
#      and the commands it sends Redis per second (MONITOR: top three by name; those run inside
#      its scripts counted apart).
#   2. Cold start of BENCH_SCALE_COLD_APPS (default 10000) apps against upstream answering in
#      50 ms: the time until all are fresh, the gettoken calls made and the TLS handshakes the
#      fake completed, which must be far fewer than the calls (connections are reused).
#   3. BENCH_SCALE_CORPS (default 10000) corps authorized on one suite (issue 16), upstream
#      answering in 50 ms: from the suite_ticket's PUT until /readyz is 200 (every corp holds
#      its token), the get_corp_token calls and TLS handshakes, VmRSS, and the broker's CPU and
#      Redis commands per second over a steady window.
#
# Environment: BENCH_SCALE_COUNTS (empty: none), BENCH_SCALE_WINDOW_S (the steady window, default 30),
# BENCH_SCALE_SETTLE_S (from ready to the window, default 5), BENCH_SCALE_READY_TIMEOUT_S (per
# start, default 600: a broker not ready by then is a FAIL row), BENCH_SCALE_COLD_APPS,
# BENCH_SCALE_CORPS (0 skips scenario 3), BENCH_SKIP_BUILD=1 (measure the binaries already in
# build/release).
# Run as root: it installs packages and raises the descriptor limit.
# Exits 0 when every measurement ran, even if a target is missed (FAIL in the table); 1 when
# something did not start, died or answered wrongly.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a counts <<<"${BENCH_SCALE_COUNTS-1000 10000 100000}"
window_s=${BENCH_SCALE_WINDOW_S:-65}  # a whole sweep period (60 s) and more
settle_s=${BENCH_SCALE_SETTLE_S:-5}
ready_timeout_s=${BENCH_SCALE_READY_TIMEOUT_S:-600}
cold_apps=${BENCH_SCALE_COLD_APPS:-10000}
suite_corps=${BENCH_SCALE_CORPS:-10000}
cold_delay_ms=50

# Targets (issue 13).
rss_target_mb=250 rss_target_apps=100000
cpu_target_percent=2
redis_target_per_s=50
handshake_target_percent=1  # "≪ calls": at most 1 % of them

build=build/release
broker_binary=$build/token-broker
fake_binary=$build/tests/fake-wecom

# ---------------------------------------------------------------------------------------------
# Setup

build_binaries() {
  cmake --preset release >/dev/null
  cmake --build --preset release --target token-broker fake-wecom
}

. bench/common.sh  # the scripts run from the repository root

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# Whether a child of ours still runs: kill -0 succeeds on a zombie too.
alive() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ]
}


# ---------------------------------------------------------------------------------------------
# Redis

redis_port=""

redis() { redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }

start_redis() {
  redis_port=$(free_port)
  mkdir -p "$work/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$work/redis" --logfile "$work/redis.log" &
  pids+=($!)
  for _ in $(seq 100); do
    [ "$(redis ping 2>/dev/null)" = PONG ] && return
    sleep 0.1
  done
  die "redis-server did not start: $(tail -3 "$work/redis.log")"
}

# watch_redis SECONDS: what Redis executes for that long (MONITOR), summed up: the commands
# clients send, by name, as "name count" lines in $work/commands, and the number of commands
# run inside scripts (MONITOR shows them as from "lua": the sweep's reads, two per credential
# a minute) in $work/scripted. The bench sends nothing meanwhile.
watch_redis() {
  timeout "$1" redis-cli -h 127.0.0.1 -p "$redis_port" monitor >"$work/monitor" 2>/dev/null || true
  awk '$3 == "lua]" { scripted++; next }
       $2 ~ /^\[/ { name = tolower($4); gsub(/"/, "", name); sent[name]++ }
       END { for (name in sent) print name, sent[name] > "/dev/stdout"
             print scripted + 0 > "/dev/stderr" }' "$work/monitor" \
    2>"$work/scripted" | sort -k2,2nr >"$work/commands"
}

# ---------------------------------------------------------------------------------------------
# The fake of WeCom and the broker

fake_port=""
fake_pid=""

# start_fake APP_FILE [fake-wecom flags…]: secrets come from the file, never the command line.
start_fake() {
  local app_file=$1
  shift
  rm -f "$work/fake.port"
  "$fake_binary" --ca-out "$work/ca.pem" --port-file "$work/fake.port" --app-file "$app_file" \
    "$@" >"$work/fake.log" 2>&1 &
  fake_pid=$!
  pids+=("$fake_pid")
  for _ in $(seq 300); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
  [ -s "$work/fake.port" ] || die "fake WeCom did not start: $(cat "$work/fake.log")"
  fake_port=$(cat "$work/fake.port")
}

# fake_stats FIELD…: those top-level counts from one GET /fake/stats, on one line. Its own
# TLS handshake is in tls_handshakes.
fake_stats() {
  local stats field values=()
  stats=$(curl -s --cacert "$work/ca.pem" "https://localhost:$fake_port/fake/stats")
  for field in "$@"; do
    values+=("$(grep -o "\"$field\":[0-9]*" <<<"$stats" | cut -d: -f2)")
  done
  echo "${values[@]}"
}

# app_entries COUNT: JSON members "aI": {corpid, secret} for I in 0..COUNT-1 in
# $work/apps.json, and the fake's matching CORPID:SECRET lines in $work/apps.txt. The secret
# reaches awk through the environment, not its command line.
app_entries() {
  (
    umask 077
    export BENCH_SECRET=$run_secret
    awk -v n="$1" 'BEGIN { s = ENVIRON["BENCH_SECRET"]
      for (i = 0; i < n; i++)
        printf "    \"a%d\": {\"corpid\": \"wwscale%06d\", \"secret\": \"%s-%d\"},\n", i, i, s, i }' \
      >"$work/apps.json"
    awk -v n="$1" 'BEGIN { s = ENVIRON["BENCH_SECRET"]
      for (i = 0; i < n; i++) printf "wwscale%06d:%s-%d\n", i, s, i }' >"$work/apps.txt"
  )
}

broker_port=""
broker_pid=""

# write_config FILE COUNT: the first COUNT apps, inline secrets, so the file is private. A long
# upstream timeout (it also sets the Redis lock's lease) so that a loaded machine measures
# the backlog rather than timeouts and retries.
write_config() {
  (
    umask 077
    {
      echo '{'
      echo "  \"listen\": \"127.0.0.1:$broker_port\", \"log_level\": \"warn\","
      echo "  \"upstream\": {\"base_url\": \"https://localhost:$fake_port\","
      echo "               \"ca_file\": \"$work/ca.pem\", \"timeout_ms\": 60000},"
      echo "  \"redis\": {\"url\": \"redis://127.0.0.1:$redis_port/0\"},"
      echo '  "apps": {'
      head -n "$2" "$work/apps.json" | sed '$ s/,$//'
      echo '  }'
      echo '}'
    } >"$1"
  )
}

http_status() { curl -s -o "${2:-/dev/null}" -w '%{http_code}' "$1" || true; }

# start_broker CONFIG: starts it and waits up to ready_timeout_s for /readyz 200. Sets
# ready_ms (from the start) and returns 0, or sets not_ready (why) and returns 1.
ready_ms="" not_ready=""
start_broker() {
  "$broker_binary" --config "$1" --check >/dev/null 2>"$work/broker.log" ||
    die "the broker rejected its config: $(tail -1 "$work/broker.log")"
  local started
  started=$(now_ms)
  "$broker_binary" --config "$1" 2>>"$work/broker.log" &
  broker_pid=$!
  pids+=("$broker_pid")
  local deadline=$((started + ready_timeout_s * 1000)) next_report=$((SECONDS + 30))
  while [ "$(http_status "http://127.0.0.1:$broker_port/readyz" "$work/readyz")" != 200 ]; do
    if ! alive "$broker_pid"; then
      wait "$broker_pid" && not_ready="exited (status 0)" || not_ready="exited (status $?)"
      not_ready+=" after $((($(now_ms) - started + 500) / 1000)) s"
      [ -s "$work/broker.log" ] && not_ready+=": $(tail -1 "$work/broker.log")"
      broken+=("the broker $not_ready")
      return 1
    fi
    if [ "$(now_ms)" -ge $deadline ]; then
      not_ready="not ready after $ready_timeout_s s ($(failing_apps) apps still without a token)"
      return 1
    fi
    if [ $SECONDS -ge $next_report ]; then
      echo "  $((($(now_ms) - started) / 1000)) s: $(failing_apps) apps without a token yet, VmRSS $(memory_mb VmRSS) MB"
      next_report=$((SECONDS + 30))
    fi
    # Each unready answer lists every app without a token: poll less once that is long.
    if [ $(($(now_ms) - started)) -lt 10000 ]; then sleep 0.2; else sleep 1; fi
  done
  ready_ms=$(($(now_ms) - started))
}

# The apps the last /readyz listed as failing: {"status":"unready","failing":["a1",…]}.
failing_apps() {
  if [ -s "$work/readyz" ] && grep -q '"failing":\["' "$work/readyz"; then
    echo $(($(tr -cd , <"$work/readyz" | wc -c)))  # one comma after "status", one between ids
  else
    echo "?"
  fi
}

memory_mb() { awk -v field="$1:" '$1 == field {printf "%.1f", $2 / 1024}' "/proc/$broker_pid/status"; }

# CPU seconds the broker has used, all threads: utime + stime from /proc/PID/stat, in ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$broker_pid/stat" | awk '{print $12 + $13}'; }

# Sums a counter over every series of one metric family in /metrics.
metric_sum() {
  curl -s "http://127.0.0.1:$broker_port/metrics" |
    awk -v name="$1" '$1 == name || index($1, name "{") == 1 {sum += $NF; seen = 1}
                      END {if (seen) printf "%d\n", sum; else print "absent"}'
}

rows=()  # the table, markdown
add_row() { rows+=("| $1 | $2 | $3 | $4 |"); }

verdict() { awk "BEGIN {exit !($1)}" && echo PASS || echo FAIL; }

# steady_window: the broker over window_s, as the globals seconds (measured), cpu (% of one
# core), per_s (Redis commands sent per second), top (the three most sent) and scripted (per
# second, run inside its scripts).
seconds="" cpu="" per_s="" top="" scripted=""
steady_window() {
  local window_start ticks_start window_end ticks_end
  window_start=$(now_ms) ticks_start=$(cpu_ticks)
  watch_redis "$window_s"
  ticks_end=$(cpu_ticks) window_end=$(now_ms)
  seconds=$(awk -v ms=$((window_end - window_start)) 'BEGIN {printf "%.3f", ms / 1000}')
  cpu=$(awk -v t=$((ticks_end - ticks_start)) -v hz="$(getconf CLK_TCK)" -v s="$seconds" \
    'BEGIN {printf "%.2f", 100 * t / hz / s}')
  per_s=$(awk -v s="$seconds" '{n += $2} END {printf "%.1f", n / s}' "$work/commands")
  top=$(awk -v s="$seconds" 'NR <= 3 {printf "%s%s %.1f/s", (NR > 1 ? ", " : ""), $1, $2 / s}' \
    "$work/commands")
  scripted=$(awk -v s="$seconds" '{printf "%.1f", $1 / s}' "$work/scripted")
}

# ---------------------------------------------------------------------------------------------
# Scenarios

# 1: N apps, Redis, upstream at once; readiness, memory, then a steady window.
scenario_steady() {
  local count=$1
  echo "== $count apps"
  redis flushall >/dev/null
  write_config "$work/config.json" "$count"
  if ! start_broker "$work/config.json"; then
    echo "  $not_ready"
    add_row "$count apps: start until /readyz 200" "**$not_ready**; VmRSS $(memory_mb VmRSS 2>/dev/null || echo ?) MB" \
      "≤ $ready_timeout_s s" FAIL
    stop_process "$broker_pid"
    return
  fi
  local rss hwm
  rss=$(memory_mb VmRSS) hwm=$(memory_mb VmHWM)
  echo "  ready after $ready_ms ms: VmRSS $rss MB, VmHWM $hwm MB"
  add_row "$count apps: start until /readyz 200" "**$(awk -v ms="$ready_ms" 'BEGIN {printf "%.1f", ms / 1000}') s**" "" ""
  local rss_target="" rss_verdict=""
  if [ "$count" -le $rss_target_apps ]; then
    rss_target="≤ $rss_target_mb MB"
    rss_verdict=$(verdict "$rss <= $rss_target_mb")
  fi
  add_row "$count apps: memory once ready" "VmRSS **$rss MB**, VmHWM $hwm MB" "$rss_target" "$rss_verdict"

  sleep "$settle_s"
  local calls_before calls_after
  calls_before=$(fake_stats gettoken_calls)
  steady_window
  calls_after=$(fake_stats gettoken_calls)
  [ "$(http_status "http://127.0.0.1:$broker_port/readyz")" = 200 ] ||
    broken+=("$count apps: /readyz stopped answering 200 during the window")
  echo "  over ${seconds} s: CPU $cpu % of a core, Redis $per_s commands/s sent (${top:-none})" \
    "and $scripted/s inside scripts, $((calls_after - calls_before)) gettoken calls"
  add_row "$count apps: broker CPU over ${window_s} s once ready" \
    "**$cpu %** of a core ($((calls_after - calls_before)) gettoken calls in the window)" \
    "≤ $cpu_target_percent %" "$(verdict "$cpu <= $cpu_target_percent")"
  add_row "$count apps: Redis commands over ${window_s} s once ready" \
    "**$per_s/s** sent (top: ${top:-none}); $scripted/s inside its scripts" \
    "≤ $redis_target_per_s/s sent" \
    "$(verdict "$per_s <= $redis_target_per_s")"
  stop_process "$broker_pid"
}

# 2: cold start against a slow upstream: time to fresh, calls and TLS handshakes.
scenario_cold_start() {
  echo "== cold start: $cold_apps apps, upstream answers after $cold_delay_ms ms"
  head -n "$cold_apps" "$work/apps.txt" >"$work/cold.txt"
  start_fake "$work/cold.txt" --behaviour new --delay-ms "$cold_delay_ms"
  redis flushall >/dev/null
  write_config "$work/config.json" "$cold_apps"
  local handshakes_before
  handshakes_before=$(fake_stats tls_handshakes)
  if ! start_broker "$work/config.json"; then
    echo "  $not_ready"
    add_row "cold start: $cold_apps apps, upstream answers after $cold_delay_ms ms" \
      "**$not_ready**; gettoken calls $(fake_stats gettoken_calls)" "all fresh" FAIL
    stop_process "$broker_pid"
    stop_process "$fake_pid"
    return
  fi
  local calls handshakes in_flight broker_view broker_handshakes
  read -r calls handshakes in_flight < <(fake_stats gettoken_calls tls_handshakes \
    max_concurrent_gettoken_calls)
  handshakes=$((handshakes - handshakes_before - 1))  # less the second stats request's own
  # The broker's own view, and its handshake count once it has one.
  broker_view="/metrics: $(metric_sum token_broker_upstream_requests_total) upstream requests"
  broker_handshakes=$(metric_sum token_broker_upstream_tls_handshakes_total)
  [ "$broker_handshakes" = absent ] || broker_view+=", $broker_handshakes TLS handshakes"
  local floor_s
  floor_s=$(awk -v n="$cold_apps" -v d=$cold_delay_ms -v c="$in_flight" \
    'BEGIN {printf "%.1f", n * d / 1000 / c}')
  echo "  all fresh after $ready_ms ms; gettoken calls $calls, TLS handshakes $handshakes," \
    "at most $in_flight in flight (broker's $broker_view)"
  add_row "cold start: $cold_apps apps, upstream answers after $cold_delay_ms ms" \
    "all fresh after **$(awk -v ms="$ready_ms" 'BEGIN {printf "%.1f", ms / 1000}') s** (at most $in_flight calls in flight: floor $floor_s s); gettoken calls **$calls**; TLS handshakes **$handshakes** (broker's $broker_view)" \
    "one call per app; handshakes ≤ $handshake_target_percent % of calls" \
    "$(verdict "$calls == $cold_apps && $handshakes * 100 <= $calls * $handshake_target_percent")"
  stop_process "$broker_pid"
  stop_process "$fake_pid"
}

# 3: corps of one suite: each corp's token comes from get_corp_token with the suite's token,
# which needs the suite_ticket a service PUTs.
scenario_suite_corps() {
  echo "== $suite_corps corps on one suite, upstream answers after $cold_delay_ms ms"
  (
    umask 077
    export BENCH_SECRET=$run_secret
    awk -v n="$suite_corps" 'BEGIN { s = ENVIRON["BENCH_SECRET"]
      printf "wwsuitescale:%s-suite:%s-ticket\n", s, s
      for (i = 0; i < n; i++) printf "wwcorp%06d:%s-code-%d\n", i, s, i }' >"$work/suite.txt"
  )
  : >"$work/no-apps.txt"
  start_fake "$work/no-apps.txt" --behaviour new --delay-ms "$cold_delay_ms" --suite-file "$work/suite.txt"
  (
    umask 077
    {
      echo '{'
      echo "  \"listen\": \"127.0.0.1:$broker_port\", \"log_level\": \"warn\","
      echo "  \"upstream\": {\"base_url\": \"https://localhost:$fake_port\","
      echo "               \"ca_file\": \"$work/ca.pem\", \"timeout_ms\": 60000},"
      echo "  \"redis\": {\"url\": \"redis://127.0.0.1:$redis_port/0\"},"
      echo '  "suites": {"s": {"suite_id": "wwsuitescale",'
      awk 'NR == 1 { split($0, f, ":"); printf "    \"suite_secret\": \"%s\", \"corps\": {\n", f[2]; next }
        { split($0, f, ":"); printf "%s      \"%s\": {\"permanent_code\": \"%s\"}", (NR > 2 ? ",\n" : ""), f[1], f[2] }
        END { print "\n    }}}" }' "$work/suite.txt"
      echo '}'
    } >"$work/config.json"
  )
  redis flushall >/dev/null
  "$broker_binary" --config "$work/config.json" --check >/dev/null 2>"$work/broker.log" ||
    die "the broker rejected its config: $(tail -1 "$work/broker.log")"
  "$broker_binary" --config "$work/config.json" 2>>"$work/broker.log" &
  broker_pid=$!
  pids+=("$broker_pid")
  for _ in $(seq 300); do
    [ "$(http_status "http://127.0.0.1:$broker_port/healthz")" = 200 ] && break
    sleep 0.1
  done
  local handshakes_before started
  handshakes_before=$(fake_stats tls_handshakes)
  started=$(now_ms)
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary @- \
    "http://127.0.0.1:$broker_port/v1/suites/s/suite_ticket" \
    < <(printf '{"suite_ticket":"%s-ticket"}' "$run_secret"))" = 200 ] ||
    die "the suite_ticket PUT was refused"
  local deadline=$((started + ready_timeout_s * 1000))
  while [ "$(http_status "http://127.0.0.1:$broker_port/readyz" "$work/readyz")" != 200 ]; do
    alive "$broker_pid" || die "the broker died: $(tail -1 "$work/broker.log")"
    if [ "$(now_ms)" -ge $deadline ]; then
      add_row "$suite_corps corps of one suite: ticket until /readyz 200" \
        "**not ready after $ready_timeout_s s** ($(failing_apps) corps without a token)" "all fresh" FAIL
      stop_process "$broker_pid"
      stop_process "$fake_pid"
      return
    fi
    sleep 0.2
  done
  local ready=$(($(now_ms) - started)) calls suite_calls handshakes rss hwm
  read -r calls suite_calls handshakes < <(fake_stats get_corp_token_calls get_suite_token_calls \
    tls_handshakes)
  handshakes=$((handshakes - handshakes_before - 1))  # less the second stats request's own
  rss=$(memory_mb VmRSS) hwm=$(memory_mb VmHWM)
  echo "  all fresh ${ready} ms after the ticket; get_corp_token $calls, get_suite_token" \
    "$suite_calls, TLS handshakes $handshakes; VmRSS $rss MB, VmHWM $hwm MB"
  add_row "$suite_corps corps of one suite: ticket PUT until /readyz 200" \
    "all fresh after **$(awk -v ms="$ready" 'BEGIN {printf "%.1f", ms / 1000}') s**; get_corp_token **$calls**, get_suite_token $suite_calls; TLS handshakes **$handshakes**" \
    "one call per corp; handshakes ≤ $handshake_target_percent % of calls" \
    "$(verdict "$calls == $suite_corps && $handshakes * 100 <= $calls * $handshake_target_percent")"
  add_row "$suite_corps corps of one suite: memory once ready" "VmRSS **$rss MB**, VmHWM $hwm MB" \
    "≤ $rss_target_mb MB" "$(verdict "$rss <= $rss_target_mb")"

  sleep "$settle_s"
  steady_window
  echo "  over ${seconds} s: CPU $cpu % of a core, Redis $per_s commands/s sent (${top:-none})" \
    "and $scripted/s inside scripts"
  add_row "$suite_corps corps of one suite: CPU and Redis over ${window_s} s once ready" \
    "CPU **$cpu %** of a core; Redis **$per_s/s** sent (top: ${top:-none}), $scripted/s inside its scripts" \
    "≤ $cpu_target_percent %; ≤ $redis_target_per_s/s sent" \
    "$(verdict "$cpu <= $cpu_target_percent && $per_s <= $redis_target_per_s")"
  stop_process "$broker_pid"
  stop_process "$fake_pid"
}

describe_machine() {
  echo "Machine: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores" \
    "(nproc), $(awk '/^MemTotal:/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) RAM," \
    "Linux $(uname -r)"
  echo "Tools: $("$broker_binary" --version 2>&1 | head -1), $(redis-server --version | cut -d' ' -f1-3)"
  echo "One broker replica (threads = nproc, log_level warn) sharing a redis-server of its own;" \
    "7200 s tokens; steady window ${window_s} s, ${settle_s} s after ready"
}

# ---------------------------------------------------------------------------------------------

scripts/install-deps.sh  # redis-server and redis-cli among them
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || build_binaries
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
run_secret=$(random_hex 16)  # made up for this run; never printed

largest=$cold_apps
for count in "${counts[@]}"; do [ "$count" -gt "$largest" ] && largest=$count; done
app_entries "$largest"
start_redis
broker_port=$(free_port)

if [ ${#counts[@]} -gt 0 ]; then
  start_fake "$work/apps.txt" --behaviour new  # 7200 s tokens, answered at once
  for count in "${counts[@]}"; do scenario_steady "$count"; done
  stop_process "$fake_pid"
fi
scenario_cold_start
[ "$suite_corps" -gt 0 ] && scenario_suite_corps

echo
describe_machine
echo
echo "| measurement | token-broker | target | result |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ ${#broken[@]} -gt 0 ]; then
  echo
  printf 'BROKEN RUN: %s\n' "${broken[@]}"
  exit 1
fi
