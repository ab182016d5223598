"""Pre-fork workers: gunicorn's arbiter, in its smallest form, for a many-core host.

    ports = bind_listeners([(host, port), (host, metrics_port)], workers=config.workers)
    return run_workers(config.workers, ports, lambda socks: serve(config, socks), log)

The parent binds every port once per worker with SO_REUSEPORT (so port 0 and a port in use
fail here, in one process, with one clear error) and forks; each worker ``listen()``s on
its own sockets, runs the whole service with its own gevent loop and its own bus
connection, and the kernel spreads new connections across the workers' listeners. The
parent only supervises:
  - SIGTERM/SIGINT: passed to every worker, which drains as a single process would; the
    parent waits ``grace`` (+5 s) and then kills what is left;
  - SIGHUP: passed to every worker (novncproxy reloads its certificate);
  - a worker that dies while serving is logged (``worker.died``) and replaced; one that
    dies before it said it was serving (``notify_ready``: its listeners and bus are up)
    is not, since its replacement would fail the same way: everything stops, exit 1.

Metrics: prometheus-client's multiprocess mode (one directory per run, removed at exit):
every worker's ``/metrics`` answers the sum over all workers; ``/healthz`` is per worker
(``worker``, ``sessions``: that worker's own).
With ``workers=1`` nothing forks and the service runs in this process, as before.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import structlog

from console_common.runtime.logging import set_process_fields
from console_common.runtime.early import defer_stop_signals
from console_common.runtime.service import early_stop_signal

log = structlog.get_logger("service")

_ready_fd: int | None = None  # in a worker: the pipe that tells the parent it serves


def notify_ready() -> None:
    """Called by a worker once it serves; nothing to do without pre-fork workers."""
    global _ready_fd
    if _ready_fd is not None:
        os.write(_ready_fd, b"!")
        os.close(_ready_fd)
        _ready_fd = None


@dataclass
class Listeners:
    """The ports a service listens on (port 0 resolved), and each worker's sockets."""

    addresses: list[tuple[str, int]]
    per_worker: list[list[socket.socket]]

    def rebind(self, index: int) -> list[socket.socket]:
        """Fresh sockets on the same ports, for a worker that replaces a dead one."""
        self.per_worker[index] = [_bound(host, port, reuse_port=True)
                                  for host, port in self.addresses]
        return self.per_worker[index]


def bind_listeners(addresses: Sequence[tuple[str, int]], workers: int) -> Listeners:
    """One bound (not yet listening) socket per address, per worker; raises OSError.

    Port 0 is resolved by the first worker's socket and shared by the others. A bound but
    not listening socket takes no connections, so nothing queues before a worker listens.
    """
    per_worker: list[list[socket.socket]] = [[] for _ in range(workers)]
    resolved: list[tuple[str, int]] = []
    try:
        for host, port in addresses:
            for index in range(workers):
                sock = _bound(host, port, reuse_port=workers > 1)
                port = sock.getsockname()[1]
                per_worker[index].append(sock)
            resolved.append((host, port))
    except OSError:
        for socks in per_worker:
            for sock in socks:
                sock.close()
        raise
    return Listeners(resolved, per_worker)


def _read_ready(fd: int) -> bool:
    try:
        return os.read(fd, 1) == b"!"
    except BlockingIOError:
        return False


def _bound(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    info = socket.getaddrinfo(host or None, port, family if host else socket.AF_UNSPEC,
                              socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def listen(socks: Sequence[socket.socket], backlog: int) -> list[socket.socket]:
    for sock in socks:
        sock.listen(backlog)
    return list(socks)


def use_multiprocess_metrics(directory: str) -> None:
    """Switch prometheus-client to its multiprocess mode (values in mmap files in
    ``directory``) before any metric is made."""
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.get_value_class()


def run_workers(listeners: Listeners, serve: Callable[[list[socket.socket]], int],
                service: str, grace: float) -> int:
    """Run ``serve(sockets)`` in one process per worker (in this one when there is one);
    the service's exit code."""
    if len(listeners.per_worker) <= 1:
        return serve(listeners.per_worker[0])
    metrics_dir = tempfile.mkdtemp(prefix=f"{service}-metrics-")
    use_multiprocess_metrics(metrics_dir)
    arbiter = _Arbiter(listeners, serve, grace, metrics_dir)
    try:
        return arbiter.run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Arbiter:
    def __init__(self, listeners: Listeners,
                 serve: Callable[[list[socket.socket]], int], grace: float,
                 metrics_dir: str) -> None:
        self.listeners, self.serve, self.grace = listeners, serve, grace
        self.metrics_dir = metrics_dir
        self.children: dict[int, tuple[int, int]] = {}  # pid -> (worker index, ready pipe)
        self.ready: set[int] = set()
        self.handlers: list[Any] = []
        self.stopping: str | None = None
        self.failed = False
        self.changed = gevent.event.Event()

    def run(self) -> int:
        # No SIGCHLD handler: gevent's fork watches its children through libev (which
        # reaps them); os.waitpid (gevent's) hands their statuses over, polled below.
        self.handlers = [gevent.signal_handler(sig, self._on_signal, sig)
                         for sig in (signal.SIGTERM, signal.SIGINT)]
        self.handlers.append(gevent.signal_handler(signal.SIGHUP, self._on_hup))
        if (early := early_stop_signal()) is not None:  # stopped while starting
            self._stop(early)
        for index in range(len(self.listeners.per_worker)):
            self._spawn(index)
        log.info("workers.start", workers=len(self.listeners.per_worker),
                 pids=sorted(self.children))
        deadline: float | None = None
        while self.children:
            self._reap()
            if self.stopping and deadline is None:
                deadline = time.monotonic() + self.grace + 5.0
            if deadline is not None and time.monotonic() > deadline:
                log.warning("workers.killing", pids=sorted(self.children))
                self._signal_all(signal.SIGKILL)
                deadline = time.monotonic() + 5.0
            self.changed.wait(0.2)
            self.changed.clear()
        log.info("workers.stop", signal=self.stopping)
        return 1 if self.failed else 0

    def _spawn(self, index: int) -> None:
        # The parent closes its copy once the worker holds it: a replacement worker gets
        # fresh sockets on the same ports (SO_REUSEPORT), made here before the fork.
        socks = self.listeners.per_worker[index]
        if any(sock.fileno() < 0 for sock in socks):
            socks = self.listeners.rebind(index)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            self._child(index, socks, ready_w)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self.children[pid] = (index, ready_r)
        for sock in socks:
            sock.close()

    def _child(self, index: int, socks: list[socket.socket], ready_w: int) -> None:
        global _ready_fd
        code = 1
        try:
            _ready_fd = ready_w
            for _, other_r in self.children.values():
                os.close(other_r)
            for other in self.listeners.per_worker:
                for sock in other:
                    if sock not in socks:
                        sock.close()
            for handler in self.handlers:  # the worker installs its own
                handler.cancel()
            defer_stop_signals()  # a Ctrl-C while the worker starts: a clean stop after
            set_process_fields(worker=index)
            code = self.serve(socks)
        except BaseException:
            log.exception("worker.crashed")
        finally:
            os._exit(code)

    def _reap(self) -> None:
        for pid, (_, ready_r) in self.children.items():
            if pid not in self.ready and _read_ready(ready_r):
                self.ready.add(pid)
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            index, ready_r = self.children.pop(pid, (None, -1))
            if index is None:
                continue
            served = pid in self.ready or _read_ready(ready_r)
            self.ready.discard(pid)
            os.close(ready_r)
            self._mark_dead(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code != 0:
                    log.warning("worker.exit", worker=index, pid=pid, exit_code=code)
                continue
            log.error("worker.died", worker=index, pid=pid, exit_code=code,
                      replaced=served)
            if served:
                self._spawn(index)
            else:  # it never served: a replacement would fail the same way
                self.failed = True
                self._stop("worker_failed")

    def _mark_dead(self, pid: int) -> None:
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)
        except OSError:
            log.debug("workers.metrics_cleanup_failed", pid=pid, exc_info=True)

    def _on_signal(self, sig: int) -> None:
        self._stop(signal.Signals(sig).name)

    def _on_hup(self) -> None:
        """SIGHUP (reload: novncproxy's certificate) is the workers' business: passed on."""
        log.info("workers.reload", workers=len(self.children))
        self._signal_all(signal.SIGHUP)

    def _stop(self, reason: str) -> None:
        if self.stopping is None:
            self.stopping = reason
            log.info("workers.stopping", reason=reason, workers=len(self.children))
        # Ctrl-C reaches the workers from the terminal too; once more is harmless.
        self._signal_all(signal.SIGTERM)
        self.changed.set()

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
