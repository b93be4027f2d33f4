#!/bin/sh
# Builds examples/c the way a user would: installs admit into a temporary
# DESTDIR (PREFIX=/usr), copies examples/c/server.c and its Makefile out of
# the tree, builds them with that Makefile through pkg-config (shared, then
# STATIC=1), and runs the HTTP tests against both binaries.
# Usage: install.sh [BUILD_DIR] (default build/c-example-install, a
# directory only ever built with PREFIX=/usr, since admit.pc records it).
set -eu
cd "$(dirname "$0")/../.."
O=${1:-build/c-example-install}
MAKE=${MAKE:-make}
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/admit-c-example.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
root=$tmp/root

fail() {
  echo "c-example install: FAIL: $*" >&2
  exit 1
}

$MAKE --no-print-directory O="$O" PREFIX=/usr DESTDIR="$root" install \
  >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "make install"; }

# Only the two files a user would copy; nothing else of the tree.
for kind in shared static; do
  mkdir -p "$tmp/$kind"
  cp examples/c/server.c examples/c/Makefile "$tmp/$kind/"
done
export PKG_CONFIG_PATH="$root/usr/lib/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$root"
$MAKE --no-print-directory -C "$tmp/shared" \
  CFLAGS="-O2 -g -Wall -Wextra -Werror" || fail "shared build"
$MAKE --no-print-directory -C "$tmp/static" STATIC=1 \
  CFLAGS="-O2 -g -Wall -Wextra -Werror" || fail "static build"

LD_LIBRARY_PATH="$root/usr/lib" ldd "$tmp/shared/server" \
  | grep -q "libadmit.so.[0-9]* => $root/usr/lib/" \
  || fail "the shared server does not load the installed libadmit.so"
if readelf -d "$tmp/static/server" | grep -q 'NEEDED.*libadmit'; then
  fail "the static server still needs libadmit.so"
fi

# The whole suite against the shared build, a quick part against the
# static one (Redis is covered by check-c-example).
LD_LIBRARY_PATH="$root/usr/lib" ADMIT_C_EXAMPLE="$tmp/shared/server" \
  ADMIT_TEST_REDIS_URL= PYTHONDONTWRITEBYTECODE=1 \
  "$PYTHON" -m pytest -q -p no:cacheprovider -k "not redis" test/c-example \
  || fail "HTTP tests of the shared build"
ADMIT_C_EXAMPLE="$tmp/static/server" ADMIT_TEST_REDIS_URL= \
  PYTHONDONTWRITEBYTECODE=1 "$PYTHON" -m pytest -q -p no:cacheprovider \
  -k "health or 429" test/c-example \
  || fail "HTTP tests of the static build"
echo "c-example install: examples/c/Makefile built server.c through" \
  "pkg-config against a DESTDIR install (shared, static); both served"
