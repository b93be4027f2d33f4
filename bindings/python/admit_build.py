"""Builds the ``admit._admit`` extension: cffi out-of-line API mode.

The cdef is generated from the real public headers (``include/admit.h``
and ``include/admit/*.h``) by running them through the C preprocessor with
empty stand-ins for ``<stddef.h>`` and ``<stdint.h>``, so it can never drift
from the library. Object-like ``#define ADMIT_*`` constants are added as
``#define NAME ...`` so the compiler supplies their values.

Where libadmit comes from, in order:

* ``ADMIT_LIB_DIR`` (a directory with ``libadmit.a`` or ``libadmit.so``)
  and ``ADMIT_INCLUDE_DIR``, e.g. ``make python`` passes ``$(O)``;
* in a source tree, ``make O=build/python-ext lib`` is run first and its
  static library is linked in, so the extension needs nothing at run time
  but hiredis and libuv;
* otherwise an installed libadmit (``pkg-config admit``).

``fastpath.c`` is compiled into the same extension: native callables for
the hottest in-process calls (``KeyedLimiter.hit``, ``Limiter.hit``).

Run directly (``python3 admit_build.py``) to build in place; setup.py uses
the ``ffibuilder`` object.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CC = os.environ.get("CC", "cc")

# Extra C code compiled into the extension: thin fast paths that save a
# struct round trip or argument conversions for the commonest calls. Every
# decision is still made by libadmit; these only return a field of its
# answer.
#
# The admit_py_fast_* helpers never block (in-process limiters only), so
# they keep the GIL: releasing and taking it back would cost more than the
# call. Every other function, among them every call that can wait, releases
# the GIL as cffi does by default. cffi's wrappers bracket each call with
# Py_BEGIN/END_ALLOW_THREADS; redefined here, they skip the release for the
# wrappers of the fast helpers only (__func__ names the wrapper).
EXTRA_C = r"""
#include <string.h>

#define ADMIT_PY_FAST_PREFIX "_cffi_f_admit_py_fast_"
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS                                              \
  {                                                                         \
    PyThreadState* _save =                                                  \
        strncmp(__func__, ADMIT_PY_FAST_PREFIX,                             \
                sizeof(ADMIT_PY_FAST_PREFIX) - 1) == 0                      \
            ? NULL                                                          \
            : PyEval_SaveThread();
#define Py_END_ALLOW_THREADS                                                \
  if (_save != NULL) PyEval_RestoreThread(_save);                           \
  }

static int admit_py_fast_limiter_hit(admit_limiter_t* l, uint64_t cost) {
  admit_decision_t d;
  int rc = admit_limiter_try(l, cost, &d);
  return rc < 0 ? rc : d.allowed;
}

static int admit_py_fast_limiter_try(admit_limiter_t* l, uint64_t cost,
                                     admit_decision_t* d) {
  return admit_limiter_try(l, cost, d);
}

static int admit_py_fast_keyed_hit1(admit_keyed_t* k, const char* key,
                                    size_t keylen) {
  admit_decision_t d;
  int rc = admit_keyed_try(k, 0, key, keylen, 1, &d);
  return rc < 0 ? rc : d.allowed;
}

static int admit_py_fast_keyed_hit(admit_keyed_t* k, uint32_t tier,
                                   const char* key, size_t keylen,
                                   uint64_t cost) {
  admit_decision_t d;
  int rc = admit_keyed_try(k, tier, key, keylen, cost, &d);
  return rc < 0 ? rc : d.allowed;
}

static int admit_py_fast_keyed_try(admit_keyed_t* k, uint32_t tier,
                                   const char* key, size_t keylen,
                                   uint64_t cost, admit_decision_t* d) {
  return admit_keyed_try(k, tier, key, keylen, cost, d);
}

static int admit_py_fast_semaphore_try(admit_semaphore_t* s) {
  return admit_semaphore_try(s);
}

/* The same, releasing the GIL, for limiters on a Python clock: that clock's
 * callback takes the GIL, possibly on another thread that holds a lock a
 * fast path would wait for with the GIL held. */
static int admit_py_limiter_hit(admit_limiter_t* l, uint64_t cost) {
  return admit_py_fast_limiter_hit(l, cost);
}

static int admit_py_keyed_hit1(admit_keyed_t* k, const char* key,
                               size_t keylen) {
  return admit_py_fast_keyed_hit1(k, key, keylen);
}

static int admit_py_keyed_hit(admit_keyed_t* k, uint32_t tier,
                              const char* key, size_t keylen,
                              uint64_t cost) {
  return admit_py_fast_keyed_hit(k, tier, key, keylen, cost);
}

/* Completion callbacks for the asynchronous refunds and pauses: @p ud is an
 * admit_notify_node_t; they run on the Redis I/O thread and only post the
 * outcome (and a pause's end, in the node's value) to the loop's queue, so
 * no Python runs there. Never called from Python. */
static void admit_py_done_post(void* ud, int status, uint64_t until_ns) {
  admit_notify_node_t* n = (admit_notify_node_t*)ud;
  n->value = until_ns;
  admit_notify_post(n, status);
}

static void admit_py_guard_done_post(void* ud, int status) {
  admit_notify_post((admit_notify_node_t*)ud, status);
}
"""

EXTRA_CDEF = """
int admit_py_fast_limiter_hit(admit_limiter_t* l, uint64_t cost);
int admit_py_fast_limiter_try(admit_limiter_t* l, uint64_t cost,
                              admit_decision_t* d);
int admit_py_fast_keyed_hit1(admit_keyed_t* k, const char* key,
                             size_t keylen);
int admit_py_fast_keyed_hit(admit_keyed_t* k, uint32_t tier,
                            const char* key, size_t keylen, uint64_t cost);
int admit_py_fast_keyed_try(admit_keyed_t* k, uint32_t tier,
                            const char* key, size_t keylen, uint64_t cost,
                            admit_decision_t* d);
int admit_py_fast_semaphore_try(admit_semaphore_t* s);
int admit_py_limiter_hit(admit_limiter_t* l, uint64_t cost);
int admit_py_keyed_hit1(admit_keyed_t* k, const char* key, size_t keylen);
int admit_py_keyed_hit(admit_keyed_t* k, uint32_t tier, const char* key,
                       size_t keylen, uint64_t cost);
void admit_py_done_post(void* ud, int status, uint64_t until_ns);
void admit_py_guard_done_post(void* ud, int status);
int admit_py_fast_native_init(void);
extern "Python" uint64_t admit_py_now_ns(void* ud);
extern "Python" void admit_py_sleep_ns(void* ud, uint64_t ns);
"""

_ATTR = re.compile(r"__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)")
_DEFINE = re.compile(r"^\s*#\s*define\s+(ADMIT_[A-Z0-9_]+)(\(|\s|$)")


def header_files(include_dir):
    """Returns admit.h and every admit/*.h under include_dir."""
    sub = os.path.join(include_dir, "admit")
    names = sorted(n for n in os.listdir(sub) if n.endswith(".h"))
    return [os.path.join(include_dir, "admit.h")] + [
        os.path.join(sub, n) for n in names]


def _statements(text):
    """Splits C declarations at top-level semicolons."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        elif ch == ";" and depth == 0:
            out.append(text[start:i + 1])
            start = i + 1
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


_FUNC = re.compile(r"\b(admit_\w+)\s*\(")


def exported_symbols(libdir):
    """Returns the admit_ functions defined by the library in libdir, or
    None when there is no library there to ask."""
    for name in ("libadmit.a", "libadmit.so"):
        path = os.path.join(libdir, name)
        if os.path.isfile(path):
            cmd = ["nm", "-g", "--defined-only"]
            if name.endswith(".so"):
                cmd.append("-D")
            out = subprocess.run(cmd + [path], check=True,
                                 capture_output=True, text=True).stdout
            return {f[2] for f in (l.split() for l in out.splitlines())
                    if len(f) == 3 and f[1] in "TW"}
    return None


def generate_cdef(include_dir, available=None):
    """Returns the cdef text for the headers under include_dir.

    With ``available`` (a set of symbol names), functions the library does
    not define are left out and listed in a comment, so a library built
    from a partial tree still loads; test_cdef.py reports them.
    """
    fake = tempfile.mkdtemp(prefix="admit-cdef-")
    try:
        for name in ("stddef.h", "stdint.h"):
            with open(os.path.join(fake, name), "w") as f:
                f.write("/* cdef stand-in */\n")
        out = subprocess.run(
            [CC, "-E", "-P", "-nostdinc", "-undef", "-I", fake,
             "-I", include_dir,
             os.path.join(include_dir, "admit.h")],
            check=True, capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(fake, ignore_errors=True)
    body = _ATTR.sub("", out)
    missing = []
    if available is not None:
        kept = []
        for st in _statements(body):
            m = _FUNC.search(st)
            if m and not st.lstrip().startswith("typedef") and \
                    m.group(1) not in available:
                missing.append(m.group(1))
                continue
            kept.append(st)
        body = "".join(kept)
    body = "\n".join(l for l in body.splitlines() if l.strip())
    if missing:
        body = ("/* Declared but not in the library: %s */\n"
                % " ".join(missing)) + body
    consts = []
    for path in header_files(include_dir):
        with open(path) as f:
            for line in f:
                m = _DEFINE.match(line)
                if not m or m.group(2) == "(":
                    continue
                name = m.group(1)
                if name.endswith("_H") or name == "ADMIT_EXTERN":
                    continue
                consts.append("#define %s ..." % name)
    return ("/* Generated by admit_build.py from the public headers. */\n"
            + body + "\n" + "\n".join(sorted(set(consts))) + "\n")


def _make_static_lib():
    """Builds libadmit.a in the source tree and returns its directory."""
    out = os.environ.get("ADMIT_BUILD_DIR", "build/python-ext")
    subprocess.run(["make", "-C", ROOT, "--no-print-directory",
                    "O=" + out, os.path.join(out, "libadmit.a")],
                   check=True)
    return os.path.join(ROOT, out)


def _link_args():
    """Returns (include dir, defined symbols or None, set_source kwargs)."""
    inc = os.environ.get("ADMIT_INCLUDE_DIR")
    libdir = os.environ.get("ADMIT_LIB_DIR")
    in_tree = os.path.isfile(os.path.join(ROOT, "include", "admit.h")) and \
        os.path.isfile(os.path.join(ROOT, "Makefile"))
    if inc is None and in_tree:
        inc = os.path.join(ROOT, "include")
    if libdir is None and in_tree:
        libdir = _make_static_lib()
    deps = ["hiredis", "uv", "pthread", "m"]
    if libdir is not None:
        avail = exported_symbols(libdir)
        static = os.path.join(libdir, "libadmit.a")
        if os.path.isfile(static):
            return inc, avail, dict(extra_objects=[static], libraries=deps)
        return inc, avail, dict(
            library_dirs=[libdir], libraries=["admit"] + deps,
            runtime_library_dirs=[os.path.abspath(libdir)])
    if inc is None:
        flags = subprocess.run(["pkg-config", "--cflags-only-I", "admit"],
                               capture_output=True, text=True).stdout
        for tok in flags.split():
            if tok.startswith("-I"):
                inc = tok[2:]
        inc = inc or "/usr/local/include"
    return inc, None, dict(libraries=["admit"] + deps)


def make_builder():
    """Returns the configured FFI builder."""
    inc, avail, kwargs = _link_args()
    cdef = generate_cdef(inc, avail)
    build_dir = os.path.join(HERE, "build")
    os.makedirs(build_dir, exist_ok=True)
    with open(os.path.join(build_dir, "admit.cdef"), "w") as f:
        f.write(cdef)
    ffi = FFI()
    ffi.cdef(cdef + EXTRA_CDEF)
    with open(os.path.join(HERE, "fastpath.c")) as f:
        native = f.read()
    # fastpath.c needs the full C API (vectorcall, a str's UTF-8 in place),
    # so the extension is not built for the limited API (abi3).
    ffi.set_source("admit._admit",
                   '#include "admit.h"\n' + EXTRA_C + native,
                   include_dirs=[inc],
                   extra_compile_args=["-std=c11", "-O2",
                                       "-D_CFFI_NO_LIMITED_API"],
                   py_limited_api=False,
                   **kwargs)
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    os.chdir(HERE)
    tmp = os.path.join(HERE, "build", "cffi")
    os.makedirs(tmp, exist_ok=True)
    so = ffibuilder.compile(tmpdir=tmp, verbose="-v" in sys.argv)
    # Compiled under build/cffi/admit/; the package imports it from admit/.
    dest = os.path.join(HERE, "admit", os.path.basename(so))
    shutil.copyfile(so, dest)
    print(dest)
