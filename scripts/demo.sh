#!/usr/bin/env bash
# The demo: builds token-broker, starts the bundled fake of WeCom (HTTPS, with a CA made for
# this run) and the broker on config/demo.json, fetches one token and one JS-SDK signature with
# curl, then runs until Ctrl-C. With --once it stops after those (CI uses that).
set -euo pipefail
cd "$(dirname "$0")/.."
once=false
[ "${1:-}" = "--once" ] && once=true

scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target token-broker fake-wecom

for port in 8080 9443; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; the demo needs it free" >&2
    exit 1
  fi
done

demo_dir=build/demo
rm -rf "$demo_dir" && mkdir -p "$demo_dir"
# A secret made up for this run; config/demo.json reads it from the environment.
DEMO_WECOM_SECRET="demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export DEMO_WECOM_SECRET

pids=()
cleanup() {
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# 2-minute tokens, so the broker's refreshes show in the log while you watch.
build/release/tests/fake-wecom --port 9443 --lifetime 120 --ca-out "$demo_dir/ca.pem" \
  --port-file "$demo_dir/fake.port" --app "ww0123456789abcdef:$DEMO_WECOM_SECRET" &
pids+=($!)
for _ in $(seq 100); do [ -s "$demo_dir/fake.port" ] && break; sleep 0.1; done
[ -s "$demo_dir/fake.port" ] || { echo "fake WeCom did not start" >&2; exit 1; }

build/release/token-broker --config config/demo.json --check
build/release/token-broker --config config/demo.json &
pids+=($!)

answer=""
for _ in $(seq 100); do
  answer=$(curl -sf http://127.0.0.1:8080/v1/apps/demo/token) && break
  sleep 0.1
done
[ -n "$answer" ] || { echo "the broker did not hand out a token" >&2; exit 1; }

signature=$(curl -sf -X POST -H 'Content-Type: application/json' \
  -d '{"url": "https://intranet.example.com/page?id=1#top"}' \
  http://127.0.0.1:8080/v1/apps/demo/jssdk_signature) ||
  { echo "the broker did not sign a page" >&2; exit 1; }

echo
echo "token-broker answered: $answer"
echo "and signed a page for wx.config and wx.agentConfig: $signature"
echo
echo "Try it yourself:"
echo "  curl -s http://127.0.0.1:8080/v1/apps/demo/token"
echo "  curl -s http://127.0.0.1:8080/v1/apps/demo/jsapi_ticket"
echo "  curl -s -d '{\"url\":\"https://intranet.example.com/\"}' http://127.0.0.1:8080/v1/apps/demo/jssdk_signature"
echo "  curl -s http://127.0.0.1:8080/v1/apps"
echo
$once && exit 0
echo "Running; Ctrl-C stops the broker and the fake."
wait
