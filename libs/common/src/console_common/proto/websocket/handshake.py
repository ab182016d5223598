"""RFC 6455 opening handshake, sans-I/O: the server's decision and the client's request.

``server_handshake`` looks at a request head and returns ``Accept`` (send ``101`` with
its headers) or ``Refusal`` (send its status, reason and headers, then close). It
decides only the WebSocket rules; tokens and Origin are the caller's admission.

Subprotocols: we speak ``binary`` (raw RFB in binary messages). noVNC 1.x offers no
subprotocol and gets none in the answer; older noVNC and websockify clients offer
``binary`` and get it. A client that offers subprotocols, none of them ``binary``, is
refused with 400: RFC 6455 4.2.2 lets a server answer only with a subprotocol the client
offered, and a client that asked for one expects its framing (``base64`` and friends),
so accepting with none would be answered by its own close.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "GUID",
    "Accept",
    "HandshakeError",
    "Headers",
    "Refusal",
    "accept_key",
    "check_client_response",
    "client_key",
    "client_request",
    "server_handshake",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_SUBPROTOCOLS = ("binary",)

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Accept:
    """Upgrade: answer ``101 Switching Protocols`` with ``headers``."""

    headers: tuple[tuple[str, str], ...]
    subprotocol: str | None
    status: int = 101
    reason: str = "Switching Protocols"


@dataclass(frozen=True, slots=True)
class Refusal:
    """No upgrade: answer ``status`` with ``headers``; ``reason`` says why, in words."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


class HandshakeError(Exception):
    """The server's answer to our (client role) handshake is not a valid upgrade."""


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()  # RFC 6455 mandates SHA-1 here
    return base64.b64encode(digest).decode("ascii")


def server_handshake(
    method: str,
    target: str,
    headers: Headers,
    supported: tuple[str, ...] = SUPPORTED_SUBPROTOCOLS,
) -> Accept | Refusal:
    """Decide a WebSocket upgrade request. ``supported`` subprotocols in preference order."""
    if method != "GET":
        return Refusal(405, "WebSocket upgrade needs GET", (("Allow", "GET"),))
    if not target.startswith("/"):
        return Refusal(400, "request target must be an absolute path")
    fields = _collect(headers)
    if "websocket" not in _tokens(fields, "upgrade"):
        return Refusal(400, "missing Upgrade: websocket")
    if "upgrade" not in _tokens(fields, "connection"):
        return Refusal(400, "missing Connection: upgrade")
    if len(fields.get("host", ())) != 1:
        return Refusal(400, "exactly one Host header required")
    versions = fields.get("sec-websocket-version", [])
    if [v.strip() for v in versions] != ["13"]:
        return Refusal(426, "unsupported WebSocket version", (("Sec-WebSocket-Version", "13"),))
    keys = fields.get("sec-websocket-key", [])
    if len(keys) != 1 or not _valid_key(keys[0].strip()):
        return Refusal(400, "invalid Sec-WebSocket-Key")
    offered = _tokens(fields, "sec-websocket-protocol", lower=False)
    subprotocol = None
    if offered:
        subprotocol = next((p for p in supported if p in offered), None)
        if subprotocol is None:
            return Refusal(
                400, f"no supported subprotocol offered (we speak: {', '.join(supported)})"
            )
    answer = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(keys[0].strip())),
    ]
    if subprotocol is not None:
        answer.append(("Sec-WebSocket-Protocol", subprotocol))
    return Accept(tuple(answer), subprotocol)


def _collect(headers: Headers) -> dict[str, list[str]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name.lower(), []).append(value)
    return fields


def _tokens(fields: dict[str, list[str]], name: str, lower: bool = True) -> list[str]:
    """The comma-separated tokens of every ``name`` header, in order."""
    out = []
    for value in fields.get(name, ()):
        for token in value.split(","):
            if token := token.strip():
                out.append(token.lower() if lower else token)
    return out


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False


# --- client role (consolectl vnc-bridge, tests) ------------------------------------------


def client_key(nonce: bytes) -> str:
    """A ``Sec-WebSocket-Key`` from 16 random bytes the caller drew (``os.urandom(16)``)."""
    if len(nonce) != 16:
        raise ValueError("a WebSocket key nonce is 16 bytes")
    return base64.b64encode(nonce).decode("ascii")


def client_request(
    host: str,
    path: str,
    key: str,
    subprotocols: Iterable[str] = (),
    origin: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The request head of an upgrade to ``ws://host/path``."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocols := list(subprotocols):
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    lines.extend(f"{name}: {value}" for name, value in extra_headers)
    head = "\r\n".join(lines) + "\r\n\r\n"
    if any(c in "\r\n" for line in lines for c in line) or not head.isascii():
        raise ValueError("header names and values must be ASCII without CR or LF")
    return head.encode("ascii")


def check_client_response(
    status: int, headers: Headers, key: str, offered: Iterable[str] = ()
) -> str | None:
    """Check the server's answer to ``client_request``; return the chosen subprotocol.

    Raises ``HandshakeError`` unless it is a valid ``101`` for ``key`` whose
    subprotocol, if any, is one of ``offered``.
    """
    if status != 101:
        raise HandshakeError(f"server answered {status} instead of 101")
    fields = _collect(headers)
    if "websocket" not in _tokens(fields, "upgrade"):
        raise HandshakeError("response lacks Upgrade: websocket")
    if "upgrade" not in _tokens(fields, "connection"):
        raise HandshakeError("response lacks Connection: upgrade")
    if [v.strip() for v in fields.get("sec-websocket-accept", [])] != [accept_key(key)]:
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    if fields.get("sec-websocket-extensions"):
        raise HandshakeError("server chose an extension we did not offer")
    chosen = _tokens(fields, "sec-websocket-protocol", lower=False)
    if not chosen:
        return None
    if len(chosen) != 1 or chosen[0] not in set(offered):
        raise HandshakeError(f"server chose a subprotocol we did not offer: {', '.join(chosen)}")
    return chosen[0]
