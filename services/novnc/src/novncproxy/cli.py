"""`novncproxy`: the noVNC console page and WebSocket proxy (nova-novncproxy)."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys

import gevent.pool
from console_common import __version__
from console_common.net.bus import BusClient
from console_common.runtime.config import BUS_CLIENT, COMMON, parse
from console_common.runtime.service import Shutdown, boot, drain, raise_fd_limit
from console_common.sessions.runner import SHUTDOWN

from novncproxy.admission import OriginPolicy
from novncproxy.app import ConsoleApp, find_novnc_dir
from console_common.sessions.metrics import ProxyMetrics
from novncproxy.server import ProxyServer, tls_context

OPTIONS = (*COMMON, *BUS_CLIENT, "novncproxy_host", "novncproxy_port", "ssl_only", "cert",
           "key", "web", "console_allowed_origins", "trusted_proxies", "max_sessions",
           "websocket_max_message", "request_head_timeout", "request_head_max",
           "target_connect_timeout", "graceful_timeout")


def main(argv: list[str] | None = None) -> int:
    config, _ = parse("novncproxy", "noVNC console page and WebSocket console proxy "
                      "(nova-novncproxy).", OPTIONS, argv)
    log = boot("novncproxy", config)
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
    metrics = ProxyMetrics()
    bus = BusClient(config.consoleauth_url, config.consoleauth_timeout)
    app = ConsoleApp(bus=bus, metrics=metrics,
                     policy=OriginPolicy.from_config(config.console_allowed_origins,
                                                     config.trusted_proxies),
                     novnc_dir=novnc_dir, max_message=config.websocket_max_message,
                     connect_timeout=config.target_connect_timeout)
    pool = gevent.pool.Pool(config.max_sessions)
    server = ProxyServer((config.novncproxy_host, config.novncproxy_port), app, pool=pool,
                         head_max=config.request_head_max,
                         head_timeout=config.request_head_timeout,
                         tls=tls, ssl_only=config.ssl_only)
    try:
        server.start()
    except OSError as exc:
        log.error("service.bind_failed", host=config.novncproxy_host,
                  port=config.novncproxy_port, error=str(exc))
        print(f"novncproxy: error: cannot listen on {config.novncproxy_host}:"
              f"{config.novncproxy_port}: {exc}", file=sys.stderr)
        return 1
    host, port = server.address[:2]
    scheme = "https" if tls is not None else "http"
    log.info("service.start", version=__version__, listen=f"{host}:{port}", scheme=scheme,
             ssl_only=config.ssl_only, novnc_dir=str(novnc_dir) if novnc_dir else None,
             consoleauth=list(config.consoleauth_url), max_sessions=config.max_sessions,
             fd_limit=fd_limit)
    shutdown = Shutdown().install()
    shutdown.wait()
    log.info("service.stopping", signal=shutdown.signal, sessions=len(app.sessions))
    server.begin_drain()
    drain([server], pool, config.graceful_timeout,
          on_cut=lambda: app.sessions.cut_all(SHUTDOWN))
    bus.close()
    log.info("service.stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
