"""Exceptions raised by admit.

Every failure of a libadmit call raises :class:`AdmitError` (or a subclass)
carrying the C code and the library's own message. Wrong arguments are
caught in Python first and raise ``ValueError`` or ``TypeError`` naming the
argument.
"""

from typing import Dict, Optional, Type

from ._admit import ffi, lib

__all__ = [
    "AdmitError", "InvalidArgument", "RateLimited", "QueueTimeout",
    "Rejected", "Overloaded", "BackendUnavailable", "ConfigError",
    "CircuitOpen", "CallFailed", "Closed", "error_for",
]


class AdmitError(Exception):
    """A libadmit call failed; ``code`` is the negative ``ADMIT_E*`` value.

    ``name`` is the code's C name (e.g. ``"ADMIT_EFULL"``) and ``str()``
    gives the library's message from ``admit_strerror``.
    """

    code: int
    name: str

    def __init__(self, code: int, message: Optional[str] = None) -> None:
        self.code = int(code)
        self.name = ffi.string(lib.admit_err_name(self.code)).decode()
        if message is None:
            message = ffi.string(lib.admit_strerror(self.code)).decode()
        super().__init__(message)

    def __repr__(self) -> str:
        return "%s(%s, %r)" % (type(self).__name__, self.name, str(self))


class InvalidArgument(AdmitError, ValueError):
    """The library rejected an argument (``ADMIT_EINVAL``)."""


class RateLimited(AdmitError):
    """A rate limit refused the request; retry after ``retry_after`` seconds.

    ``decision`` is the :class:`admit.Decision` behind it when there is one.
    """

    retry_after: float

    def __init__(self, code: int = lib.ADMIT_ELIMITED,
                 message: Optional[str] = None, *,
                 retry_after: float = 0.0, decision: object = None) -> None:
        super().__init__(code, message)
        self.retry_after = float(retry_after)
        self.decision = decision

    def __repr__(self) -> str:
        return "RateLimited(%s, retry_after=%.6g)" % (self.name,
                                                      self.retry_after)


class QueueTimeout(AdmitError, TimeoutError):
    """A wait for a permit or a slot ran out of time (``ADMIT_ETIMEDOUT``)."""


class Rejected(AdmitError):
    """The wait queue or backlog was full, so the request was refused at
    once (``ADMIT_EFULL``)."""


class Overloaded(Rejected):
    """The request was shed under overload (``ADMIT_ESHED``)."""


class BackendUnavailable(AdmitError):
    """The shared backend (Redis) could not answer (``ADMIT_EUNAVAILABLE``,
    or ``ADMIT_EPROTO`` for an unexpected reply)."""


class ConfigError(AdmitError):
    """The backend rejected the configuration: bad URL, password, ACL or key
    type (``ADMIT_ECONFIG``)."""


class CircuitOpen(AdmitError):
    """The circuit breaker is open; calls fail fast (``ADMIT_EOPEN``).

    ``retry_after`` is the time until the breaker lets a probe through, when
    known (else 0).
    """

    retry_after: float

    def __init__(self, code: int = lib.ADMIT_EOPEN,
                 message: Optional[str] = None, *,
                 retry_after: float = 0.0) -> None:
        super().__init__(code, message)
        self.retry_after = float(retry_after)


class CallFailed(AdmitError):
    """A guarded call failed after its retries (``ADMIT_ECALL``)."""


class Closed(AdmitError):
    """The object was closed (``ADMIT_ECLOSED``)."""


_BY_CODE: Dict[int, Type[AdmitError]] = {
    lib.ADMIT_EINVAL: InvalidArgument,
    lib.ADMIT_ETIMEDOUT: QueueTimeout,
    lib.ADMIT_EFULL: Rejected,
    lib.ADMIT_ESHED: Overloaded,
    lib.ADMIT_EUNAVAILABLE: BackendUnavailable,
    lib.ADMIT_EPROTO: BackendUnavailable,
    lib.ADMIT_ECONFIG: ConfigError,
    lib.ADMIT_ELIMITED: RateLimited,
    lib.ADMIT_EOPEN: CircuitOpen,
    lib.ADMIT_ECALL: CallFailed,
    lib.ADMIT_ECLOSED: Closed,
}


def error_for(code: int, message: Optional[str] = None) -> Exception:
    """Returns the exception for a negative ``ADMIT_E*`` code
    (``MemoryError`` for ``ADMIT_ENOMEM``)."""
    if code == lib.ADMIT_ENOMEM:
        return MemoryError(ffi.string(lib.admit_strerror(code)).decode())
    return _BY_CODE.get(code, AdmitError)(code, message)
