"""Pure admission rules of novncproxy: where the token is, which Origins may connect,
which request targets are refused outright. No I/O; the handler and the app ask these.

- Token (as Nova): the ``token`` query parameter, else a ``token`` inside a ``path``
  parameter (``path=%3Ftoken%3DT``, what noVNC 1.x pages send), else a ``token`` cookie.
- Origin (CVE-2015-0259): no Origin header is allowed (desktop tools send none);
  otherwise its host name must equal the Host header's, or be in the frozen
  ``console_allowed_origins``, and its scheme must match how the client reached us:
  https/wss over TLS, http/ws without, or ``X-Forwarded-Proto`` when (and only when) the
  peer is one of ``trusted_proxies``. The allowed list is never modified (Nova bug 2158919).
- A request target starting with ``//`` is refused with 400, never redirected
  (CVE-2021-3654).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, unquote, urlsplit

from console_common.proto.httphead import target_query

MAX_TOKEN = 256  # consoleauth accepts 32-256 characters; longer is never valid

# Reasons a request is refused, as the console page knows them (console.js MESSAGES).
INVALID_TOKEN = "invalid_token"
CONSOLEAUTH_UNAVAILABLE = "consoleauth_unavailable"
ORIGIN_REFUSED = "origin_refused"
BAD_REQUEST = "bad_request"


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Frozen at start from config; the same object serves every request."""

    allowed_hosts: frozenset[str] = frozenset()
    trusted_proxies: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, allowed: Iterable[str], trusted: Iterable[str]) -> OriginPolicy:
        return cls(frozenset(h.lower().strip("[]") for h in allowed),
                   frozenset(_normal_ip(p) for p in trusted))


@dataclass(frozen=True, slots=True)
class OriginVerdict:
    allowed: bool
    reason: str = ""


def _query(target: str) -> dict[str, list[str]]:
    # not urlsplit(target).query: that raises ValueError on ``//[x/?token=T``
    return parse_qs(target_query(target), keep_blank_values=True)


def token_from_request(target: str, cookie_header: str | None = None) -> str | None:
    """The console token of a request, or None when it carries none (empty counts as none)."""
    query = _query(target)
    token = (query.get("token") or [""])[0]
    if token:
        return token
    path = (query.get("path") or [""])[0]
    if "?" in path:
        inner = parse_qs(path.split("?", 1)[1], keep_blank_values=True)
        token = (inner.get("token") or [""])[0]
        if token:
            return token
    if cookie_header:
        cookie = SimpleCookie()
        try:
            cookie.load(cookie_header)
        except CookieError:
            return None
        morsel = cookie.get("token")
        if morsel is not None and morsel.value:
            return morsel.value
    return None


def token_is_plausible(token: str | None) -> bool:
    """Whether a token is worth asking consoleauth about (saves a bus call for junk)."""
    return bool(token) and len(token) <= MAX_TOKEN and token.isprintable()  # type: ignore[arg-type]


def refused_target(target: str) -> bool:
    """``//host/...`` (also percent-encoded or with backslashes): 400, never a redirect."""
    raw_path = target.split("?", 1)[0]
    path = unquote(raw_path).replace("\\", "/")
    return raw_path.startswith("//") or path.startswith("//")


def host_of(authority: str) -> str | None:
    """The lower-cased host name of a Host header or an URL authority, without port."""
    authority = authority.strip()
    if not authority:
        return None
    try:
        host = urlsplit("//" + authority).hostname
    except ValueError:
        return None
    return host.lower() if host else None


def _normal_ip(address: str) -> str:
    address = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def peer_is_trusted(peer: str, policy: OriginPolicy) -> bool:
    return bool(policy.trusted_proxies) and _normal_ip(peer) in policy.trusted_proxies


def effective_scheme(tls: bool, peer: str, forwarded_proto: str | None,
                     policy: OriginPolicy) -> str:
    """``https`` or ``http``: how the client reached us (a trusted proxy may say so)."""
    if forwarded_proto and peer_is_trusted(peer, policy):
        proto = forwarded_proto.split(",")[0].strip().lower()
        if proto in ("https", "wss"):
            return "https"
        if proto in ("http", "ws"):
            return "http"
    return "https" if tls else "http"


def client_address(peer: str, forwarded_for: str | None, policy: OriginPolicy) -> str:
    """The client's address: the peer, or the last X-Forwarded-For hop a trusted proxy
    added (never a client-chosen value from an untrusted peer)."""
    if forwarded_for and peer_is_trusted(peer, policy):
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if hops:
            return hops[-1]
    return peer


_SCHEMES = {"http": "http", "ws": "http", "https": "https", "wss": "https"}


def check_origin(origin: str | None, host_header: str | None, scheme: str,
                 policy: OriginPolicy) -> OriginVerdict:
    """CVE-2015-0259. ``scheme`` is ``effective_scheme(...)``."""
    if origin is None:
        return OriginVerdict(True)
    origin = origin.strip()
    if not origin or origin.lower() == "null":
        return OriginVerdict(False, "opaque Origin")
    try:
        parts = urlsplit(origin)
        origin_host = parts.hostname
    except ValueError:
        return OriginVerdict(False, "malformed Origin")
    origin_scheme = _SCHEMES.get(parts.scheme.lower())
    if origin_scheme is None or not origin_host:
        return OriginVerdict(False, "malformed Origin")
    origin_host = origin_host.lower()
    host = host_of(host_header) if host_header else None
    if origin_host != host and origin_host not in policy.allowed_hosts:
        return OriginVerdict(False, "Origin host does not match")
    if origin_scheme != scheme:
        return OriginVerdict(False, "Origin scheme does not match")
    return OriginVerdict(True)
