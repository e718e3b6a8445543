#!/usr/bin/env bash
# Builds the libFuzzer targets (in preset "asan": clang-14, ASan + UBSan) and runs each for a
# bounded time over its seeds in fuzz/corpus/<target>/, one target at a time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]    (default: 60 s, every target)
#
# New inputs go to build/asan/corpus-work/<target>/, started afresh on every run; the seeds
# in the repository are only read. Prints one line per target (executions, exec/s, coverage,
# corpus) and exits non-zero if any target found a crash, a leak or a timeout, naming the
# input that shows it (build/asan/artifacts/<target>/...). Replay one with
# `build/asan/fuzz/<target> FILE`.
#
# Each compile and each fuzzer run takes the lock file $TOKEN_BROKER_BUILD_LOCK (default
# /tmp/build.lock), so that builds sharing the machine take turns; set it to "" for no lock
# (e.g. when the caller already holds it).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_config fuzz_http_request fuzz_upstream_answer fuzz_redis_reply fuzz_callback_crypt)

# Longest input per target: a config file, a connection's worth of requests (the header and
# body caps are 8 and 16 KiB), one upstream answer, a few Redis replies, a callback's
# encrypted text.
declare -A max_len=(
  [fuzz_config]=65536
  [fuzz_http_request]=32768
  [fuzz_upstream_answer]=8192
  [fuzz_redis_reply]=4096
  [fuzz_callback_crypt]=8192
)

lock=${TOKEN_BROKER_BUILD_LOCK-/tmp/build.lock}
locked() { if [ -n "$lock" ]; then flock "$lock" "$@"; else "$@"; fi; }

build=build/asan
locked cmake --preset asan >/dev/null
locked cmake --build --preset asan --target "${targets[@]}"

# Sanitizer reports end the run at once, with a stack that names the line.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
summary=()
for target in "${targets[@]}"; do
  [ -n "${max_len[$target]:-}" ] || { echo "unknown target: $target" >&2; exit 2; }
  work=$build/corpus-work/$target
  artifacts=$build/artifacts/$target
  log=$build/logs/$target.log
  rm -rf "$work"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  dictionary=()
  [ -f "fuzz/$target.dict" ] && dictionary=(-dict="fuzz/$target.dict")

  echo "=== $target: ${seconds} s"
  status=0
  # The first directory receives new inputs; the seeds are read only.
  locked "$build/fuzz/$target" -max_total_time="$seconds" -max_len="${max_len[$target]}" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "${dictionary[@]}" "$work" "fuzz/corpus/$target" </dev/null >"$log" 2>&1 || status=$?

  # "#123456 DONE cov: 1234 ft: 5678 corp: 345/12Kb lim: 4096 exec/s: 2057 rss: 80Mb"
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  stat() { grep -E "^stat::$1:" "$log" | awk '{print $2}' | tail -n 1; }
  if [ "$status" -eq 0 ] && [ -n "$done_line" ]; then
    cov=$(sed -E 's/.* cov: ([0-9]+).*/\1/' <<<"$done_line")
    ft=$(sed -E 's/.* ft: ([0-9]+).*/\1/' <<<"$done_line")
    corp=$(sed -E 's/.* corp: ([^ ]+).*/\1/' <<<"$done_line")
    line="$target: $(stat number_of_executed_units) execs, $(stat average_exec_per_sec) exec/s,"
    line+=" cov: $cov ft: $ft corpus: $corp (units/size), peak rss $(stat peak_rss_mb) MB — ok"
  else
    failed=1
    finding=$(grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|ALARM|fuzz_[a-z_]+: )' "$log" |
              head -n 1 || true)
    input=$(grep -oE "(Test unit|artifact) written to [^ ]+" "$log" | awk '{print $NF}' |
            tail -n 1 || true)
    tail -n 40 "$log"
    line="$target: FAILED (exit $status): ${finding:-see $log}; input: ${input:-none}; log: $log"
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "=== fuzzing summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
