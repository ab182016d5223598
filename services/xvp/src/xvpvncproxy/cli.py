"""`xvpvncproxy`: the xvp console proxy (nova-xvpvncproxy) as a gevent service."""

from __future__ import annotations

from console_common.runtime import early

early.defer_stop_signals()  # first: a Ctrl-C during start-up is a clean stop after it

from gevent import monkey  # noqa: E402

monkey.patch_all()

import sys
from typing import Any

import gevent.pool
from console_common import __version__
from console_common.net.bus import BusClient
from console_common.net.plainhttp import PlainHttpServer
from console_common.runtime.config import BUS_CLIENT, COMMON, PROXY, RECORDING, parse
from console_common.sessions.metrics import ProxyMetrics
from console_common.runtime.keys import curve_client
from console_common.runtime.security import OPTIONS as SECURITY_OPTIONS
from console_common.runtime.security import security_policy
from console_common.runtime.service import EXIT_OK, Shutdown, boot, drain, recording_policy
from console_common.runtime.workers import bind_listeners, listen, notify_ready, run_workers
from console_common.sessions.control import Control
from console_common.sessions.limits import LimitPolicy, SessionClock
from console_common.sessions.runner import SHUTDOWN, SessionRegistry
from gevent.server import StreamServer

from xvpvncproxy.server import XvpProxy, metrics_route

OPTIONS = (*COMMON, *BUS_CLIENT, *RECORDING, *PROXY, *SECURITY_OPTIONS,
           "xvpvncproxy_host", "xvpvncproxy_port", "xvpvncproxy_base_url",
           "xvpvncproxy_metrics_port")
BACKLOG = 1024


def main(argv: list[str] | None = None) -> int:
    config, _ = parse("xvpvncproxy", "xvp console proxy (nova-xvpvncproxy): an HTTP-style "
                      "preamble with the console token, then raw RFB to the VNC server.",
                      OPTIONS, argv)
    log = boot("xvpvncproxy", config)
    recording_policy(config, "xvpvncproxy", log)  # checked once, before any worker starts
    curve = curve_client(config, "xvpvncproxy")  # checked once, before any worker starts
    security = security_policy(config, "xvpvncproxy")
    addresses = [(config.xvpvncproxy_host, config.xvpvncproxy_port)]
    if config.xvpvncproxy_metrics_port:
        addresses.append((config.xvpvncproxy_host, config.xvpvncproxy_metrics_port))
    try:
        listeners = bind_listeners(addresses, config.workers)
    except OSError as exc:
        log.error("service.bind_failed", error=str(exc))
        print(f"xvpvncproxy: error: cannot listen: {exc}", file=sys.stderr)
        return 1
    return run_workers(listeners, lambda socks: _serve(config, log, listen(socks, BACKLOG),
                                                       curve, security),
                       "xvpvncproxy", config.graceful_timeout)


def _serve(config: Any, log: Any, socks: list[Any], curve: Any, security: Any = None) -> int:
    """One process's service: its loop, bus connection, sessions and metrics."""
    bus = BusClient(config.consoleauth_url, config.consoleauth_timeout, curve=curve)
    metrics = ProxyMetrics(config.max_sessions)
    pool = gevent.pool.Pool(config.max_sessions)
    sessions = SessionRegistry(metrics)
    sessions.recording = recording_policy(config, "xvpvncproxy", log)  # None: not recording
    proxy = XvpProxy(bus, metrics, sessions, head_max=config.request_head_max,
                     head_timeout=config.request_head_timeout,
                     connect_timeout=config.target_connect_timeout,
                     limits=LimitPolicy.from_config(config), security=security)
    servers = [StreamServer(socks[0], proxy.handle, spawn=pool)]
    if len(socks) > 1:
        # /metrics and /healthz answer even when every session slot is taken.
        servers.append(PlainHttpServer(socks[1], metrics_route(metrics, lambda: len(sessions))))
    for server in servers:
        server.start()
    log.info("service.start", version=__version__,
             listen=f"{config.xvpvncproxy_host}:{servers[0].server_port}",
             metrics_port=servers[1].server_port if len(servers) > 1 else None,
             base_url=config.xvpvncproxy_base_url, max_sessions=config.max_sessions,
             workers=config.workers,
             auth_schemes=list(security.schemes) if security is not None else ["none"])
    control = Control(sessions, bus, config.consoleauth_events_url, "xvpvncproxy")
    control.start()
    SessionClock(proxy.limits, sessions).start()  # idle and age limits (if set)
    proxy.control = control
    shutdown = Shutdown().install()
    notify_ready()
    shutdown.wait()
    log.info("service.stopping", signal=shutdown.signal, sessions=len(sessions))
    drain(servers, pool, config.graceful_timeout, on_cut=lambda: sessions.cut_all(SHUTDOWN))
    control.stop()
    bus.close()
    log.info("service.stop")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
