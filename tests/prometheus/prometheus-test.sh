#!/usr/bin/env bash
# End-to-end test of deploy/prometheus/alerts.yml and deploy/grafana/token-broker.json
# against a real Prometheus scraping the real broker, which talks to the fake of WeCom.
#
#   prometheus-test.sh TOKEN_BROKER FAKE_WECOM      (CTest: label "prometheus")
#
# 1. promtool check rules + promtool test rules (the unit tests in alerts.test.yml).
# 2. Starts redis-server, fake-wecom, token-broker (one app with a jsapi ticket, Redis, and
#    the gateway with a tiny budget) and prometheus (scrape and evaluation every 1 s) on
#    free loopback ports. Prometheus loads a COPY of alerts.yml in which only the `for:`
#    durations are shortened to 2s (checked: no other line differs), so alerts fire in
#    seconds; thresholds and expressions are the shipped ones.
# 3. Healthy phase: some traffic, then at least three rule evaluations with every series
#    present: no alert may be pending or firing.
# 4. Failure phase, each a real failure: gateway calls beyond the budget (45009 from the
#    broker), redis-server stopped, and the app's secret replaced by a wrong one + SIGHUP
#    so that WeCom (the fake) answers errcode 40001. Polls /api/v1/alerts until
#    TokenBrokerCredentialsRejected, TokenBrokerCredentialNotReady, TokenBrokerRefreshFailing,
#    TokenBrokerRedisDown and TokenBrokerGatewayBudgetRejections are firing.
# 5. Every panel query (and template-variable query) of the dashboard, with $job, $instance,
#    $__rate_interval, $__interval and $__range substituted, is run as an instant query (it
#    must not error) and as a range query over the whole run, as Grafana does (it must return
#    at least one series: no panel queries a series that does not exist).
# Everything started is stopped on exit. Never prints a secret or a token.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 TOKEN_BROKER FAKE_WECOM" >&2; exit 2; }
broker_bin=$(realpath "$1")
fake_bin=$(realpath "$2")
repo=$(cd "$(dirname "$0")/../.." && pwd)
alerts=$repo/deploy/prometheus/alerts.yml
alert_tests=$repo/deploy/prometheus/alerts.test.yml
dashboard=$repo/deploy/grafana/token-broker.json

for tool in prometheus promtool redis-server redis-cli node curl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed" >&2; exit 1; }
done

started_at=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/token-broker-prometheus.XXXXXX")
pids=()
passed=false
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if $passed; then
    rm -rf "$work"
  else
    echo "--- logs kept in $work; their last lines:" >&2
    for log in "$work"/*.log; do
      [ -f "$log" ] && { echo "== $log" >&2; tail -n 15 "$log" >&2; }
    done
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

step() { printf '[%3ds] %s\n' "$(($(date +%s) - started_at))" "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# Polls `command...` every 0.2 s until it succeeds or `seconds` pass.
poll() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

free_port() {
  node -e 'const s = require("net").createServer();
           s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# --- 1. promtool ----------------------------------------------------------------------
step "promtool check rules"
promtool check rules "$alerts" || fail "promtool check rules"
step "promtool test rules"
(cd "$(dirname "$alert_tests")" && promtool test rules "$(basename "$alert_tests")") ||
  fail "promtool test rules"

# --- 2. processes -----------------------------------------------------------------------
redis_port=$(free_port)
broker_port=$(free_port)
prometheus_port=$(free_port)
broker=127.0.0.1:$broker_port
prometheus_url=http://127.0.0.1:$prometheus_port

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
poll 10 redis-cli -p "$redis_port" ping >/dev/null 2>&1 || fail "redis-server did not start"

# A secret made up for this run; only files and the fake's command line hold it.
secret="prom-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
corpid=wwprometheus0001
"$fake_bin" --port 0 --port-file "$work/fake.port" --ca-out "$work/ca.pem" \
  --app "$corpid:$secret" >"$work/fake.log" 2>&1 &
pids+=($!)
poll 10 test -s "$work/fake.port" || fail "fake-wecom did not start"

umask 077
printf '%s' "$secret" >"$work/secret"
cat >"$work/broker.json" <<EOF
{
  "listen": "$broker",
  "threads": 2,
  "log_level": "info",
  "upstream": { "base_url": "https://localhost:$(cat "$work/fake.port")",
                "ca_file": "$work/ca.pem", "timeout_ms": 2000 },
  // Retries of a failing refresh every second, so the failure counters move quickly.
  "refresh": { "ahead_s": 300, "jitter_s": 0, "retry_min_ms": 200, "retry_max_ms": 1000,
               "min_interval_s": 1 },
  "redis": { "url": "redis://127.0.0.1:$redis_port/0", "key_prefix": "prometheus-test:" },
  // A budget of 2 calls a minute, so a few calls reach budget rejections.
  "gateway": { "enabled": true, "budget": { "per_minute": 2, "per_hour": 1000, "concurrency": 0 } },
  "apps": { "demo": { "corpid": "$corpid", "agentid": 1000002, "secret_file": "$work/secret",
                      "tickets": ["jsapi"] } }
}
EOF
"$broker_bin" --config "$work/broker.json" --check >/dev/null || fail "broker config check"
"$broker_bin" --config "$work/broker.json" >"$work/broker.log" 2>&1 &
broker_pid=$!
pids+=("$broker_pid")
poll 15 curl -sf -o /dev/null "http://$broker/readyz" || fail "the broker did not become ready"
step "redis, fake-wecom and token-broker up (broker on $broker)"

# Only the `for:` durations differ from the shipped rules.
sed -E 's/^([[:space:]]+for:[[:space:]]*).*/\12s/' "$alerts" >"$work/alerts.yml"
if diff "$alerts" "$work/alerts.yml" | grep -E '^[<>]' | grep -vqE '^[<>][[:space:]]+for:'; then
  fail "shortening for: changed other lines"
fi
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $work/alerts.yml
scrape_configs:
  - job_name: token-broker
    static_configs:
      - targets: ["$broker"]
EOF
promtool check config "$work/prometheus.yml" >/dev/null || fail "promtool check config"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
range_start=$(date +%s)

# JSON answers of Prometheus, read with node (jq is not a dependency).
cat >"$work/json.js" <<'EOF'
// node json.js EXPRESSION < answer.json: prints the value of EXPRESSION (over `d`).
let text = "";
process.stdin.on("data", (chunk) => (text += chunk));
process.stdin.on("end", () => {
  const d = JSON.parse(text);
  const value = eval(process.argv[2]);
  if (value !== undefined) console.log(typeof value === "string" ? value : JSON.stringify(value));
});
EOF
prom_get() { curl -sf --max-time 5 "$prometheus_url$1"; }
js() { node "$work/json.js" "$1"; }

target_up() {
  local answer
  answer=$(prom_get /api/v1/targets) || return 1
  [ "$(js 'd.data.activeTargets.filter(t => t.labels.job === "token-broker" && t.health === "up").length' <<<"$answer")" = 1 ]
}
poll 30 target_up || fail "Prometheus never saw the broker target up"
step "prometheus up on 127.0.0.1:$prometheus_port, broker target healthy"

# --- 3. healthy phase ---------------------------------------------------------------------
curl -sf -o /dev/null "http://$broker/v1/apps/demo/token" || fail "GET token"
curl -sf -o /dev/null "http://$broker/v1/apps/demo/jsapi_ticket" || fail "GET jsapi_ticket"
curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d '{"url":"https://intranet.example.com/page"}' "http://$broker/v1/apps/demo/jssdk_signature" ||
  fail "POST jssdk_signature"
gateway_call() { curl -s --max-time 5 "http://$broker/v1/apps/demo/api/cgi-bin/user/get?userid=u1"; }
gateway_call | grep -q '"errcode":0' || fail "gateway call"

# The instant value of a query's first series, or nothing.
query_value() {
  local answer
  answer=$(curl -sf --max-time 5 --data-urlencode "query=$1" "$prometheus_url/api/v1/query") || return 0
  js 'd.data.result.length ? d.data.result[0].value[1] : undefined' <<<"$answer"
}
# Waits until Prometheus has scraped the traffic above, then for three more rule evaluations.
seen_gateway() { [ -n "$(query_value 'token_broker_gateway_requests_total{outcome="ok"}')" ]; }
poll 15 seen_gateway || fail "Prometheus did not scrape the gateway series"
evaluated_after() {
  local answer
  answer=$(prom_get /api/v1/rules) || return 1
  [ "$(js "d.data.groups.every(g => Date.parse(g.lastEvaluation) / 1000 > $1) ? 1 : 0" <<<"$answer")" = 1 ]
}
poll 15 evaluated_after "$(($(date +%s) + 3))" || fail "rules were not evaluated"
active=$(prom_get /api/v1/alerts | js 'd.data.alerts.map(a => a.labels.alertname + "(" + a.state + ")").join(" ")')
[ -z "$active" ] || fail "alerts active on a healthy broker: $active"
step "healthy broker: rules evaluated, no alert pending or firing"

# --- 4. failure phase ------------------------------------------------------------------------
# Budget rejections seen by Prometheus at two values, so their rate is above 0.
rejections() { query_value 'token_broker_gateway_budget_rejections_total'; }
reject_once() {
  local before=$1
  gateway_call | grep -q '"errcode":45009' || return 1
  [ "$(rejections)" != "$before" ]
}
budget_rejected() {
  local before
  before=$(rejections)
  poll 10 reject_once "$before"
}
gateway_call >/dev/null  # the second call allowed this minute
budget_rejected || fail "no budget rejection scraped"
budget_rejected || fail "no second budget rejection scraped"
step "gateway budget rejections: $(rejections) scraped"

failure_started=$(date +%s)
kill "$redis_pid"
redis_down() { curl -sf "http://$broker/metrics" | grep -qx 'token_broker_redis_up 0'; }
poll 15 redis_down || fail "the broker did not notice Redis going away"
step "redis-server stopped; broker reports token_broker_redis_up 0"

printf '%s' "wrong-$secret" >"$work/secret"
kill -HUP "$broker_pid"
step "secret replaced by a wrong one + SIGHUP: WeCom will answer 40001"

expected=(TokenBrokerCredentialsRejected TokenBrokerCredentialNotReady TokenBrokerRefreshFailing
  TokenBrokerRedisDown TokenBrokerGatewayBudgetRejections)
declare -A fired_after=()
all_fired() {
  local answer name
  answer=$(prom_get /api/v1/alerts) || return 1
  for name in "${expected[@]}"; do
    [ -n "${fired_after[$name]:-}" ] && continue
    if [ "$(js "d.data.alerts.some(a => a.labels.alertname === '$name' && a.state === 'firing') ? 1 : 0" <<<"$answer")" = 1 ]; then
      fired_after[$name]=$(($(date +%s) - failure_started))
      step "firing: $name (${fired_after[$name]}s after the failures began)"
    fi
  done
  [ ${#fired_after[@]} -eq ${#expected[@]} ]
}
if ! poll 40 all_fired; then
  for name in "${expected[@]}"; do [ -n "${fired_after[$name]:-}" ] || echo "not firing: $name" >&2; done
  fail "expected alerts did not fire"
fi
echo "firing alerts:"
prom_get /api/v1/alerts | js 'd.data.alerts.filter(a => a.state === "firing").map(a =>
  "  " + a.labels.alertname + " " + JSON.stringify(Object.fromEntries(Object.entries(a.labels).filter(([k]) =>
  k !== "alertname"))) + "\n    " + a.annotations.summary).join("\n")'
grep -q 'errcode=40001' "$work/broker.log" || fail "the broker log shows no 40001"

# --- 5. every dashboard query -----------------------------------------------------------------
range_end=$(date +%s)
cat >"$work/panels.js" <<'EOF'
// node panels.js DASHBOARD PROMETHEUS_URL START END INSTANCE: runs every query of the
// dashboard; exits 1 when one errors or comes back empty.
const [file, base, start, end, instance] = process.argv.slice(2);
const dashboard = JSON.parse(require("fs").readFileSync(file, "utf8"));
const substitute = (expr) =>
  expr
    .replaceAll("$__rate_interval", "4s") // Grafana's floor: 4 x the 1 s scrape interval
    .replaceAll("$__interval", "1s")
    .replaceAll("$__range", `${Math.max(1, end - start)}s`)
    .replaceAll("$job", "token-broker")
    .replaceAll("$instance", instance.replaceAll(".", "\\\\."));
async function ask(path, params) {
  const response = await fetch(`${base}${path}?${new URLSearchParams(params)}`);
  const body = await response.json();
  if (body.status !== "success") throw new Error(`${body.errorType}: ${body.error}`);
  return body.data;
}
(async () => {
  let failures = 0;
  const queries = [];
  const walk = (panels) => {
    for (const panel of panels || []) {
      for (const target of panel.targets || []) queries.push([`${panel.title} [${target.refId}]`, target.expr]);
      walk(panel.panels);
    }
  };
  walk(dashboard.panels);
  for (const a of dashboard.annotations.list) if (a.expr) queries.push([`annotation ${a.name}`, a.expr]);
  for (const [name, expr] of queries) {
    const query = substitute(expr);
    try {
      if (/\$/.test(query.replace(/\{\{[^}]*\}\}/g, ""))) throw new Error("unsubstituted variable");
      const instant = await ask("/api/v1/query", { query, time: end });
      const range = await ask("/api/v1/query_range", { query, start, end, step: "1" });
      const points = range.result.reduce((n, series) => n + series.values.length, 0);
      const ok = range.result.length > 0;
      if (!ok) failures++;
      console.log(`  ${ok ? "ok  " : "FAIL"} ${name}: ${range.result.length} series (${points} points), ` +
                  `${instant.result.length} now`);
    } catch (error) {
      failures++;
      console.log(`  FAIL ${name}: ${error.message}\n       ${query}`);
    }
  }
  // Template variables: label_values(METRIC{...}, LABEL) is /api/v1/label/LABEL/values.
  for (const variable of dashboard.templating.list.filter((v) => v.type === "query")) {
    const query = variable.query.query || variable.query;
    const parsed = /^label_values\((.*),\s*(\w+)\)$/.exec(query);
    try {
      if (!parsed) throw new Error(`unexpected variable query ${query}`);
      const values = await ask(`/api/v1/label/${parsed[2]}/values`,
                               { "match[]": substitute(parsed[1]), start, end });
      if (!values.length) throw new Error("no values");
      console.log(`  ok   variable $${variable.name}: ${values.join(", ")}`);
    } catch (error) {
      failures++;
      console.log(`  FAIL variable $${variable.name}: ${error.message}`);
    }
  }
  console.log(`${queries.length} panel queries, ${failures} failed`);
  process.exit(failures ? 1 : 0);
})();
EOF
step "dashboard queries over the run ($((range_end - range_start)) s):"
node "$work/panels.js" "$dashboard" "$prometheus_url" "$range_start" "$range_end" "$broker" ||
  fail "dashboard queries"

passed=true
step "PASS: promtool ok, no alert on a healthy broker, ${#expected[@]} alerts fired, every dashboard query answered"
