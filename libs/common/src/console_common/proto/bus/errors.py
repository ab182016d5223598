"""Bus errors: one base, wrapped once at the boundary, mapped to replies/exit codes/HTTP."""

from __future__ import annotations


class BusError(Exception):
    """Base of every bus failure."""


class BusUnavailable(BusError):
    """No reply within the deadline from any endpoint (HTTP 503, exit code 3)."""

    def __init__(self, endpoints: tuple[str, ...], timeout: float, detail: str = "") -> None:
        self.endpoints, self.timeout = endpoints, timeout
        msg = f"no reply from {', '.join(endpoints)} within {timeout:g}s"
        super().__init__(f"{msg} ({detail})" if detail else msg)


BusTimeout = BusUnavailable  # the name the issue uses


class BusProtocolError(BusError):
    """A peer sent something that is not a valid bus message."""


class RemoteError(BusError):
    """The service answered ``ok: false``. ``type`` is the wire name of the error."""

    type = "RemoteError"

    def __init__(self, message: str, type_: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if type_ is not None:
            self.type = type_


class InvalidToken(RemoteError):
    type = "InvalidToken"


class UnknownInstance(RemoteError):
    type = "UnknownInstance"


class BadRequest(RemoteError):
    type = "BadRequest"


class UnknownMethod(RemoteError):
    type = "UnknownMethod"


class Unavailable(RemoteError):
    """The service is up but something it depends on is not (store, compute host)."""

    type = "Unavailable"


class DeadlineExceeded(Unavailable):
    """The caller's budget (``budget_ms``) ran out before the request could be served."""

    type = "DeadlineExceeded"


class InternalError(RemoteError):
    type = "InternalError"


class Forbidden(RemoteError):
    """A known key (CURVE) called a method outside its role."""

    type = "Forbidden"


_BY_TYPE = {cls.type: cls for cls in (InvalidToken, UnknownInstance, BadRequest, UnknownMethod,
                                      Unavailable, DeadlineExceeded, InternalError, Forbidden)}


def remote_error(type_: str, message: str) -> RemoteError:
    cls = _BY_TYPE.get(type_)
    return cls(message) if cls else RemoteError(message, type_)
