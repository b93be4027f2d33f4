"""Rates, quotas and clocks: the values every limiter is built from.

Rate strings are parsed by libadmit (``admit_rate_parse``), which accepts
the notation of the Python ``limits`` library: ``"10/minute"``,
``"10 per minute"``, ``"5/10 seconds"``, ``"10/minute;100/hour"``.
"""

import enum
from typing import Any, List, NamedTuple, Optional, Sequence, Union

from ._admit import ffi, lib
from ._util import NS, check, positive_int

__all__ = ["Rate", "Algorithm", "Quota", "parse_rates", "ManualClock",
           "RateSpec"]


class Rate(NamedTuple):
    """``count`` units per ``period_ns`` nanoseconds."""

    count: int
    period_ns: int

    @classmethod
    def per(cls, count: int, seconds: Union[int, float]) -> "Rate":
        """Returns ``count`` units per ``seconds`` seconds."""
        positive_int(count, "count")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError("seconds must be a number, not %s"
                            % type(seconds).__name__)
        if not seconds > 0 or seconds == float("inf"):
            raise ValueError("seconds must be positive and finite, not %r"
                             % (seconds,))
        return cls(count, int(round(seconds * NS)) if isinstance(seconds, float)
                   else seconds * NS)

    @property
    def period(self) -> float:
        """The period in seconds."""
        return self.period_ns / NS

    def __str__(self) -> str:
        buf = ffi.new("char[64]")
        r = ffi.new("admit_rate_t*", (self.count, self.period_ns))
        check(lib.admit_rate_format(r, buf, 64))
        return ffi.string(buf).decode()

    def __repr__(self) -> str:
        return "Rate(%r)" % str(self)


def parse_rates(spec: str) -> List[Rate]:
    """Parses a rate spec such as ``"10/minute;100/hour"`` into rates.

    Raises TypeError for a non-str and ValueError (with the offset where
    parsing failed) for a bad spec.
    """
    if not isinstance(spec, str):
        raise TypeError("rate must be a str such as '10/minute', not %s"
                        % type(spec).__name__)
    n = lib.ADMIT_RATES_MAX
    rates = ffi.new("admit_rate_t[]", n)
    off = ffi.new("size_t*")
    rc = lib.admit_rate_parse(spec.encode(), rates, n, off)
    if rc < 0:
        raise ValueError("rate %r is not a valid rate spec (error at offset "
                         "%d; expected e.g. '10/minute' or "
                         "'10/minute;100/hour')" % (spec, off[0]))
    return [Rate(rates[i].count, rates[i].period_ns) for i in range(rc)]


class Algorithm(enum.IntEnum):
    """How a quota is enforced."""

    TOKEN_BUCKET = lib.ADMIT_TOKEN_BUCKET
    """GCRA: ``burst`` at once, then one unit every period/count."""
    FIXED_WINDOW = lib.ADMIT_FIXED_WINDOW
    """At most count units per aligned window (up to 2x across an edge)."""
    SLIDING_WINDOW = lib.ADMIT_SLIDING_WINDOW
    """Current window plus the previous one weighted by its overlap."""


RateSpec = Union[str, Rate, Sequence[Rate]]
"""A rate string, one Rate, or several Rates (all must admit)."""


def _rates_of(rate: Any, name: str = "rate") -> List[Rate]:
    if isinstance(rate, str):
        return parse_rates(rate)
    if isinstance(rate, Rate):
        return [rate]
    if isinstance(rate, (list, tuple)) and rate and \
            all(isinstance(r, Rate) for r in rate):
        return list(rate)
    raise TypeError("%s must be a rate string such as '10/minute', a Rate or"
                    " a list of Rates, not %r" % (name, rate))


class Quota:
    """An algorithm and one or more rates; ``burst`` sets the token bucket's
    burst (one value for every rate, or one per rate; None = the count).

    >>> Quota("10/second;100/minute", Algorithm.SLIDING_WINDOW)
    """

    __slots__ = ("algorithm", "rates", "burst", "_c")

    def __init__(self, rate: RateSpec,
                 algorithm: Union[Algorithm, str] = Algorithm.TOKEN_BUCKET,
                 *, burst: Union[None, int, Sequence[int]] = None) -> None:
        algorithm = _algorithm_of(algorithm)
        rates = _rates_of(rate)
        if len(rates) > lib.ADMIT_RATES_MAX:
            raise ValueError("rate has %d rates; at most %d are allowed"
                             % (len(rates), lib.ADMIT_RATES_MAX))
        for r in rates:
            positive_int(r.count, "rate count")
            positive_int(r.period_ns, "rate period_ns")
        if burst is None:
            bursts = [0] * len(rates)
        elif isinstance(burst, int) and not isinstance(burst, bool):
            positive_int(burst, "burst")
            bursts = [burst] * len(rates)
        elif isinstance(burst, (list, tuple)):
            if len(burst) != len(rates):
                raise ValueError("burst has %d values for %d rates"
                                 % (len(burst), len(rates)))
            bursts = [positive_int(b, "burst") for b in burst]
        else:
            raise TypeError("burst must be an int or a list of ints, not %s"
                            % type(burst).__name__)
        if burst is not None and algorithm != Algorithm.TOKEN_BUCKET:
            raise ValueError("burst applies only to the token bucket, not "
                             "to %s" % algorithm.name)
        c = ffi.new("admit_quota_t*")
        c.algo = int(algorithm)
        c.nrates = len(rates)
        for i, r in enumerate(rates):
            c.rates[i].count = r.count
            c.rates[i].period_ns = r.period_ns
            c.burst[i] = bursts[i]
        if lib.admit_quota_validate(c) < 0:
            raise ValueError("rate %s cannot be enforced with %s (count, "
                             "period or burst out of range)"
                             % (";".join(map(str, rates)), algorithm.name))
        self.algorithm = algorithm
        self.rates = tuple(rates)
        self.burst = tuple(b or r.count for b, r in zip(bursts, rates))
        self._c = c

    @classmethod
    def _from_c(cls, c: Any) -> "Quota":
        q = cls.__new__(cls)
        q.algorithm = Algorithm(c.algo)
        q.rates = tuple(Rate(c.rates[i].count, c.rates[i].period_ns)
                        for i in range(c.nrates))
        q.burst = tuple(c.burst[i] or c.rates[i].count
                        for i in range(c.nrates))
        q._c = c
        return q

    @property
    def spec(self) -> str:
        """The rates as a spec string, e.g. ``"10/1s;100/1m"``."""
        return ";".join(str(r) for r in self.rates)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quota):
            return NotImplemented
        return (self.algorithm, self.rates, self.burst) == \
            (other.algorithm, other.rates, other.burst)

    def __hash__(self) -> int:
        return hash((self.algorithm, self.rates, self.burst))

    def __repr__(self) -> str:
        extra = ""
        if self.algorithm == Algorithm.TOKEN_BUCKET and \
                any(b != r.count for b, r in zip(self.burst, self.rates)):
            extra = ", burst=%r" % (list(self.burst),)
        return "Quota(%r, %s%s)" % (self.spec, self.algorithm.name, extra)


_ALGOS = {
    "token_bucket": Algorithm.TOKEN_BUCKET, "gcra": Algorithm.TOKEN_BUCKET,
    "fixed_window": Algorithm.FIXED_WINDOW, "fixed": Algorithm.FIXED_WINDOW,
    "sliding_window": Algorithm.SLIDING_WINDOW,
    "sliding": Algorithm.SLIDING_WINDOW,
    "moving_window": Algorithm.SLIDING_WINDOW,
}


def _algorithm_of(value: Any) -> Algorithm:
    if isinstance(value, Algorithm):
        return value
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_").replace(" ", "_")
        if key in _ALGOS:
            return _ALGOS[key]
        raise ValueError("algorithm must be one of %s, not %r"
                         % (", ".join(sorted(_ALGOS)), value))
    raise TypeError("algorithm must be an admit.Algorithm or a str, not %s"
                    % type(value).__name__)


class ManualClock:
    """A simulated clock for tests: time moves only with :meth:`advance`
    (and when a blocking wait "sleeps" on it).

    Pass it as ``clock=`` to a limiter. The C library calls back into
    Python for every reading, so it is slow; use it for exact tests only.
    """

    def __init__(self, start: float = 1.0) -> None:
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise TypeError("start must be a number of seconds, not %s"
                            % type(start).__name__)
        if not start > 0:
            raise ValueError("start must be positive, not %r" % (start,))
        self.now_ns = int(round(start * NS))
        self._handle = ffi.new_handle(self)
        self._c = ffi.new("admit_clock_t*")
        self._c.now_ns = lib.admit_py_now_ns
        self._c.sleep_ns = lib.admit_py_sleep_ns
        self._c.ud = self._handle

    def advance(self, seconds: float) -> None:
        """Moves the clock forward by ``seconds`` (>= 0)."""
        if isinstance(seconds, bool) or \
                not isinstance(seconds, (int, float)):
            raise TypeError("seconds must be a number, not %s"
                            % type(seconds).__name__)
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self.now_ns += int(round(seconds * NS))

    def now(self) -> float:
        """The clock's time in seconds."""
        return self.now_ns / NS

    def __repr__(self) -> str:
        return "ManualClock(now=%.9g)" % self.now()


@ffi.def_extern()
def admit_py_now_ns(ud: Any) -> int:
    return ffi.from_handle(ud).now_ns


@ffi.def_extern()
def admit_py_sleep_ns(ud: Any, ns: int) -> None:
    ffi.from_handle(ud).now_ns += ns


def clock_ptr(clock: Optional[ManualClock]) -> Any:
    """Returns the admit_clock_t* for ``clock`` (NULL for the real one)."""
    if clock is None:
        return ffi.NULL
    if not isinstance(clock, ManualClock):
        raise TypeError("clock must be an admit.ManualClock or None, not %s"
                        % type(clock).__name__)
    return clock._c


def quota_of(rate: Any, algorithm: Any, burst: Any, name: str = "rate") \
        -> Quota:
    """Builds a Quota from a Quota, a spec string, a Rate or Rates."""
    if isinstance(rate, Quota):
        if burst is not None:
            raise ValueError("burst cannot be given with a Quota")
        return rate
    try:
        return Quota(rate, algorithm, burst=burst)
    except TypeError as e:
        if "rate" in str(e) and name != "rate":
            raise TypeError(str(e).replace("rate must", name + " must", 1)) \
                from None
        raise

