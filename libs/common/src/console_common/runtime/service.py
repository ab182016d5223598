"""Running a gevent service: fd limit, signals, graceful drain (gunicorn's gevent worker).

Signal handlers only set an Event; the main greenlet then stops accepting, lets open
sessions drain up to ``graceful_timeout`` and kills what is left.
"""

from __future__ import annotations

import gc
import resource
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
import gevent.pool
import greenlet
import structlog

from console_common.runtime import early

log = structlog.get_logger("service")

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard limit (a session costs two fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("service.fd_limit_unchanged", soft=soft, hard=hard, error=str(exc))
    return soft


def early_stop_signal() -> str | None:
    """A stop signal that came before the service's handlers were installed (remembered by
    ``runtime.early``), if any."""
    return early.stopped[0] if early.stopped else None


class Shutdown:
    """Set by SIGTERM/SIGINT; the main greenlet waits on it."""

    def __init__(self) -> None:
        self.event = gevent.event.Event()
        self.signal: str | None = None

    def install(self, on_reload: Callable[[], None] | None = None) -> "Shutdown":
        """The last step of every service's start-up: signals, and the heap settled.
        SIGHUP runs ``on_reload`` (novncproxy: its certificate); without one it is logged
        and ignored (never the default action, which would end the process)."""
        for sig in early.STOP_SIGNALS:
            gevent.signal_handler(sig, self._on_signal, sig)
        gevent.signal_handler(signal.SIGHUP, self._on_reload, on_reload)
        if (pending := early_stop_signal()) is not None:  # asked to stop while starting
            self.signal = pending
            self.event.set()
        # What start-up made (modules, schemas, config) lives as long as the process: out
        # of the collector's scans, full collections stop costing 10+ ms pauses (measured:
        # consoleauth on redis, 100 REQ clients, check_token p99 18 ms -> 6 ms).
        gc.freeze()
        return self

    def _on_signal(self, sig: int) -> None:
        self.signal = signal.Signals(sig).name
        self.event.set()

    @staticmethod
    def _on_reload(on_reload: Callable[[], None] | None) -> None:
        if on_reload is None:
            log.info("service.reload", reloaded=False, detail="nothing to reload")
            return
        try:
            on_reload()
        except Exception:  # a reload must never end the service
            log.exception("service.reload_failed")

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)


def drain(servers: Iterable[Any], pool: gevent.pool.Pool | None, grace: float,
          on_cut: Callable[[], None] | None = None) -> None:
    """Stop listening, wait for sessions to finish up to ``grace`` seconds, then cut them."""
    for server in servers:
        server.close()  # stop accepting; open connections continue
    if pool is not None:
        open_sessions = len(pool)
        if open_sessions:
            log.info("service.draining", sessions=open_sessions, grace_s=grace)
        pool.join(timeout=grace)
        left = len(pool)
        if left:
            log.warning("service.cutting_sessions", sessions=left)
            if on_cut is not None:
                on_cut()
            pool.kill(block=True, timeout=2)
    for server in servers:
        try:
            server.stop(timeout=1)
        except Exception:  # already stopped: nothing to do, but never silently
            log.debug("service.stop_failed", exc_info=True)


def live_greenlets() -> int:
    """Greenlets alive in this process, made after start-up (``Shutdown.install`` freezes
    the older ones out of the collector's lists): proof that a fault left none behind.
    A heap walk (about 0.1 s per million objects), so only on request:
    ``/healthz?greenlets=1`` on both proxies."""
    count = 0
    for obj in gc.get_objects():
        try:
            count += isinstance(obj, greenlet.greenlet) and not obj.dead
        except ReferenceError:  # a weak proxy whose object is gone: not a greenlet
            pass
    return count


def boot(service: str, config: Any) -> Any:
    """What every service does first: logging as configured, config notes reported (never
    ignored), the fd limit raised. Returns the service's logger."""
    from console_common.runtime.logging import configure

    early.defer_stop_signals()  # imported late (a test, a tool): from now on at least
    configure(service, config.log_format, config.log_level)
    logger = structlog.get_logger(service)
    for note in config.notes:
        logger.warning("config.unknown_option", detail=note)
    raise_fd_limit()
    return logger


def recording_policy(config: Any, service: str, log: Any) -> Any:
    """``record_dir``'s recording policy (None when unset), checked at start: a directory the
    service cannot write stops it here with one line, not at its first session."""
    from console_common.sessions.recorder import RecordingPolicy

    policy = RecordingPolicy.from_config(config)
    if policy is None:
        return None
    try:
        policy.check()
    except OSError as exc:
        log.error("service.config_error", error=f"record_dir: {exc}")
        print(f"{service}: error: cannot record to {config.record_dir}: {exc.strerror}",
              file=sys.stderr)
        raise SystemExit(1) from None
    return policy
