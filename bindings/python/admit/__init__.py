"""admit: rate limiting and admission control, in process or across a fleet
through Redis, as thin Python bindings over libadmit (cffi).

Every decision is made by the C library; this package converts arguments,
raises exceptions and waits on asyncio without blocking the event loop.

>>> import admit
>>> bucket = admit.TokenBucket("10/second", burst=5)
>>> bucket.try_acquire()
Decision(allowed=True, limit=5, remaining=4, retry_after=0, reset_after=0.1)
"""

from ._admit import ffi as _ffi, lib as _lib
from ._util import FOREVER
from .errors import (AdmitError, BackendUnavailable, CallFailed, CircuitOpen,
                     Closed, ConfigError, InvalidArgument, Overloaded,
                     QueueTimeout, RateLimited, Rejected)
from .keyed import KeyedLimiter, KeyedStats
from .limiter import (Decision, FixedWindow, Limiter, SlidingWindow,
                      TokenBucket)
from .rates import Algorithm, ManualClock, Quota, Rate, parse_rates
from .semaphore import Semaphore, SemaphoreStats
from .breaker import BreakerStats, CircuitBreaker, Outcome, outcome_of
from .admission import AdmissionController, AdmissionStats, Permit
from .guard import Guard, GuardMetrics, GuardPermit, VendorLimited
from .health import Health, HealthSnapshot
from .redis import (GlobalLimiter, Lease, Redis, RedisLimiter,
                    RedisLimiterStats, RedisSemaphore, RedisStats,
                    Reservation)

__version__ = _ffi.string(_lib.admit_version_string()).decode()
"""The version of the libadmit this package runs on."""

__all__ = [
    "FOREVER", "AdmitError", "BackendUnavailable", "CallFailed",
    "CircuitOpen", "Closed", "ConfigError", "InvalidArgument", "Overloaded",
    "QueueTimeout", "RateLimited", "Rejected", "KeyedLimiter", "KeyedStats",
    "Decision", "FixedWindow", "Limiter", "SlidingWindow", "TokenBucket",
    "Algorithm", "ManualClock", "Quota", "Rate", "parse_rates", "Semaphore",
    "SemaphoreStats", "GlobalLimiter", "Lease", "Redis", "RedisLimiter",
    "RedisLimiterStats", "RedisSemaphore", "RedisStats", "Reservation",
    "BreakerStats", "CircuitBreaker", "Outcome", "outcome_of",
    "AdmissionController", "AdmissionStats", "Permit", "Guard",
    "GuardMetrics", "GuardPermit", "VendorLimited", "Health",
    "HealthSnapshot", "__version__",
]
