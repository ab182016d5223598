"""Every option of the suite, declared once: Nova's name, its field, default and help.

Values arrive as text (files, environment, flags) and are turned into typed values by the
marshmallow field declared here. Services pick the options they use by name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field as dc_field
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, fields, validate


class CommaList(fields.Field):
    """A comma-separated list ("a, b,c") of items each checked by ``item``."""

    def __init__(self, item: Callable[[str], Any] | None = None, expect: str = "", **kw: Any):
        super().__init__(**kw)
        self._item = item
        self._expect = expect

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> tuple[Any, ...]:
        if isinstance(value, (list, tuple)):
            parts = [str(v).strip() for v in value]
        elif isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
        else:
            raise ValidationError("expected a comma-separated list")
        out = []
        for part in parts:
            if not part:
                continue
            if self._item is not None:
                try:
                    part = self._item(part)
                except ValueError as exc:
                    raise ValidationError(f"{self._expect or 'bad item'} ({exc})") from exc
            out.append(part)
        return tuple(out)


_ZMQ_ENDPOINT = re.compile(r"\A(tcp://[^\s:/]+|tcp://\[[0-9a-fA-F:.]+\]):(\d{1,5}|\*)\Z|\Aipc://\S+\Z")


def zmq_endpoint(value: str) -> str:
    m = _ZMQ_ENDPOINT.match(value)
    if not m or (m.group(2) and m.group(2) != "*" and not 0 < int(m.group(2)) < 65536):
        raise ValueError(f"{value!r} is not tcp://HOST:PORT or ipc://PATH")
    return value


def _auth_scheme(value: str) -> str:
    if value.lower() not in ("vencrypt", "vnc", "none"):
        raise ValueError(f"{value!r} is not vencrypt, vnc or none")
    return value.lower()


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"{value!r} has a bad port") from exc
    return value


_HOSTNAME = re.compile(r"\A[A-Za-z0-9_.\-:\[\]*]+\Z")


def hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is not a host name")
    return value.lower()


class Endpoint(fields.String):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        text = super()._deserialize(value, attr, data, **kw)
        try:
            return zmq_endpoint(text)
        except ValueError as exc:
            raise ValidationError("expected a ZeroMQ endpoint like tcp://127.0.0.1:6085") from exc


class HttpUrl(fields.String):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        text = super()._deserialize(value, attr, data, **kw)
        try:
            return http_url(text)
        except ValueError as exc:
            raise ValidationError("expected an http:// or https:// URL") from exc


def _port(**kw: Any) -> fields.Integer:
    return fields.Integer(validate=validate.Range(1, 65535, error="expected a port number 1-65535"), **kw)


def _positive_float() -> fields.Float:
    return fields.Float(validate=validate.Range(min=0, min_inclusive=False,
                                                error="expected a number of seconds > 0"))


def _non_negative_float() -> fields.Float:
    return fields.Float(validate=validate.Range(min=0, error="expected a number >= 0 (0: off)"))


def _non_negative_int() -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=0, error="expected a whole number >= 0 "
                                                  "(0: unlimited)"))


def _positive_int(error: str) -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=1, error=error))


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "console-proxy")


@dataclass(frozen=True)
class Option:
    name: str
    field: Callable[[], fields.Field]
    default: Any
    help: str
    expect: str = ""  # what a good value looks like, for errors and --help
    metavar: str = "VALUE"
    flag_only_bool: bool = dc_field(default=False)  # a boolean: `--name` alone means true

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "CONSOLE_" + self.name.upper()


def _opt(name: str, field: Callable[[], fields.Field], default: Any, help: str,
         expect: str = "", metavar: str = "VALUE") -> Option:
    return Option(name, field, default, help, expect, metavar,
                  flag_only_bool=isinstance(field(), fields.Boolean))


_BOOL = lambda: fields.Boolean()  # noqa: E731
_STR = lambda: fields.String()  # noqa: E731

OPTIONS: dict[str, Option] = {o.name: o for o in [
    # --- Nova's names -------------------------------------------------------------------
    _opt("novncproxy_host", _STR, "0.0.0.0", "Address novncproxy listens on.", metavar="HOST"),
    _opt("novncproxy_port", _port, 6080, "Port novncproxy listens on.", metavar="PORT"),
    _opt("novncproxy_base_url", HttpUrl, "http://127.0.0.1:6080/vnc_auto.html",
         "Public URL of the noVNC console page, given to users in access URLs.", metavar="URL"),
    _opt("xvpvncproxy_host", _STR, "0.0.0.0", "Address xvpvncproxy listens on.", metavar="HOST"),
    _opt("xvpvncproxy_port", _port, 6081, "Port xvpvncproxy listens on.", metavar="PORT"),
    _opt("xvpvncproxy_base_url", HttpUrl, "http://127.0.0.1:6081/console",
         "Public URL of the xvp console proxy, given to users in access URLs.", metavar="URL"),
    _opt("vncserver_listen", _STR, "127.0.0.1",
         "Address the compute host's VNC servers listen on.", metavar="ADDR"),
    _opt("vncserver_proxyclient_address", _STR, "127.0.0.1",
         "Address of the compute host the proxies connect to for VNC.", metavar="ADDR"),
    _opt("console_token_ttl", lambda: _positive_int("expected a whole number of seconds >= 1"),
         600, "How long a console token stays valid, in seconds.", metavar="SECONDS"),
    _opt("ssl_only", _BOOL, False, "Serve only TLS (https:// and wss://)."),
    _opt("cert", _STR, "", "TLS certificate file (PEM) for novncproxy.", metavar="FILE"),
    _opt("key", _STR, "", "TLS private key file (PEM); empty means inside `cert`.", metavar="FILE"),
    _opt("web", _STR, "", "Directory of the noVNC client library (default: the pinned install).",
         metavar="DIR"),
    _opt("console_allowed_origins", lambda: CommaList(hostname, "expected host names"), (),
         "Extra Origin host names allowed to open consoles (comma list).", metavar="HOSTS"),
    # --- ours ---------------------------------------------------------------------------
    _opt("consoleauth_url", lambda: CommaList(zmq_endpoint, "expected ZeroMQ endpoints"),
         ("tcp://127.0.0.1:6085",), "consoleauth bus endpoint(s), tried in turn (comma list).",
         metavar="URLS"),
    _opt("consoleauth_listen", Endpoint, "tcp://0.0.0.0:6085", "Bus endpoint consoleauth binds.",
         metavar="URL"),
    _opt("consoleauth_events_listen", Endpoint, "tcp://0.0.0.0:6086",
         "Events endpoint (ZeroMQ PUB) consoleauth binds: revocations and disconnects.",
         metavar="URL"),
    _opt("consoleauth_events_url", lambda: CommaList(zmq_endpoint, "expected ZeroMQ endpoints"),
         ("tcp://127.0.0.1:6086",), "consoleauth events endpoint(s) a proxy subscribes to "
         "(comma list; host names resolved to every address).", metavar="URLS"),
    _opt("bus_secret_key_file", _STR, "",
         "This process's ZeroMQ CURVE certificate (NAME.key_secret): turns CURVE on for its "
         "bus sockets.", metavar="FILE"),
    _opt("bus_authorized_keys_dir", _STR, "",
         "Servers with CURVE: a folder of <role>/ folders (proxy, compute, admin, server) "
         "holding the public keys (*.key) allowed to call.", metavar="DIR"),
    _opt("bus_server_key_file", _STR, "",
         "Clients with CURVE: the public key (NAME.key) of consoleauth.", metavar="FILE"),
    _opt("compute_server_key_file", _STR, "",
         "With CURVE: the public key (NAME.key) of the compute hosts' control endpoints.",
         metavar="FILE"),
    _opt("consoleauth_timeout", _positive_float, 2.0,
         "Deadline for one bus call, retries included, in seconds.", metavar="SECONDS"),
    _opt("token_store", lambda: fields.String(validate=validate.OneOf(
        ["sqlite", "memory", "redis"], error="expected one of sqlite, memory, redis")),
         "sqlite", "Token store: sqlite (file in state_dir), memory or redis.", metavar="KIND"),
    _opt("redis_url", _STR, "redis://127.0.0.1:6379/0", "Redis URL for token_store=redis.",
         metavar="URL"),
    _opt("redis_timeout", _positive_float, 0.5,
         "Bound on one Redis round trip, connect included, in seconds (token_store=redis).",
         metavar="SECONDS"),
    _opt("state_dir", _STR, None, "Directory for the sqlite token store "
         "(default $XDG_STATE_HOME/console-proxy or ~/.local/state/console-proxy).", metavar="DIR"),
    _opt("log_format", lambda: fields.String(validate=validate.OneOf(
        ["auto", "json", "console"], error="expected auto, json or console")),
         "auto", "Log format: json, console, or auto (json unless on a terminal).", metavar="FMT"),
    _opt("log_level", lambda: fields.String(validate=validate.OneOf(
        ["debug", "info", "warning", "error"], error="expected debug, info, warning or error")),
         "info", "Lowest level logged.", metavar="LEVEL"),
    _opt("trusted_proxies", lambda: CommaList(hostname, "expected addresses"), (),
         "Peers whose X-Forwarded-For/-Proto headers are believed (comma list).", metavar="ADDRS"),
    _opt("max_sessions", lambda: _positive_int("expected a whole number >= 1"), 20000,
         "Most concurrent console sessions one proxy process serves.", metavar="N"),
    _opt("session_idle_timeout", _non_negative_float, 0.0,
         "End a console session after this many seconds without payload either way "
         "(pings do not count); 0: never.", metavar="SECONDS"),
    _opt("session_max_age", _non_negative_float, 0.0,
         "End a console session after this many seconds; 0: never.", metavar="SECONDS"),
    _opt("max_sessions_per_token", _non_negative_int, 0,
         "Open sessions one console token may have, across the cluster; 0: unlimited.",
         metavar="N"),
    _opt("max_sessions_per_instance", _non_negative_int, 0,
         "Open sessions one instance may have, across the cluster; 0: unlimited.",
         metavar="N"),
    _opt("max_sessions_per_client", _non_negative_int, 0,
         "Open sessions one client address may have (this proxy process); 0: unlimited.",
         metavar="N"),
    _opt("handshake_rate_per_client", _non_negative_float, 0.0,
         "New connections per second per client address, bursts up to twice that; "
         "0: unlimited.", metavar="RATE"),
    _opt("invalid_token_ban_after", _non_negative_int, 0,
         "Ban a client address after this many invalid tokens within "
         "invalid_token_ban_window; 0: never.", metavar="N"),
    _opt("invalid_token_ban_window", _positive_float, 60.0,
         "Window for invalid_token_ban_after, in seconds.", metavar="SECONDS"),
    _opt("invalid_token_ban_seconds", _positive_float, 300.0,
         "How long a ban lasts (429 with Retry-After), in seconds.", metavar="SECONDS"),
    _opt("websocket_ping_interval", _non_negative_float, 20.0,
         "Send the browser a WebSocket ping this often, in seconds, so load balancers "
         "that cut idle connections (often at 60 s) keep idle consoles; 0: never.",
         metavar="SECONDS"),
    _opt("websocket_ping_timeout", _non_negative_float, 0.0,
         "Close a WebSocket client that has not answered a ping for this many seconds "
         "(close_reason=peer_dead); 0: never.", metavar="SECONDS"),
    _opt("client_send_timeout", _non_negative_float, 0.0,
         "Close a client that has read nothing for this many seconds while its console "
         "has more to send (close_reason=client_stalled); 0: never.", metavar="SECONDS"),
    _opt("workers", lambda: fields.Integer(validate=validate.Range(
        1, 256, error="expected a whole number of processes, 1-256")), 1,
         "Proxy worker processes, each with its own event loop, sharing the ports "
         "(SO_REUSEPORT): about one per core on a many-core host.", metavar="N"),
    _opt("websocket_max_message", lambda: _positive_int("expected a size in bytes >= 1"), 1 << 20,
         "Largest WebSocket message accepted from a client, in bytes (close 1009 beyond).",
         metavar="BYTES"),
    _opt("request_head_timeout", _positive_float, 10.0,
         "Deadline for a client's HTTP request head or xvp preamble, in seconds.",
         metavar="SECONDS"),
    _opt("request_head_max", lambda: _positive_int("expected a size in bytes >= 1"), 8192,
         "Largest HTTP request head or xvp preamble, in bytes.", metavar="BYTES"),
    _opt("target_connect_timeout", _positive_float, 5.0,
         "Deadline to connect to a VNC server (CONNECT reply included), in seconds.",
         metavar="SECONDS"),
    _opt("graceful_timeout", _positive_float, 10.0,
         "On SIGTERM, how long open sessions may drain before they are cut, in seconds.",
         metavar="SECONDS"),
    # --- session recording (Nova's `record` is record_dir's old name; see ALIASES) -------
    _opt("record_dir", _STR, "", "Record every console session to a file in this folder "
         "(mode 0600; `consolectl recordings` lists and plays them); empty: no recording.",
         metavar="DIR"),
    _opt("record_input", _BOOL, False, "Also record what clients send (keys, pointer): it "
         "may hold typed passwords."),
    _opt("record_max_bytes", lambda: _positive_int("expected a size in bytes >= 1"),
         512 * 1024 * 1024, "Most bytes of frames one session's recording holds; beyond, "
         "recording stops and the session goes on.", metavar="BYTES"),
    _opt("xvpvncproxy_metrics_port", lambda: fields.Integer(validate=validate.Range(
        0, 65535, error="expected a port number 1-65535, or 0 for none")), 6082,
         "HTTP port for xvpvncproxy's /metrics and /healthz (0: none).", metavar="PORT"),
    _opt("consoleauth_metrics_port", lambda: fields.Integer(validate=validate.Range(
        0, 65535, error="expected a port number 1-65535, or 0 for none")), 0,
         "HTTP port for consoleauth's /metrics and /healthz, on consoleauth_listen's host "
         "(0: none).", metavar="PORT"),
    _opt("compute_listen", Endpoint, "tcp://127.0.0.1:6095",
         "Bus endpoint the fake compute host's control service binds.", metavar="URL"),
    _opt("compute_url", lambda: CommaList(zmq_endpoint, "expected ZeroMQ endpoints"),
         ("tcp://127.0.0.1:6095",), "Compute host control endpoint(s) consolectl asks for "
         "consoles (comma list).", metavar="URLS"),
    _opt("compute_public_url", _STR, "", "Control endpoint consoleauth uses to reach this compute "
         "host (default: compute_listen, with 0.0.0.0 replaced by vncserver_proxyclient_address).",
         metavar="URL"),
    _opt("instances", _STR, "vm-1,vm-2,vm-3",
         "Fake instances: comma list of "
         "NAME[=builtin|=vnc://HOST:PORT][;password=PW][;qmp=PATH][;uuid=UUID] "
         "(qmp: QEMU's QMP socket, for a one-time VNC password per console).",
         metavar="SPECS"),
    _opt("vnc_port_base", _port, 5900, "First port of the fake host's built-in VNC servers.",
         metavar="PORT"),
    # --- the RFB security proxy (Nova's [vnc] names) -------------------------------------
    _opt("auth_schemes", lambda: CommaList(_auth_scheme, "expected vencrypt, vnc or none"),
         ("none",), "How the proxies authenticate to VNC servers, in order of preference "
         "(comma list of vencrypt, vnc, none); none alone: relay the server's own "
         "handshake. Otherwise the proxy authenticates and offers clients security None.",
         metavar="SCHEMES"),
    _opt("vencrypt_ca_certs", _STR, "",
         "CA certificates (PEM) that sign the VNC servers' VeNCrypt certificates.",
         metavar="FILE"),
    _opt("vencrypt_client_cert", _STR, "",
         "Client certificate (PEM) the proxy shows VeNCrypt servers (with "
         "vencrypt_client_key).", metavar="FILE"),
    _opt("vencrypt_client_key", _STR, "",
         "Private key (PEM) of vencrypt_client_cert.", metavar="FILE"),
]}

COMMON = ("log_format", "log_level")
RECORDING = ("record_dir", "record_input", "record_max_bytes")
BUS_CLIENT = ("consoleauth_url", "consoleauth_timeout")
# What both console proxies take: bounds, workers, live control, bus keys and the limits.
PROXY = ("max_sessions", "request_head_timeout", "request_head_max", "target_connect_timeout",
         "graceful_timeout", "workers", "consoleauth_events_url", "bus_secret_key_file",
         "bus_server_key_file", "session_idle_timeout", "session_max_age",
         "max_sessions_per_token", "max_sessions_per_instance", "max_sessions_per_client",
         "handshake_rate_per_client", "invalid_token_ban_after", "invalid_token_ban_window",
         "invalid_token_ban_seconds", "client_send_timeout")


def select(names: Iterable[str]) -> list[Option]:
    return [OPTIONS[n] for n in names]


# Newer Nova spellings map to the seed's names, so nova.conf files work as they are.
ALIASES = {
    ("vnc", "server_listen"): "vncserver_listen",
    ("vnc", "server_proxyclient_address"): "vncserver_proxyclient_address",
    ("console", "allowed_origins"): "console_allowed_origins",
    ("consoleauth", "token_ttl"): "console_token_ttl",
    ("default", "record"): "record_dir",  # Nova's [DEFAULT] record (its proxies' --record)
}
