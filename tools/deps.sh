#!/bin/sh
# Installs the Debian packages admit needs, or prints the command to do so.
# Run by `make deps`, which `make check`, `make bench` and `make demo` run.
set -eu

PKGS="build-essential clang libclang-rt-14-dev pkg-config valgrind doxygen
libhiredis-dev libuv1-dev libcmocka-dev redis-server redis-tools
python3-dev python3-cffi python3-setuptools python3-pytest python3-fastapi
python3-uvicorn python3-httpx python3-limits python3-redis python3-yaml python3-websockets
nginx"

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done

[ -z "$missing" ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    cmd="sudo sh -c '$cmd'"
  else
    echo "admit needs these Debian packages:$missing" >&2
    echo "Run as root:  $cmd" >&2
    exit 1
  fi
fi
echo "deps: installing$missing"
sh -c "$cmd" >&2
