#!/bin/sh
# Runs cmocka test binaries (each under a timeout, with a throwaway
# redis-server) and prints one summary line. Usage: run-tests.sh DIR BIN...
# ADMIT_TEST_WRAP prefixes each binary (e.g. valgrind).
set -u
here=$(cd "$(dirname "$0")" && pwd)
dir=$1; shift

if [ -z "${ADMIT_TEST_REDIS_URL:-}" ]; then
  exec "$here/run-redis.sh" "$0" "$dir" "$@"
fi

timeout_s=${ADMIT_TEST_TIMEOUT:-300}
pass=0; fail=0; skip=0; failed=""
log=$(mktemp)
for bin in "$@"; do
  name=${bin##*/}
  # Each binary starts from an empty test DB, so one failure that left
  # keys behind does not make every later Redis test refuse to run.
  if [ -n "${ADMIT_TEST_REDIS_SOCK:-}" ]; then
    redis-cli -s "$ADMIT_TEST_REDIS_SOCK" -n 15 flushdb >/dev/null 2>&1
  fi
  # shellcheck disable=SC2086
  timeout --kill-after=10 "$timeout_s" ${ADMIT_TEST_WRAP:-} "$bin" >"$log" 2>&1
  rc=$?
  cat "$log"
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  pass=$((pass + ${p:-0})); skip=$((skip + ${s:-0}))
  if [ $rc -ne 0 ] || [ -n "$f" ]; then
    [ $rc -eq 124 ] && echo "$name: TIMEOUT after ${timeout_s}s"
    fail=$((fail + ${f:-1})); failed="$failed $name"
  fi
done
rm -f "$log"
echo "SUMMARY $dir: $pass passed, $fail failed, $skip skipped${failed:+ (failed:$failed)}"
[ $fail -eq 0 ]
