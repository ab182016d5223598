"""`novncproxy`: the noVNC console page and WebSocket proxy (nova-novncproxy)."""

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
from console_common.runtime.config import BUS_CLIENT, COMMON, PROXY, RECORDING, parse
from console_common.runtime.keys import curve_client
from console_common.runtime.security import OPTIONS as SECURITY_OPTIONS
from console_common.runtime.security import security_policy
from console_common.runtime.service import (Shutdown, boot, drain, raise_fd_limit,
                                            recording_policy)
from console_common.runtime.workers import bind_listeners, listen, notify_ready, run_workers
from console_common.sessions.control import Control
from console_common.sessions.limits import LimitPolicy, SessionClock
from console_common.runtime.novnc import find_novnc_dir
from console_common.sessions.runner import SHUTDOWN

from novncproxy.admission import OriginPolicy
from novncproxy.app import ConsoleApp
from console_common.sessions.metrics import ProxyMetrics
from novncproxy.server import ProxyServer, tls_context

OPTIONS = (*COMMON, *BUS_CLIENT, *RECORDING, *PROXY, *SECURITY_OPTIONS,
           "novncproxy_host", "novncproxy_port", "ssl_only", "cert", "key", "web",
           "console_allowed_origins", "trusted_proxies", "websocket_max_message",
           "websocket_ping_interval", "websocket_ping_timeout")


def main(argv: list[str] | None = None) -> int:
    config, _ = parse("novncproxy", "noVNC console page and WebSocket console proxy "
                      "(nova-novncproxy).", OPTIONS, argv)
    log = boot("novncproxy", config)
    recording_policy(config, "novncproxy", log)  # checked once, before any worker starts
    if config.ssl_only and not config.cert:
        log.error("service.config_error", error="ssl_only needs cert")
        print("novncproxy: error: --ssl-only needs --cert", file=sys.stderr)
        return 2
    fd_limit = raise_fd_limit()
    tls = None
    if config.cert:
        try:
            tls = tls_context(config.cert, config.key)
        except (OSError, ValueError) as exc:
            log.error("service.tls_failed", cert=config.cert, error=str(exc))
            print(f"novncproxy: error: cannot load TLS cert/key: {exc}", file=sys.stderr)
            return 1
    novnc_dir = find_novnc_dir(config.web)
    if novnc_dir is None:
        log.warning("service.novnc_missing", web=config.web or None,
                    hint="run scripts/install-novnc.sh or pass --web DIR")
    curve = curve_client(config, "novncproxy")  # checked once, before any worker starts
    security = security_policy(config, "novncproxy")
    address = (config.novncproxy_host, config.novncproxy_port)
    try:
        listeners = bind_listeners([address], config.workers)
    except OSError as exc:
        log.error("service.bind_failed", host=address[0], port=address[1], error=str(exc))
        print(f"novncproxy: error: cannot listen on {address[0]}:{address[1]}: {exc}",
              file=sys.stderr)
        return 1

    def serve(socks: list[Any]) -> int:
        return _serve(config, log, listen(socks, ProxyServer.backlog)[0], tls, novnc_dir,
                      fd_limit, curve, security)

    return run_workers(listeners, serve, "novncproxy", config.graceful_timeout)


def _serve(config: Any, log: Any, sock: Any, tls: Any, novnc_dir: Any, fd_limit: int,
           curve: Any, security: Any = None) -> int:
    """One process's service: its loop, bus connection, sessions and metrics."""
    metrics = ProxyMetrics(config.max_sessions)
    bus = BusClient(config.consoleauth_url, config.consoleauth_timeout, curve=curve)
    app = ConsoleApp(bus=bus, metrics=metrics,
                     policy=OriginPolicy.from_config(config.console_allowed_origins,
                                                     config.trusted_proxies),
                     novnc_dir=novnc_dir, max_message=config.websocket_max_message,
                     connect_timeout=config.target_connect_timeout,
                     limits=LimitPolicy.from_config(config), security=security)
    pool = gevent.pool.Pool(config.max_sessions)
    app.sessions.recording = recording_policy(config, "novncproxy", log)  # None: not recording
    server = ProxyServer(sock, app, pool=pool, head_max=config.request_head_max,
                         head_timeout=config.request_head_timeout,
                         tls=tls, ssl_only=config.ssl_only)
    server.start()
    host, port = server.address[:2]
    scheme = "https" if tls is not None else "http"
    log.info("service.start", version=__version__, listen=f"{host}:{port}", scheme=scheme,
             ssl_only=config.ssl_only, novnc_dir=str(novnc_dir) if novnc_dir else None,
             consoleauth=list(config.consoleauth_url), max_sessions=config.max_sessions,
             workers=config.workers, fd_limit=fd_limit,
             auth_schemes=list(security.schemes) if security is not None else ["none"])
    control = Control(app.sessions, bus, config.consoleauth_events_url, "novncproxy")
    control.start()
    SessionClock(app.limits, app.sessions).start()  # idle and age limits (if set)
    app.control = control
    shutdown = Shutdown().install(on_reload=lambda: _reload_tls(config, log, server))
    notify_ready()
    shutdown.wait()
    log.info("service.stopping", signal=shutdown.signal, sessions=len(app.sessions))
    server.begin_drain()
    drain([server], pool, config.graceful_timeout,
          on_cut=lambda: app.sessions.cut_all(SHUTDOWN))
    control.stop()
    bus.close()
    log.info("service.stop")
    return 0


def _reload_tls(config: Any, log: Any, server: ProxyServer) -> None:
    """SIGHUP: new handshakes use the certificate now in ``cert``/``key``; open sessions keep
    theirs. A certificate that does not load is refused and the one in use kept."""
    if server.tls is None:
        log.info("service.reload", reloaded=False, detail="no TLS certificate configured")
        return
    try:
        tls = tls_context(config.cert, config.key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.error("tls.reload_failed", cert=config.cert, error=str(exc),
                  detail="the certificate in use is kept")
        return
    server.tls = tls
    log.info("tls.reloaded", cert=config.cert)


if __name__ == "__main__":
    raise SystemExit(main())
