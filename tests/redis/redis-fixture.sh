#!/bin/sh
# A throwaway redis-server for the tests that share one (a CTest fixture).
#
#   redis-fixture.sh start DIR   start it, loopback only, and write its port to DIR/port
#   redis-fixture.sh stop DIR    stop it and wait until it has exited
#
# Nothing is persisted (--save '' --appendonly no): every run starts empty, and the tests keep
# apart by key prefix, not by database.
set -eu

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$2

# The server's pid while it runs, else nothing. A daemonized redis-server is no child of ours
# and, in a container without a reaping init, may linger as a zombie: that counts as gone.
running_pid() {
  [ -s "$dir/redis.pid" ] || return 0
  pid=$(cat "$dir/redis.pid")
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  if [ -n "$state" ] && [ "$state" != Z ]; then echo "$pid"; fi
}

stop_server() {
  pid=$(running_pid)
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    # redis-server exits within milliseconds when there is nothing to save; 10 s is generous.
    tries=0
    while [ -n "$(running_pid)" ] && [ $tries -lt 100 ]; do
      sleep 0.1
      tries=$((tries + 1))
    done
    if [ -n "$(running_pid)" ]; then
      echo "redis-server $pid ignored SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/redis.pid" "$dir/port"
}

# Waits up to 5 s until the server on $1 answers and is the one this script started: its
# process_id matches our pidfile, so a foreign server that already held the port is not taken
# for ours. Fails early if our server has exited (the port was taken, most likely).
await_our_server() {
  port=$1
  tries=0
  while [ $tries -lt 50 ]; do
    pid=$(running_pid)
    if [ -n "$pid" ]; then
      answered=$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
                 tr -d '\r' | sed -n 's/^process_id://p')
      [ "$answered" = "$pid" ] && return 0
    elif [ $tries -ge 10 ]; then
      return 1  # no pidfile after 1 s: the server gave up at startup
    fi
    sleep 0.1
    tries=$((tries + 1))
  done
  return 1
}

start_server() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)  # redis-server needs absolute paths once it has chdir'ed to --dir
  stop_server              # a server left over from an interrupted run
  attempt=0
  while [ $attempt -lt 10 ]; do
    attempt=$((attempt + 1))
    port=$(shuf -i 20000-60999 -n 1)
    rm -f "$dir/redis.log"
    redis-server --bind 127.0.0.1 --port "$port" \
      --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
      --save '' --appendonly no \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
    if await_our_server "$port"; then
      echo "$port" > "$dir/port"
      echo "redis-server $(cat "$dir/redis.pid") listening on 127.0.0.1:$port"
      return 0
    fi
    stop_server
    echo "redis-server did not come up on port $port; trying another" >&2
  done
  echo "redis-server did not start; last log:" >&2
  cat "$dir/redis.log" >&2 || true
  exit 1
}

case "$action" in
  start) start_server ;;
  stop) stop_server ;;
  *) usage ;;
esac
