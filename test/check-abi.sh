#!/bin/sh
# Checks the shared library's ABI surface: the soname follows the ABI major,
# every exported symbol is admit_-prefixed, and every exported function is
# declared in the public headers.
set -eu
dir=$1
so=$(ls "$dir"/libadmit.so.*.*.* | head -1)
soname=$(objdump -p "$so" | awk '/SONAME/ {print $2}')
major=$(sed -n 's/^#define ADMIT_VERSION_MAJOR \([0-9]*\)$/\1/p' include/admit/common.h)
[ "$soname" = "libadmit.so.$major" ] || { echo "bad SONAME: $soname"; exit 1; }
syms=$(nm -D --defined-only "$so" | awk '$2 ~ /[TDBR]/ {print $3}' | sort)
bad=$(echo "$syms" | grep -v '^admit_' || true)
[ -z "$bad" ] || { echo "exported symbols without admit_ prefix:"; echo "$bad"; exit 1; }
missing=""
for s in $syms; do
  grep -q "\b$s(" include/admit.h include/admit/*.h || missing="$missing $s"
done
[ -z "$missing" ] || { echo "exported but not declared:$missing"; exit 1; }
echo "abi: SONAME $soname, $(echo "$syms" | wc -l) exported symbols, all admit_ and declared"
