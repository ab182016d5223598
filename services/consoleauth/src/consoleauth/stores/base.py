"""The token store interface and the expiry rule every store follows.

Stores are keyed by the token's SHA-256 (``token_hash``): none ever sees or keeps a token.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Protocol

import gevent.event
import structlog
from console_common.proto.bus.messages import (ORIGIN_FIELDS, ConnectInfo, connect_info_values,
                                               derive, field_names)

log = structlog.get_logger("consoleauth")


def _to_dict(self: Any) -> dict[str, Any]:
    return asdict(self)


def _live(self: Any, now: float) -> bool:
    """A token is valid strictly before its expiry instant."""
    return now < self.expires_at


def _connect_info(self: Any) -> ConnectInfo:
    """The answer to a check: this record's connect-info fields."""
    return ConnectInfo(*connect_info_values(self))


@classmethod  # type: ignore[misc]
def _authorized(cls: Any, args: Any, expires_at: float) -> Any:
    """The record authorize_console stores for ``args`` (an AuthorizeArgs)."""
    values = {name: getattr(args, name) for name in _RECORD_FIELDS if name != "expires_at"}
    return cls(expires_at=expires_at, **values)


# What a store keeps under a token's hash: the connect info a check answers plus where the
# console came from (ORIGIN_FIELDS); both declared once in console_common's messages.
TokenRecord = derive("TokenRecord", ConnectInfo, add=ORIGIN_FIELDS, to_dict=_to_dict,
                     live=_live, connect_info=_connect_info, authorized=_authorized)
_RECORD_FIELDS = field_names(TokenRecord)


class StoreUnavailable(Exception):
    """The backing store cannot be reached (redis down, disk error)."""


class Pending:
    """A store result still on its way: settled once, with a value or a StoreUnavailable.

    Callbacks given to ``rawlink`` run at once in the greenlet that settles it (the store's
    reader), not through the hub's callback queue: a bus reply can be made for each lookup
    of a Redis round trip as soon as the round trip is read. ``get`` waits (bounded).
    """

    __slots__ = ("_value", "_error", "_done", "_links")

    def __init__(self) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = False
        self._links: list[Any] = []

    def ready(self) -> bool:
        return self._done

    def set(self, value: Any) -> None:
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        if self._done:
            return
        self._value, self._error, self._done = value, error, True
        links, self._links = self._links, []
        for callback in links:
            try:
                callback(self)
            except Exception:  # a caller's bug must not stop the store's reader
                log.error("store.callback_failed", exc_info=True)

    def rawlink(self, callback: Any) -> None:
        if self._done:
            callback(self)
        else:
            self._links.append(callback)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until settled (or ``timeout``); whether it is."""
        if not self._done:
            waiter = gevent.event.Event()
            self.rawlink(lambda _: waiter.set())
            waiter.wait(timeout)
        return self._done

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The value, or raise the error; gevent.Timeout when not settled in time."""
        if not self._done and not (block and self.wait(timeout)):
            raise gevent.Timeout(timeout or 0)
        if self._error is not None:
            raise self._error
        return self._value


class TokenStore(Protocol):
    """Every method may raise StoreUnavailable. Methods may wait cooperatively (yield to
    the hub) except reads of a store whose ``reads_wait`` is False: those answer at once,
    so consoleauth serves them in the bus receive loop without a greenlet."""

    name: str
    reads_wait: bool

    def add(self, token_hash: str, record: TokenRecord) -> None: ...
    def get(self, token_hash: str, now: float) -> TokenRecord | None: ...
    def get_many(self, token_hashes: list[str], now: float) -> list[TokenRecord | None]: ...
    def lookup(self, token_hashes: list[str],
               now: float) -> list[TokenRecord | None] | Pending:
        """Never waits: the records now, or a result that will hold them (or fail with
        StoreUnavailable) within the store's own time bound."""
    def delete(self, token_hash: str) -> None: ...
    def delete_instance(self, instance_uuid: str) -> int: ...
    def purge(self, now: float) -> int: ...
    def count(self) -> int: ...
    def close(self) -> None: ...
