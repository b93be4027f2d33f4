"""The generated cdef against the library and the headers: every function
the shared library exports is bound, every binding exists in the library,
and every enum constant matches the C compiler's value."""

import os
import re
import subprocess

import pytest

import admit
from admit._admit import ffi, lib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CDEF = os.path.join(ROOT, "bindings", "python", "build", "admit.cdef")


def lib_dir():
    d = os.environ.get("ADMIT_LIB_DIR") or os.path.join(ROOT, "build",
                                                        "release")
    return d


def exported():
    d = lib_dir()
    so = [f for f in os.listdir(d) if re.match(r"libadmit\.so\.\d+\.\d+\.\d+$",
                                               f)] if os.path.isdir(d) else []
    if so:
        cmd = ["nm", "-D", "--defined-only", os.path.join(d, so[0])]
    elif os.path.isfile(os.path.join(d, "libadmit.a")):
        cmd = ["nm", "-g", "--defined-only", os.path.join(d, "libadmit.a")]
    else:
        pytest.skip("no libadmit in %s (set ADMIT_LIB_DIR)" % d)
    out = subprocess.run(cmd, check=True, capture_output=True,
                         text=True).stdout
    return {f[2] for f in (l.split() for l in out.splitlines())
            if len(f) == 3 and f[1] == "T" and f[2].startswith("admit_")
            and not f[2].startswith("admit__")}


def declared():
    names = set()
    inc = os.path.join(ROOT, "include")
    files = [os.path.join(inc, "admit.h")] + [
        os.path.join(inc, "admit", f)
        for f in os.listdir(os.path.join(inc, "admit"))]
    for path in files:
        with open(path) as f:
            text = f.read()
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for m in re.finditer(r"ADMIT_EXTERN[^;(]*?\b(admit_\w+)\s*\(", text):
            names.add(m.group(1))
    return names


def bound_functions():
    with open(CDEF) as f:
        text = f.read()
    return set(re.findall(r"^[^(\n]*?\b(admit_\w+)\s*\(", text, flags=re.M)) \
        - set(re.findall(r"typedef[^;]*?\(\s*\*\s*(admit_\w+)\)", text))


def test_every_export_is_bound_and_declared():
    exp = exported()
    assert exp, "no exported symbols found"
    bound = bound_functions()
    assert sorted(exp - bound) == []
    assert sorted(bound - exp) == []
    assert sorted(exp - declared()) == []
    for name in exp:
        assert hasattr(lib, name), name


def test_every_declared_function_exists():
    # A function declared in a header but missing from the library would
    # be dropped from the cdef (the build lists it); report it here.
    missing = sorted(declared() - exported())
    assert missing == []


def test_constants_match_the_compiler():
    assert lib.ADMIT_EINVAL == -1
    assert lib.ADMIT_FOREVER == 2**64 - 1
    assert lib.ADMIT_VERSION_HEX == admit._admit.lib.admit_version()
    assert ffi.string(lib.admit_version_string()).decode() == \
        admit.__version__
    for name in dir(lib):
        if name.startswith("ADMIT_E") and isinstance(getattr(lib, name),
                                                     int):
            code = getattr(lib, name)
            if code < 0:
                assert ffi.string(lib.admit_err_name(code)).decode() == name


def test_struct_layouts_are_the_compilers():
    # cffi checks sizes and offsets against the real headers at build time
    # (API mode); spot-check a few so a stale extension fails loudly.
    assert ffi.offsetof("admit_notify_decision_t", "node") == 0
    assert ffi.sizeof("admit_notify_decision_t") >= \
        ffi.sizeof("admit_notify_node_t") + ffi.sizeof("admit_decision_t")
    assert ffi.sizeof("admit_rate_t") == 16
