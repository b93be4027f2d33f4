"""Argument checks and conversions shared by the admit modules (private)."""

import math
import sys
from typing import Any, Optional, Union

from ._admit import ffi, lib
from .errors import error_for

NS = 1_000_000_000
U64_MAX = (1 << 64) - 1
FOREVER = math.inf
"""Pass as ``timeout`` to wait as long as it takes (never the default)."""

Seconds = Union[int, float]


def check(rc: int) -> int:
    """Returns ``rc`` if it is not negative, else raises its error."""
    if rc < 0:
        raise error_for(rc)
    return rc


def seconds_to_ns(value: Any, name: str, *, allow_forever: bool = False,
                  allow_zero: bool = True) -> int:
    """Converts a duration in seconds to integer nanoseconds.

    Raises TypeError for a non-number (or bool) and ValueError for a
    negative, NaN or (unless ``allow_forever``) infinite value, naming
    ``name`` in the message.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if allow_forever:
            raise TypeError("%s must be a number of seconds or admit.FOREVER,"
                            " not %s" % (name, type(value).__name__))
        raise TypeError("%s must be a number of seconds, not %s"
                        % (name, type(value).__name__))
    if value != value:
        raise ValueError("%s must not be NaN" % name)
    if value == math.inf:
        if allow_forever:
            return U64_MAX
        raise ValueError("%s must be finite" % name)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError("%s must be %s, not %r"
                         % (name, "positive" if not allow_zero else
                            "zero or more", value))
    ns = int(round(value * NS)) if isinstance(value, float) else value * NS
    return min(ns, U64_MAX - 1)


def timeout_ns(value: Any, name: str = "timeout") -> int:
    """Converts a timeout: seconds >= 0 or admit.FOREVER (None is refused so
    that an unbounded wait is always an explicit choice)."""
    if value is None:
        raise TypeError("%s is required: pass seconds, or admit.FOREVER to "
                        "wait without a deadline" % name)
    return seconds_to_ns(value, name, allow_forever=True)


def positive_int(value: Any, name: str, *, maximum: int = U64_MAX) -> int:
    """Checks an integer >= 1 (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s"
                        % (name, type(value).__name__))
    if value < 1 or value > maximum:
        raise ValueError("%s must be between 1 and %d, not %d"
                         % (name, maximum, value))
    return value


def nonneg_int(value: Any, name: str, *, maximum: int = U64_MAX) -> int:
    """Checks an integer >= 0 (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s"
                        % (name, type(value).__name__))
    if value < 0 or value > maximum:
        raise ValueError("%s must be between 0 and %d, not %d"
                         % (name, maximum, value))
    return value


def key_bytes(key: Any, name: str = "key") -> bytes:
    """Encodes a str key as UTF-8; bytes pass through."""
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError("%s must be str or bytes, not %s"
                    % (name, type(key).__name__))


def text(value: Any, name: str) -> str:
    """Checks a str argument."""
    if not isinstance(value, str):
        raise TypeError("%s must be a str, not %s"
                        % (name, type(value).__name__))
    return value


def fmt_seconds(ns: int) -> str:
    """Formats nanoseconds as a short number of seconds for reprs."""
    if ns >= U64_MAX - 1:
        return "FOREVER"
    return "%.6g" % (ns / NS)


def cstr(p: Any) -> Optional[str]:
    """Decodes a C string (NULL gives None)."""
    if p == ffi.NULL:
        return None
    return ffi.string(p).decode("utf-8", "replace")


__all__ = ["check", "seconds_to_ns", "timeout_ns", "positive_int",
           "nonneg_int", "key_bytes", "text", "fmt_seconds", "cstr", "NS",
           "U64_MAX", "FOREVER", "lib", "ffi"]


# Native callables for the hottest calls (fastpath.c, compiled into the
# extension and registered as admit._native).
if lib.admit_py_fast_native_init() != 0:  # pragma: no cover
    raise ImportError("admit: the extension's native fast paths could not "
                      "be registered (see the error printed above)")
native = sys.modules["admit._native"]
NATIVE_KEYED = 0
NATIVE_LIMITER = 1


def address(p: Any) -> int:
    """The address a cffi pointer holds, as an int (for admit._native)."""
    return int(ffi.cast("uintptr_t", p))


def native_hit(kind: int, p: Any, fallback: Any, fail: Any) -> Any:
    """Returns a native ``hit`` over the C object ``p`` (an ffi.gc pointer,
    kept alive by the callable) for a limiter on the real clock, handing
    every call it does not handle to ``fallback`` and libadmit's errors to
    ``fail(argument, code)``, which raises."""
    return native.hit(kind, address(p), p, fallback, fail)
