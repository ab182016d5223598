"""The log schema: every event each service writes, its level(s) and its fields with types.

Kept next to the code that logs, and enforced three ways (tests):
  - every ``log.<level>("event", field=...)`` call in libs/ and services/ names an event,
    level and fields listed here (tests/unit/test_logschema.py reads the source);
  - every line every service wrote during the integration suite validates (``problems``);
  - docs/logs.md and the lnav format monitoring/lnav/console_suite.json are rendered
    from it (runtime/logdocs.py) and must equal those files.

A field's type is ``str``, ``int``, ``number`` (int or float), ``bool``, ``list``,
``list[str]``, ``list[int]``, ``object`` or ``null``; ``a|b`` is either; a leading ``?``
marks a field a line may leave out. Plain data and one pure function (``problems``): no
I/O here, so ``consolectl logs``, the lnav format and the docs can all read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CONSOLEAUTH, NOVNC, XVP, COMPUTE, CTL = ("consoleauth", "novncproxy", "xvpvncproxy",
                                         "fake-compute", "consolectl")
PROXIES = (NOVNC, XVP)
SERVERS = (CONSOLEAUTH, COMPUTE)  # bus servers (ZeroMQ ROUTER)
SERVICES = (CONSOLEAUTH, NOVNC, XVP, COMPUTE)  # started through runtime.service.boot
EVERY = (*SERVICES, CTL)
LEVELS = ("debug", "info", "warning", "error", "critical")

# On every line (runtime.logging): the renderer adds them.
COMMON: Mapping[str, str] = {
    "timestamp": "str",  # ISO-8601 UTC, e.g. 2026-12-03T06:40:01.123456Z
    "level": "str",
    "service": "str",
    "event": "str",
}
# On any line: ``worker`` on a pre-fork worker's lines (runtime.workers).
COMMON_OPTIONAL: Mapping[str, str] = {"worker": "?int"}

# Bound (structlog contextvars) to every line logged while a session runs
# (sessions.runner.Session.bound): session.* events and whatever the relay logs meanwhile.
SESSION: Mapping[str, str] = {
    "session_id": "str",
    "token_id": "str",
    "instance_uuid": "str",
    "client": "str",
    "client_port": "?int",  # absent when the client is a forwarded address
    "target": "str",
}
MAYBE_SESSION: Mapping[str, str] = {k: "?" + v.lstrip("?") for k, v in SESSION.items()}
EXC: Mapping[str, str] = {"exception": "?list"}  # exc_info rendered (no locals)

# Lines from the stdlib ``logging`` module (gevent, third parties) and ``warnings`` carry
# ``logger`` (its name, e.g. ``py.warnings``) and free text as ``event``.
FOREIGN_FIELDS: Mapping[str, str] = {"logger": "str", "exception": "?list"}

_BASE = frozenset({"str", "int", "number", "bool", "list", "list[str]", "list[int]",
                   "object", "null"})


@dataclass(frozen=True)
class Event:
    name: str
    services: tuple[str, ...]
    levels: tuple[str, ...]
    fields: Mapping[str, str]
    doc: str
    where: str = ""  # the module that logs it (for the docs)

    def __post_init__(self) -> None:
        for name, spec in self.fields.items():
            for part in spec.lstrip("?").split("|"):
                if part not in _BASE:
                    raise ValueError(f"{self.name}.{name}: unknown type {part!r}")


def _ev(name: str, services: Iterable[str], levels: str, doc: str, where: str,
        *parts: Mapping[str, str], **fields: str) -> Event:
    merged: dict[str, str] = {}
    for part in parts:
        merged.update(part)
    merged.update(fields)
    return Event(name, tuple(services), tuple(levels.split()), merged, doc, where)


_SESSION_END = {
    "kind": "str", "close_reason": "str", "close_detail": "?str",
    "bytes_up": "int", "bytes_down": "int", "duration_s": "number",
    # what the passive RFB observer learnt (not on connect_failed)
    "rfb_version": "?str|null", "security_type": "?str|null", "desktop_name": "?str|null",
    "recording": "?str",  # the session's recording file (record_dir set)
    "security_scheme": "?str",  # the security proxy's scheme with the VNC server
}

EVENTS: tuple[Event, ...] = (
    # -- sessions (both proxies: sessions.runner, the one session path) ------------------
    _ev("session.start", PROXIES, "info", "A session was admitted and starts relaying.",
        "sessions/runner.py", SESSION, kind="str"),
    _ev("session.end", PROXIES, "info warning", "A session ended (warning: its VNC server "
        "could not be reached, close_reason connect_failed).", "sessions/runner.py",
        SESSION, _SESSION_END),
    _ev("session.cut_failed", PROXIES, "warning", "Telling a client its session was cut "
        "failed (the relay ends anyway).", "sessions/runner.py", SESSION, EXC,
        reason="str"),
    _ev("session.refused", PROXIES, "info", "A request was refused before a session "
        "(reason: a short name; detail: the words; status: the HTTP status or xvp's).",
        "novncproxy/handler.py, xvpvncproxy/server.py",
        reason="str", detail="str|null", status="int|null", client="str",
        client_port="?int"),
    _ev("xvp.closed", (XVP,), "info", "A client closed before sending a whole preamble "
        "(a health probe): nobody to answer, not a refusal.", "xvpvncproxy/server.py",
        detail="str", client="str", client_port="int"),
    _ev("metrics.bad_request", (XVP, CONSOLEAUTH), "info", "A malformed request on a "
        "metrics port got its 400/431.", "net/plainhttp.py", client="str", reason="str"),
    _ev("xvp.client_gone", (XVP,), "info", "The client left before its 200 OK was sent.",
        "xvpvncproxy/server.py", SESSION, reason="str"),
    _ev("client.banned", PROXIES, "warning", "A client sent too many invalid tokens and is "
        "banned for a while.", "sessions/limits.py", client="str", invalid_tokens="int",
        window_s="number", ban_s="number"),
    _ev("limits.clock_died", PROXIES, "error", "The idle/age limit clock greenlet died.",
        "sessions/limits.py", EXC),
    _ev("control.applied", PROXIES, "info", "A live-control event (revocation, disconnect) "
        "was applied; cut is how many sessions it ended.", "sessions/control.py",
        kind="str", seq="int", cut="int", instance_uuid="str|null"),
    _ev("control.reporter_died", PROXIES, "error", "The session reporter greenlet died.",
        "sessions/control.py", EXC),
    _ev("control.report_failed", PROXIES, "warning", "Reporting open sessions to "
        "consoleauth failed (rate-limited).", "sessions/control.py", error="str",
        suppressed="int"),
    # -- the events link (proxies follow consoleauth's events: net/bus/events.py) ------
    _ev("events.link_up", PROXIES, "info", "consoleauth's events heartbeats are heard.",
        "net/bus/events.py", endpoints="list[str]"),
    _ev("events.link_down", PROXIES, "warning", "No events heartbeat for silent_s seconds.",
        "net/bus/events.py", endpoints="list[str]", silent_s="number"),
    _ev("events.connect_failed", PROXIES, "warning", "An events endpoint could not be "
        "connected.", "net/bus/events.py", endpoint="str", error="str"),
    _ev("events.bad_message", PROXIES, "warning", "A malformed events message was dropped "
        "(rate-limited).", "net/bus/events.py", error="str", suppressed="int"),
    _ev("events.lost", PROXIES, "warning", "Events were missed beyond what the control log "
        "holds.", "net/bus/events.py", epoch="str", after="int", hint="str"),
    _ev("events.new_epoch", PROXIES, "info", "consoleauth's events log restarted (new "
        "epoch).", "net/bus/events.py", old="str|null", new="str"),
    _ev("events.catch_up_failed", PROXIES, "warning", "Catching up on missed events failed "
        "(rate-limited).", "net/bus/events.py", error="str", suppressed="int"),
    _ev("events.follower_died", PROXIES, "error", "The events follower greenlet died.",
        "net/bus/events.py", EXC),
    # -- novncproxy HTTP -----------------------------------------------------------------
    _ev("http.bad_request", (NOVNC,), "info", "An HTTP request that could not be parsed or "
        "served.", "novncproxy/handler.py", status="int", reason="str", client="str"),
    _ev("http.tls_failed", (NOVNC,), "info", "A TLS handshake failed (error: the exception "
        "type).", "novncproxy/server.py", error="str"),
    # -- consoleauth ---------------------------------------------------------------------
    _ev("token.authorized", (CONSOLEAUTH,), "info", "A console token was stored.",
        "consoleauth/methods/authorize_console.py", token_id="str", instance_uuid="str",
        console_type="str", target="str", ttl_s="number", with_password="?bool"),
    _ev("token.password_unsealable", (CONSOLEAUTH,), "warning", "A token's console password "
        "could not be unsealed (the session goes on without it).",
        "consoleauth/methods/check_token.py", token_id="str", instance_uuid="str"),
    _ev("token.revoked", (CONSOLEAUTH,), "info", "Tokens were deleted: one (token_id) or "
        "every token of an instance (instance_uuid).", "consoleauth/methods/",
        token_id="?str", instance_uuid="?str", deleted="int"),
    _ev("token.port_invalid", (CONSOLEAUTH,), "info", "The compute host says a token's port "
        "is no longer its instance's (CVE-2013-0335): refused.",
        "consoleauth/methods/check_token.py", token_id="str", instance_uuid="str"),
    _ev("sessions.disconnect", (CONSOLEAUTH,), "info", "A disconnect was published; matched "
        "is how many reported sessions it names.", "consoleauth/methods/disconnect.py",
        matched="int", instance_uuid="str|null", client="str|null",
        session_ids="list[str]|null"),
    _ev("store.purged", (CONSOLEAUTH,), "info", "Expired tokens were purged.",
        "consoleauth/cli.py", expired="int"),
    _ev("store.purge_failed", (CONSOLEAUTH,), "warning", "Purging expired tokens failed.",
        "consoleauth/cli.py", error="str"),
    _ev("store.unavailable", (CONSOLEAUTH,), "warning", "The Redis store failed requests "
        "(rate-limited).", "consoleauth/stores/redis_link.py", store="str", url="str",
        error="str", requests="int", suppressed="int"),
    _ev("store.reconnected", (CONSOLEAUTH,), "info", "The Redis store is reachable again.",
        "consoleauth/stores/redis_link.py", store="str", url="str"),
    _ev("store.write_failed", (CONSOLEAUTH,), "warning", "A batch of sqlite writes failed "
        "(rate-limited).", "consoleauth/stores/sqlite.py", store="str", path="str",
        writes="int", error="str", suppressed="int"),
    _ev("store.callback_failed", (CONSOLEAUTH,), "error", "A store completion callback "
        "raised.", "consoleauth/stores/base.py", EXC),
    _ev("events.send_failed", (CONSOLEAUTH,), "warning", "Publishing an event failed "
        "(rate-limited).", "consoleauth/control/publisher.py", error="str",
        suppressed="int"),
    _ev("events.head_failed", (CONSOLEAUTH,), "warning", "Publishing the heartbeat failed "
        "(rate-limited).", "consoleauth/control/publisher.py", error="str",
        suppressed="int"),
    _ev("bus.insecure", (CONSOLEAUTH,), "warning", "The bus listens on a reachable address "
        "without CURVE.", "consoleauth/cli.py", endpoint="str", hint="str"),
    # -- bus servers (consoleauth, fake-compute: net/bus/server.py, curve.py) -------------
    _ev("bus.request_failed", SERVERS, "warning", "A request was answered with an error "
        "(rate-limited).", "net/bus/server.py", method="str", error_type="str", error="str",
        suppressed="int"),
    _ev("bus.handler_failed", SERVERS, "error", "A method handler raised (answered "
        "InternalError).", "net/bus/server.py", EXC, method="str"),
    _ev("bus.recv_failed", SERVERS, "warning", "Receiving on the bus socket failed.",
        "net/bus/server.py", error="str"),
    _ev("bus.reply_dropped", SERVERS, "debug", "A reply could not be sent.",
        "net/bus/server.py", error="str"),
    _ev("bus.loop_died", SERVERS, "error", "The bus receive loop died.",
        "net/bus/server.py", EXC, endpoint="str"),
    _ev("bus.key_refused", SERVERS, "warning", "A CURVE client key is not authorized "
        "(rate-limited; key: its first 8 Z85 characters).", "net/bus/curve.py",
        domain="str", peer="str", role="str|null", key="str", suppressed="int"),
    # -- fake-compute ----------------------------------------------------------------------
    _ev("console.authorized", (COMPUTE,), "info", "get_vnc_console authorized a token with "
        "consoleauth.", "fakecompute/control.py", instance="str", instance_uuid="str",
        console_type="str", token_id="str", target="str"),
    _ev("console.password_failed", (COMPUTE,), "warning", "A one-time console password "
        "could not be set over QMP (get_vnc_console answers Unavailable).",
        "fakecompute/control.py", instance="str", error="str"),
    _ev("instance.deleted", (COMPUTE,), "info warning", "An instance was deleted (warning: "
        "its tokens could not be revoked).", "fakecompute/control.py", instance="str",
        instance_uuid="str", closed_connections="int", tokens_revoked="int|null",
        error="?str"),
    _ev("vnc.client_disconnected", (COMPUTE,), "info warning error", "A VNC client left "
        "a fake console (warning: a protocol error; error: an internal one).",
        "fakecompute/rfbserver.py", instance="str", instance_uuid="str", client="str",
        reason="str", duration_s="number", updates="int", bytes_sent="int",
        bytes_received="int"),
    _ev("vnc.client_connected", (COMPUTE,), "info", "A VNC client connected to a fake "
        "console.", "fakecompute/rfbserver.py", instance="str", instance_uuid="str",
        client="str", port="int"),
    # -- service life cycle (runtime/service.py, runtime/workers.py, each cli.py) ---------
    _ev("service.start", (CONSOLEAUTH,), "info", "consoleauth is serving.",
        "consoleauth/cli.py", version="str", listen="str", events="str", store="str",
        ttl_s="number", curve="bool", authorized_keys="int|null", metrics_port="int|null"),
    _ev("service.start", (NOVNC,), "info", "novncproxy (or one worker) is serving.",
        "novncproxy/cli.py", version="str", listen="str", scheme="str", ssl_only="bool",
        novnc_dir="str|null", consoleauth="list[str]", max_sessions="int", workers="int",
        fd_limit="int", auth_schemes="?list[str]"),
    _ev("service.start", (XVP,), "info", "xvpvncproxy (or one worker) is serving.",
        "xvpvncproxy/cli.py", version="str", listen="str", metrics_port="int|null",
        base_url="str", max_sessions="int", workers="int", auth_schemes="?list[str]"),
    _ev("service.start", (COMPUTE,), "info", "fake-compute is serving (instances: name, "
        "uuid, kind, host, port, password set).", "fakecompute/cli.py", version="str",
        control="str", public_url="str", consoleauth="list[str]", vncserver_listen="str",
        instances="list"),
    _ev("service.stopping", SERVICES, "info", "A stop signal arrived (proxies: sessions "
        "still open).", "*/cli.py", signal="str|null", sessions="?int"),
    _ev("service.stop", SERVICES, "info", "The service stopped (bus servers: request "
        "counters by method.result).", "*/cli.py", counters="?object"),
    _ev("service.draining", PROXIES, "info", "Waiting up to grace_s for open sessions.",
        "runtime/service.py", sessions="int", grace_s="number"),
    _ev("service.cutting_sessions", PROXIES, "warning", "The grace period ended: the "
        "sessions left are cut.", "runtime/service.py", sessions="int"),
    _ev("service.stop_failed", PROXIES, "debug", "Stopping a server raised.",
        "runtime/service.py", EXC),
    _ev("service.fd_limit_unchanged", SERVICES, "warning", "The open-files limit could not "
        "be raised.", "runtime/service.py", soft="int", hard="int", error="str"),
    _ev("service.bind_failed", SERVICES, "error", "A listening address could not be bound.",
        "*/cli.py", error="str", endpoint="?str", host="?str", port="?int"),
    _ev("service.store_failed", (CONSOLEAUTH,), "error", "The token store could not be "
        "opened.", "consoleauth/cli.py", error="str"),
    _ev("recording.failed", PROXIES, "warning error", "A session's recording could not be "
        "opened or written (the session goes on unrecorded).", "sessions/recorder.py", EXC,
        MAYBE_SESSION,
        path="str", error="?str"),
    _ev("recording.stopped", PROXIES, "warning", "Recording stopped early (reason: "
        "max_bytes, stalled ...); the session goes on.", "sessions/recorder.py", MAYBE_SESSION,
        path="str",
        reason="str", detail="str|null", recorded_bytes="int"),
    _ev("recording.close_timeout", PROXIES, "warning", "A recording's writer did not finish "
        "within its bound at the session's end.", "sessions/recorder.py", MAYBE_SESSION,
        path="str"),
    _ev("service.config_error", PROXIES, "error", "The configuration cannot work.",
        "novncproxy/cli.py", error="str"),
    _ev("service.tls_failed", (NOVNC,), "error", "The certificate or key could not be "
        "loaded.", "novncproxy/cli.py", cert="str|null", error="str"),
    _ev("service.novnc_missing", (NOVNC,), "warning", "No noVNC files: the console page "
        "cannot be served.", "novncproxy/cli.py", web="str|null", hint="str"),
    _ev("config.unknown_option", SERVICES, "warning", "An option in a config file or the "
        "environment is not known (reported, not ignored).", "runtime/service.py",
        detail="str"),
    _ev("workers.start", PROXIES, "info", "The pre-fork parent started its workers.",
        "runtime/workers.py", workers="int", pids="list[int]"),
    _ev("workers.stopping", PROXIES, "info", "The pre-fork parent stops its workers.",
        "runtime/workers.py", reason="str", workers="int"),
    _ev("workers.reload", PROXIES, "info", "SIGHUP to the main process: passed on to every "
        "worker.", "runtime/workers.py", workers="int"),
    _ev("service.reload", SERVICES, "info", "SIGHUP with nothing to reload (reloaded false, "
        "detail why).", "runtime/service.py, novncproxy/cli.py", reloaded="bool",
        detail="str"),
    _ev("service.reload_failed", SERVICES, "error", "A reload raised (the service goes on).",
        "runtime/service.py", EXC),
    _ev("tls.reloaded", (NOVNC,), "info", "SIGHUP: new TLS handshakes use cert/key as they "
        "are now; open sessions keep theirs.", "novncproxy/cli.py", cert="str"),
    _ev("tls.reload_failed", (NOVNC,), "error", "SIGHUP: the new certificate did not load; "
        "the one in use is kept.", "novncproxy/cli.py", cert="str", error="str",
        detail="str"),
    _ev("limits.cluster_unavailable", PROXIES, "warning", "consoleauth could not count the "
        "cluster's sessions for a per-token/per-instance limit: this process's own count "
        "holds (rate-limited).", "sessions/control.py", error="str", suppressed="int",
        detail="str"),
    _ev("workers.stop", PROXIES, "info", "Every worker has exited.", "runtime/workers.py",
        signal="str|null"),
    _ev("workers.killing", PROXIES, "warning", "Workers outlived the grace period: killed.",
        "runtime/workers.py", pids="list[int]"),
    _ev("worker.exit", PROXIES, "warning", "A worker exited non-zero while stopping.",
        "runtime/workers.py", worker="int", pid="int", exit_code="int"),
    _ev("worker.died", PROXIES, "error", "A worker died while serving (replaced: a new one "
        "was started).", "runtime/workers.py", worker="int", pid="int", exit_code="int",
        replaced="bool"),
    _ev("worker.crashed", PROXIES, "error", "A worker raised out of its service.",
        "runtime/workers.py", EXC),
    _ev("workers.metrics_cleanup_failed", PROXIES, "debug", "A dead worker's metrics files "
        "could not be removed.", "runtime/workers.py", EXC, pid="int"),
    # -- any process -------------------------------------------------------------------------
    _ev("greenlet.error", EVERY, "error", "An uncaught error in a greenlet (gevent's hub), "
        "with the session's fields when it ran in one.", "runtime/logging.py", EXC,
        MAYBE_SESSION, context="str"),
)


@dataclass
class Index:
    by_key: dict[tuple[str, str], Event] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)


def _index(events: Iterable[Event]) -> Index:
    index = Index()
    for event in events:
        index.names.add(event.name)
        for service in event.services:
            key = (event.name, service)
            if key in index.by_key:
                raise ValueError(f"{event.name} listed twice for {service}")
            index.by_key[key] = event
    return index


INDEX = _index(EVENTS)


def type_ok(spec: str, value: Any) -> bool:
    for part in spec.lstrip("?").split("|"):
        if part == "null" and value is None:
            return True
        if part == "str" and isinstance(value, str):
            return True
        if part == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if part == "int" and isinstance(value, int):
            return True
        if part == "number" and isinstance(value, (int, float)):
            return True
        if part == "object" and isinstance(value, dict):
            return True
        if part.startswith("list") and isinstance(value, list):
            item = part[5:-1]
            if not item or all(type_ok(item, v) for v in value):
                return True
    return False


def _check_fields(line: Mapping[str, Any], spec: Mapping[str, str], what: str) -> list[str]:
    problems = []
    for name, value in line.items():
        if name not in spec:
            problems.append(f"{what}: undocumented field {name!r} = {value!r:.80}")
        elif not type_ok(spec[name], value):
            problems.append(f"{what}: field {name!r} should be {spec[name].lstrip('?')}, "
                            f"got {type(value).__name__} {value!r:.80}")
    for name, kind in spec.items():
        if not kind.startswith("?") and name not in line:
            problems.append(f"{what}: missing field {name!r}")
    return problems


def problems(line: Mapping[str, Any]) -> list[str]:
    """What is wrong with one parsed log line against the schema ([] when it conforms)."""
    event, service = line.get("event"), line.get("service")
    if not isinstance(event, str) or not isinstance(service, str):
        return ["line without a string 'event' and 'service'"]
    what = f"{service} {event}"
    found = []
    level = line.get("level")
    if level not in LEVELS:
        found.append(f"{what}: level {level!r} is not one of {', '.join(LEVELS)}")
    if service not in EVERY:
        return [*found, f"{what}: unknown service {service!r}"]
    if "logger" in line:  # stdlib logging or warnings, routed through structlog
        spec = {**COMMON, **COMMON_OPTIONAL, **FOREIGN_FIELDS}
        return found + _check_fields(line, spec, what)
    declared = INDEX.by_key.get((event, service))
    if declared is None:
        where = ("listed for other services" if event in INDEX.names else "not in the schema")
        return [*found, f"{what}: undocumented event ({where})"]
    if level in LEVELS and level not in declared.levels:
        found.append(f"{what}: level {level!r}, schema says {'/'.join(declared.levels)}")
    spec = {**COMMON, **COMMON_OPTIONAL, **declared.fields}
    return found + _check_fields(line, spec, what)
