# What bench/run.sh and bench/scale.sh share: a scratch directory, the children they start
# (stopped on every exit), and small helpers. Sourced, never run.

work=$(mktemp -d)
pids=()
broken=()  # what went wrong, for the exit status

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

die() {
  echo "bench: $*" >&2
  exit 1
}

# The allocator setting the systemd unit and the container image give the broker (glibc's
# per-thread cache of freed blocks), read from the unit so that the two cannot drift, for
# every process of the run alike: the broker, nginx and wrk.
GLIBC_TUNABLES=$(sed -n 's/^Environment=GLIBC_TUNABLES=//p' systemd/token-broker.service)
[ -n "$GLIBC_TUNABLES" ] || die "systemd/token-broker.service sets no GLIBC_TUNABLES"
export GLIBC_TUNABLES

# A free loopback port below the ephemeral range, so no client socket takes it meanwhile.
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
  die "no free port found"
}

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# Stops one of our children and forgets its pid, so cleanup never signals a reused one.
stop_process() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local kept=() pid
  for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  pids=("${kept[@]}")
}
