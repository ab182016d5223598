"""Structured logging for every service (structlog).

JSON lines off a terminal (or ``log_format=json``), a readable console on one. Every line
carries ``timestamp`` (ISO-8601 UTC), ``level``, ``service`` and ``event``. The stdlib
``logging`` module (gevent, zmq, third parties) and ``warnings`` are routed through the same
processors, and gevent's hub prints uncaught greenlet errors through us instead of as bare
tracebacks. Keys that could hold secrets are dropped before rendering.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
import structlog.tracebacks

from console_common.proto.tokens import token_id

# Keys whose values are secrets. A token is replaced by its token_id; the rest are dropped.
_SECRET_KEYS = frozenset({"token", "password", "passwd", "secret", "credentials", "key_data"})

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


def redact_secrets(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in _SECRET_KEYS & event_dict.keys():
        value = event_dict.pop(key)
        if key == "token" and isinstance(value, str) and value:
            event_dict.setdefault("token_id", token_id(value))
    return event_dict


# Fields on every line of this process (a pre-fork worker's ``worker``), set after start-up:
# read at each call, so loggers cached before still carry them.
_PROCESS_FIELDS: dict[str, Any] = {}


def set_process_fields(**fields: Any) -> None:
    _PROCESS_FIELDS.update(fields)


def _add_service(service: str):
    def processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("service", service)
        if _PROCESS_FIELDS:
            for key, value in _PROCESS_FIELDS.items():
                event_dict.setdefault(key, value)
        return event_dict

    return processor


def _shared_processors(service: str) -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        _add_service(service),
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def use_json(fmt: str, stream: TextIO) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def configure(service: str, fmt: str = "auto", level: str = "info",
              stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging/warnings/gevent errors through it."""
    stream = stream or sys.stderr
    as_json = use_json(fmt, stream)
    levelno = _LEVELS.get(level, logging.INFO)
    shared = _shared_processors(service)
    if as_json:
        renderer: Any = structlog.processors.JSONRenderer()
        # No local variables in tracebacks: they can hold tokens or keystrokes.
        exc = [structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback)
        exc = []
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *exc,
                    structlog.processors.UnicodeDecoder(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        # one write() per line (print() makes two): pre-fork workers share the stream, and
        # an O_APPEND file keeps each single write whole, so lines never interleave
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Third-party stdlib logging and warnings rendered by the same chain.
    formatter = structlog.stdlib.ProcessorFormatter(
        # ``logger`` marks a line that came from outside structlog (its event is free text)
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *exc, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(levelno, logging.INFO) if levelno < logging.INFO else levelno)
    logging.captureWarnings(True)
    _hook_gevent_hub()


def _hook_gevent_hub() -> None:
    """gevent prints an uncaught greenlet error as a bare traceback on stderr; log it."""
    try:
        import gevent
    except ImportError:  # pragma: no cover - gevent is a dependency
        return
    hub_type = type(gevent.get_hub())
    if getattr(hub_type, "_console_logged", False):
        return
    original = hub_type.print_exception
    log = structlog.get_logger("gevent")

    def print_exception(self: Any, context: Any, type_: Any, value: Any, tb: Any) -> None:
        if type_ is None or issubclass(type_, (SystemExit, KeyboardInterrupt)):
            return original(self, context, type_, value, tb)
        log.error("greenlet.error", context=repr(context)[:200],
                  exc_info=(type_, value, tb))

    hub_type.print_exception = print_exception
    hub_type._console_logged = True


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.get_logger(name, **initial)
