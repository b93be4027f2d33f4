#!/bin/sh
# Runs a command with a throwaway redis-server on 127.0.0.1 (a free,
# non-default port, plus a unix socket, in a temp dir, no persistence).
# The command sees ADMIT_TEST_REDIS_URL (DB 15), ADMIT_TEST_REDIS_SOCK,
# ADMIT_TEST_REDIS_PORT and ADMIT_TEST_REDIS_PID; the server is stopped on
# exit. Without redis-server the command runs without these (tests skip).
set -u

if ! command -v redis-server >/dev/null 2>&1; then
  echo "run-redis: redis-server not found; Redis tests will be skipped" >&2
  exec "$@"
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/admit-redis.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill -CONT "$pid" 2>/dev/null
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

for attempt in 1 2 3 4 5; do
  port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --unixsocket "$dir/redis.sock" \
    --unixsocketperm 700 --dir "$dir" --save "" --appendonly no \
    --daemonize no --logfile "$dir/redis.log" &
  pid=$!
  i=0
  while [ $i -lt 100 ]; do
    if [ -S "$dir/redis.sock" ] && redis-cli -s "$dir/redis.sock" ping >/dev/null 2>&1; then
      break 2
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
    i=$((i + 1))
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
done

if [ -z "$pid" ]; then
  echo "run-redis: could not start redis-server" >&2
  cat "$dir/redis.log" >&2 2>/dev/null
  exit 1
fi

# Tests use DB 15 and refuse to run if it is not empty.
export ADMIT_TEST_REDIS_URL="redis://127.0.0.1:$port/15"
export ADMIT_TEST_REDIS_SOCK="$dir/redis.sock"
export ADMIT_TEST_REDIS_PORT="$port"
export ADMIT_TEST_REDIS_PID="$pid"
export ADMIT_TEST_REDIS_DIR="$dir"
"$@"
rc=$?
exit $rc
