"""check_token: the connect info of a live token, or InvalidToken.

When the token names its compute host's control endpoint, that host is asked whether the
instance still has this console port (Nova's validate_console_port, CVE-2013-0335), so a
token outlives neither its instance nor its port.

A console password is answered only when ``reveal`` (the caller has the proxy role, or the
bus has no CURVE, where every caller is trusted); it is unsealed with the caller's token.
"""

from __future__ import annotations

import dataclasses
import time

import structlog

from console_common.proto.bus import BusError, DeadlineExceeded, InvalidToken, Unavailable, UnknownInstance
from console_common.net.bus.server import Deferred, Later
from console_common.proto.bus.messages import CheckTokenArgs, ConnectInfo
from console_common.proto.tokens import token_hash, token_id
from consoleauth.sealing import unseal
from consoleauth.state import State
from consoleauth.stores import Pending, StoreUnavailable, TokenRecord

log = structlog.get_logger("consoleauth")
# Seconds kept back from the caller's budget, so a compute host's failure is told before
# the bus server cuts the request (its own margin is 0.05).
REPLY_MARGIN = 0.1


def handle(state: State, args: CheckTokenArgs, reveal: bool = True
           ) -> ConnectInfo | Deferred | Later:
    hashed = token_hash(args.token)
    found = lookup(state, [hashed])
    if isinstance(found, list):
        return answer(state, args, hashed, found[0], reveal)
    return Later(found, lambda settled: answer(state, args, hashed, records(settled)[0],
                                               reveal))


def lookup(state: State, hashes: list[str]) -> list[TokenRecord | None] | Pending:
    """The records now, or a result to wait on (the store batches lookups)."""
    try:
        return state.store.lookup(hashes, state.clock())
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc


def records(settled: Pending) -> list[TokenRecord | None]:
    try:
        return settled.get(block=False)
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc


def answer(state: State, args: CheckTokenArgs, hashed: str,
           record: TokenRecord | None, reveal: bool = True) -> ConnectInfo | Deferred:
    """The reply for a token whose record was looked up (``None``: not found or expired)."""
    if record is None:
        state.counters["check.invalid"] += 1
        raise InvalidToken("invalid or expired token")
    if record.compute_url:  # asking the compute host waits: not in the receive loop
        return Deferred(lambda deadline: _validated(state, args, hashed, record, deadline,
                                                    reveal))
    return _connect_info(state, args, hashed, record, reveal)


def _validated(state: State, args: CheckTokenArgs, hashed: str, record: TokenRecord,
               deadline: float, reveal: bool) -> ConnectInfo:
    # One call to the compute host, within what is left of the caller's budget (kept a
    # little short so our answer reaches the caller before it gives up).
    left = min(state.compute_timeout, deadline - time.monotonic() - REPLY_MARGIN)
    if left <= 0:
        raise DeadlineExceeded("no budget left to ask the compute host")
    try:
        valid = state.compute(record.compute_url).request(
            "validate_console_port", {"instance_uuid": record.instance_uuid,
                                      "port": record.port,
                                      "console_type": record.console_type},
            timeout=left)["valid"]
    except UnknownInstance:
        valid = False  # the host no longer knows the instance
    except BusError as exc:  # silent, garbage, or it could not answer (its own budget...)
        state.counters["check.compute_unavailable"] += 1
        raise Unavailable(f"compute host did not confirm the console port: {exc}") from exc
    if not valid:
        state.store.delete(hashed)
        state.counters["check.port_invalid"] += 1
        log.info("token.port_invalid", token_id=token_id(args.token),
                 instance_uuid=record.instance_uuid)
        raise InvalidToken("invalid or expired token")
    return _connect_info(state, args, hashed, record, reveal)


def _connect_info(state: State, args: CheckTokenArgs, hashed: str, record: TokenRecord,
                  reveal: bool) -> ConnectInfo:
    state.counters["check.ok"] += 1
    if record.password is None:
        # A TokenRecord is a ConnectInfo; the bus writes only its connect-info fields
        # (building a separate ConnectInfo was a tenth of a Redis check's reply path).
        return record
    info = record.connect_info()
    password = unseal(args.token, hashed, info.password) if reveal else None
    if reveal and password is None:  # altered in the store: say so, answer without it
        state.counters["check.password_unsealable"] += 1
        log.warning("token.password_unsealable", token_id=token_id(args.token),
                    instance_uuid=record.instance_uuid)
    return dataclasses.replace(info, password=password)
