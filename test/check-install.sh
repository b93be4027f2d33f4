#!/bin/sh
# Installs admit into a temporary DESTDIR (PREFIX=/usr), checks the files and
# admit.pc, builds examples/quickstart.c against the installed copy through
# pkg-config (shared and static), runs both, and checks that `make uninstall`
# removes every installed file. Usage: check-install.sh [BUILD_DIR]
# (default build/check-install: a directory only ever built with
# PREFIX=/usr, because admit.pc records the prefix it was built with).
set -eu
cd "$(dirname "$0")/.."
O=${1:-build/check-install}
MAKE=${MAKE:-make}
CC=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/admit-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
root=$tmp/root
work=$tmp/work
mkdir -p "$root" "$work"

fail() {
  echo "check-install: FAIL: $*" >&2
  exit 1
}

ver_part() {
  sed -n "s/^#define ADMIT_VERSION_$1 \([0-9]*\)$/\1/p" include/admit/common.h
}
major=$(ver_part MAJOR)
version=$major.$(ver_part MINOR).$(ver_part PATCH)

# --- install ---------------------------------------------------------------
$MAKE --no-print-directory O="$O" PREFIX=/usr DESTDIR="$root" install \
  >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "make install"; }

want="usr/include/admit.h
usr/lib/libadmit.a
usr/lib/libadmit.so
usr/lib/libadmit.so.$major
usr/lib/libadmit.so.$version
usr/lib/pkgconfig/admit.pc"
for h in include/admit/*.h; do
  want="$want
usr/include/admit/${h##*/}"
done
want=$(echo "$want" | sort)
have=$(cd "$root" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort)
[ "$have" = "$want" ] || {
  echo "installed:"; echo "$have"; echo "expected:"; echo "$want"
  fail "installed files differ"
}
lib=$root/usr/lib
if [ ! -L "$lib/libadmit.so" ] || [ ! -L "$lib/libadmit.so.$major" ]; then
  fail "libadmit.so and libadmit.so.$major must be symlinks"
fi
[ "$(readlink "$root/usr/lib/libadmit.so")" = "libadmit.so.$version" ] \
  || fail "libadmit.so points to $(readlink "$root/usr/lib/libadmit.so")"
soname=$(objdump -p "$lib/libadmit.so.$version" | awk '/SONAME/ {print $2}')
[ "$soname" = "libadmit.so.$major" ] || fail "SONAME is '$soname'"
cmp -s include/admit.h "$root/usr/include/admit.h" || fail "admit.h differs"

# --- admit.pc --------------------------------------------------------------
pc=$root/usr/lib/pkgconfig/admit.pc
grep -qx 'prefix=/usr' "$pc" || fail "admit.pc: prefix is not /usr"
grep -qx 'libdir=/usr/lib' "$pc" || fail "admit.pc: libdir is not /usr/lib"
grep -qx 'includedir=/usr/include' "$pc" \
  || fail "admit.pc: includedir is not /usr/include"
if grep -q '@[A-Z]*@' "$pc"; then fail "admit.pc: unsubstituted @VAR@"; fi

export PKG_CONFIG_PATH="$root/usr/lib/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$root"
pkg-config --validate admit || fail "pkg-config --validate admit"
[ "$(pkg-config --modversion admit)" = "$version" ] \
  || fail "admit.pc version $(pkg-config --modversion admit), want $version"
pkg-config --exists 'admit >= 0.1' || fail "pkg-config version compare"
cflags=$(pkg-config --cflags admit)
libs=$(pkg-config --libs admit)
slibs=$(pkg-config --static --libs admit)
echo "$cflags" | grep -q -- "-I$root/usr/include" \
  || fail "--cflags is '$cflags'"
echo "$libs" | grep -q -- "-L$root/usr/lib" || fail "--libs is '$libs'"
echo "$libs" | grep -q -- "-ladmit" || fail "--libs is '$libs'"
# A shared link needs only -ladmit; a static one also its dependencies.
for l in -lhiredis -luv -lpthread -lm; do
  echo " $slibs " | grep -q -- " $l " || fail "--static --libs lacks $l: $slibs"
done
if echo " $libs " | grep -q -- " -lhiredis "; then
  fail "--libs exposes private dependencies: $libs"
fi

# --- build and run the quickstart -------------------------------------------
# The header alone must compile cleanly in strict C and as C++.
printf '#include <admit.h>\nint main(void) { return admit_version() == 0; }\n' \
  >"$work/strict.c"
# shellcheck disable=SC2086
$CC -std=c11 -pedantic -Wall -Wextra -Werror $cflags -c -o "$work/strict.o" \
  "$work/strict.c" || fail "admit.h is not clean C11"
if command -v c++ >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  c++ -x c++ -std=c++11 -Wall -Wextra -Werror $cflags -fsyntax-only \
    "$work/strict.c" || fail "admit.h does not compile as C++"
fi

check_output() {
  out=$1
  [ "$(wc -l <"$out")" -eq 12 ] || { cat "$out"; fail "$2: not 12 lines"; }
  i=0
  while [ $i -lt 10 ]; do
    line=$(printf '%2d: allowed, remaining %d, retry after 0.0 s' $i $((9 - i)))
    grep -qxF "$line" "$out" || { cat "$out"; fail "$2: no line '$line'"; }
    i=$((i + 1))
  done
  denied='^1[01]: denied, remaining 0, retry after [56]\.[0-9] s$'
  [ "$(grep -c "$denied" "$out")" -eq 2 ] \
    || { cat "$out"; fail "$2: two denials expected"; }
}

# shellcheck disable=SC2086
$CC -std=c11 -Wall -Wextra -Werror $cflags -o "$work/quickstart-shared" \
  examples/quickstart.c $libs || fail "shared build"
LD_LIBRARY_PATH="$root/usr/lib" ldd "$work/quickstart-shared" \
  | grep -q "libadmit.so.$major => $root/usr/lib/libadmit.so.$major" \
  || fail "shared quickstart does not load the installed libadmit.so.$major"
LD_LIBRARY_PATH="$root/usr/lib" "$work/quickstart-shared" >"$work/shared.out" \
  || { cat "$work/shared.out"; fail "shared quickstart exited non-zero"; }
check_output "$work/shared.out" shared

# Static: the same flags, with the archive picked instead of the .so.
slibs_a=$(echo " $slibs " | sed 's/ -ladmit / -l:libadmit.a /')
# shellcheck disable=SC2086
$CC -std=c11 -Wall -Wextra -Werror $cflags -o "$work/quickstart-static" \
  examples/quickstart.c $slibs_a || fail "static build"
if readelf -d "$work/quickstart-static" | grep -q 'NEEDED.*libadmit'; then
  fail "static quickstart still needs libadmit.so"
fi
"$work/quickstart-static" >"$work/static.out" \
  || { cat "$work/static.out"; fail "static quickstart exited non-zero"; }
check_output "$work/static.out" static

# --- uninstall ---------------------------------------------------------------
$MAKE --no-print-directory O="$O" PREFIX=/usr DESTDIR="$root" uninstall \
  >"$work/uninstall.log" 2>&1 \
  || { cat "$work/uninstall.log"; fail "make uninstall"; }
left=$(cd "$root" && find . \( -type f -o -type l \) | sed 's|^\./||')
[ -z "$left" ] || { echo "$left"; fail "make uninstall left files behind"; }

echo "check-install: $(echo "$want" | wc -l) files and admit.pc $version ok;" \
  "quickstart built through pkg-config (shared, static) and ran; uninstalled"
