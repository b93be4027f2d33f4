"""Readiness, liveness and metrics for a pod over ``admit_health_t``: a
registry of guards, admission controllers, breakers and Redis connections
that answers ``/ready`` with a verdict that does not flap (hysteresis) and
renders every counter as Prometheus text."""

from typing import Any, Dict, List, NamedTuple, Optional

from ._admit import ffi, lib
from ._util import check, cstr, nonneg_int, positive_int, seconds_to_ns
from .admission import AdmissionController
from .breaker import CircuitBreaker
from .rates import ManualClock, clock_ptr

__all__ = ["Health", "HealthSnapshot"]


class HealthSnapshot(NamedTuple):
    """The answer to ``/ready`` and the figures behind it."""

    ready: bool
    reason: str
    in_flight: int
    waiting: int
    capacity: int
    recent_calls: int
    recent_errors: int
    error_rate: float
    breakers: int
    breakers_open: int
    breakers_half_open: int
    redis_degraded: Optional[bool]
    transitions: int

    def json(self) -> Dict[str, Any]:
        """A JSON-ready dict (``status`` is the reason's text)."""
        d = self._asdict()
        d["status"] = d.pop("reason")
        return d


def _rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number" % name)
    if not 0 < value <= 1:
        raise ValueError("%s must be in (0, 1], not %r" % (name, value))
    return float(value)


class Health:
    """A pod's health registry: add what the pod runs, then ask
    :meth:`check` from ``/ready`` and :meth:`metrics` from ``/metrics``.

    Not ready when more than ``max_waiting`` wait with every capacity in
    use, or the recent error rate exceeds ``max_error_rate`` (after
    ``min_calls``); ready again only at or below ``ready_waiting`` /
    ``ready_error_rate`` and after ``hold`` seconds. Open breakers and a
    degraded Redis are reported, and fail readiness only when asked
    (``fail_on_open_breaker``, ``fail_on_degraded``). Thread-safe.
    """

    def __init__(self, *, max_waiting: Optional[int] = None,
                 ready_waiting: Optional[int] = None,
                 max_error_rate: Optional[float] = None,
                 ready_error_rate: Optional[float] = None,
                 min_calls: Optional[int] = None,
                 hold: Optional[float] = None,
                 fail_on_open_breaker: bool = False,
                 fail_on_degraded: bool = False,
                 clock: Optional[ManualClock] = None) -> None:
        o = ffi.new("admit_health_options_t*")
        if max_waiting is not None:
            o.max_waiting = positive_int(max_waiting, "max_waiting")
        if ready_waiting is not None:
            o.ready_waiting = nonneg_int(ready_waiting, "ready_waiting")
        if max_error_rate is not None:
            o.max_error_rate = _rate(max_error_rate, "max_error_rate")
        if ready_error_rate is not None:
            o.ready_error_rate = _rate(ready_error_rate, "ready_error_rate")
        if min_calls is not None:
            o.min_calls = positive_int(min_calls, "min_calls",
                                       maximum=(1 << 32) - 1)
        if hold is not None:
            o.hold_ns = seconds_to_ns(hold, "hold", allow_zero=False)
        for name, v in (("fail_on_open_breaker", fail_on_open_breaker),
                        ("fail_on_degraded", fail_on_degraded)):
            if not isinstance(v, bool):
                raise TypeError("%s must be a bool" % name)
        o.fail_on_open_breaker = int(fail_on_open_breaker)
        o.fail_on_degraded = int(fail_on_degraded)
        # The options given, for repr.
        given = (("max_waiting", max_waiting), ("ready_waiting",
                                                ready_waiting),
                 ("max_error_rate", max_error_rate),
                 ("ready_error_rate", ready_error_rate),
                 ("min_calls", min_calls), ("hold", hold),
                 ("fail_on_open_breaker", fail_on_open_breaker or None),
                 ("fail_on_degraded", fail_on_degraded or None))
        self._desc = ", ".join("%s=%r" % (n, v) for n, v in given
                               if v is not None)
        o.clock = clock_ptr(clock)
        pp = ffi.new("admit_health_t**")
        rc = lib.admit_health_new(pp, o)
        if rc == lib.ADMIT_EINVAL:
            raise ValueError("inconsistent health options (recovery levels "
                             "above the limits?)")
        check(rc)
        self._p = ffi.gc(pp[0], lib.admit_health_free)
        self._clock = clock
        # What was added is borrowed by C: keep it alive as long as this.
        self._added: List[Any] = []
        self._names: List[str] = []

    def add(self, obj: Any, name: Optional[str] = None) -> "Health":
        """Adds a :class:`admit.Guard`, :class:`admit.AdmissionController`,
        :class:`admit.CircuitBreaker` (with ``name``; a controller defaults
        to ``"http"``) or :class:`admit.Redis`; returns self."""
        from .guard import Guard
        from .redis import Redis
        if name is not None and (not isinstance(name, str) or not name or
                                 len(name.encode()) > 128):
            raise ValueError("name must be a str of 1..128 bytes")
        if isinstance(obj, Guard):
            check(lib.admit_health_add_guard(self._p, obj._p))
            label = obj.name
        elif isinstance(obj, AdmissionController):
            label = name or "http"
            check(lib.admit_health_add_admission(self._p, obj._p,
                                                 label.encode()))
        elif isinstance(obj, CircuitBreaker):
            if name is None:
                raise ValueError("name is required for a breaker")
            label = name
            check(lib.admit_health_add_breaker(self._p, obj._p,
                                               label.encode()))
        elif isinstance(obj, Redis):
            check(lib.admit_health_add_redis(self._p, obj._ptr()))
            label = "redis"
        else:
            raise TypeError("obj must be an admit Guard, AdmissionController,"
                            " CircuitBreaker or Redis, not %s"
                            % type(obj).__name__)
        self._added.append(obj)
        self._names.append(label)
        return self

    def check(self) -> HealthSnapshot:
        """Answers ``/ready`` (moves the verdict's state: call it from the
        probe)."""
        s = ffi.new("admit_health_snapshot_t*")
        check(lib.admit_health_check(self._p, s))
        return HealthSnapshot(
            bool(s.ready), cstr(lib.admit_health_reason_name(s.reason)) or "",
            s.in_flight, s.waiting, s.capacity, s.recent_calls,
            s.recent_errors, s.error_rate, s.breakers, s.breakers_open,
            s.breakers_half_open,
            None if s.redis_degraded < 0 else bool(s.redis_degraded),
            s.transitions)

    def check_json(self) -> "tuple[bool, str]":
        """:meth:`check`, rendered by the library as a JSON object."""
        s = ffi.new("admit_health_snapshot_t*")
        ready = check(lib.admit_health_check(self._p, s)) == 1
        size = 512
        while True:
            buf = ffi.new("char[]", size)
            n = check(lib.admit_health_render_json(s, buf, size))
            if n < size:
                return ready, ffi.string(buf, n).decode()
            size = n + 1

    def alive(self) -> bool:
        """Liveness: True while the process runs (never fails on load)."""
        return lib.admit_health_alive(self._p) == 1

    def metrics(self) -> str:
        """Every metric of what was added, as Prometheus text (0.0.4)."""
        size = 16384
        while True:
            buf = ffi.new("char[]", size)
            n = check(lib.admit_health_render_metrics(self._p, buf, size))
            if n < size:
                return ffi.string(buf, n).decode()
            size = n + 1

    def __repr__(self) -> str:
        """``Health(<components>; <options given>)``, e.g.
        ``Health(http, openai; max_waiting=16, hold=5.0)``."""
        parts = ", ".join(self._names)
        if self._desc:
            parts = "%s; %s" % (parts, self._desc) if parts else self._desc
        return "Health(%s)" % parts

