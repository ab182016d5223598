"""`consoleauth`: the token service on the ZeroMQ bus (nova-consoleauth)."""

from __future__ import annotations

from console_common.runtime import early

early.defer_stop_signals()  # first: a Ctrl-C during start-up is a clean stop after it

from gevent import monkey  # noqa: E402

monkey.patch_all()

import sys
from typing import Any
from urllib.parse import urlsplit

import gevent
import structlog
import zmq
from console_common import __version__
from console_common.net.bus import BusServer
from console_common.runtime.config import COMMON, parse
from console_common.runtime.service import Shutdown, boot

from console_common.runtime.keys import curve_client, curve_server
from consoleauth.control import open_control
from consoleauth.control.publisher import Publisher
from consoleauth.methods import ROLE_AWARE, handlers
from consoleauth.metrics import metrics_host, start_metrics
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable, open_store

OPTIONS = (*COMMON, "consoleauth_listen", "consoleauth_events_listen", "console_token_ttl",
           "token_store", "state_dir", "redis_url", "redis_timeout", "consoleauth_timeout",
           "graceful_timeout", "bus_secret_key_file", "bus_authorized_keys_dir",
           "compute_server_key_file", "consoleauth_metrics_port")
# What each CURVE role may call here ("admin": everything).
ROLES = {
    "proxy": frozenset({"check_token", "check_tokens", "ping", "events_since",
                        "report_sessions", "claim_session"}),
    "compute": frozenset({"authorize_console", "delete_tokens_for_instance", "revoke_token",
                          "ping"}),
    "server": frozenset({"ping"}),
}
# Who may connect to which socket: the bus, and the events socket (proxies and admins).
ZAP_DOMAINS = {"bus": frozenset({"proxy", "compute", "admin", "server"}),
               "events": frozenset({"proxy", "admin"})}
PURGE_EVERY = 30.0


def main(argv: list[str] | None = None) -> int:
    config, _ = parse("consoleauth", "Console token service (nova-consoleauth) on the ZeroMQ bus.",
                      OPTIONS, argv)
    log = boot("consoleauth", config)
    curve = curve_server(config, "consoleauth")
    compute_curve = curve_client(config, "consoleauth", server_key="compute_server_key_file") \
        if config.compute_server_key_file else None
    try:
        store = open_store(config.token_store, config.state_dir, config.redis_url,
                           config.redis_timeout)
    except StoreUnavailable as exc:
        log.error("service.store_failed", error=str(exc))
        print(f"consoleauth: error: {exc}", file=sys.stderr)
        return 1
    control_log, sessions = open_control(store)
    state = State(store=store, ttl=config.console_token_ttl,
                  compute_timeout=config.consoleauth_timeout, log=control_log,
                  sessions=sessions, compute_curve=compute_curve)
    # Token checks never wait (store.lookup answers now or hands back a result to wait
    # on): they are served in the receive loop, without a greenlet each. ping counts
    # tokens, which waits on a store whose reads wait.
    inline = frozenset({"check_token", "check_tokens"} | (set() if store.reads_wait
                                                          else {"ping"}))
    context = zmq.Context()  # one for the bus, the events socket and their ZAP handler
    if curve is not None:
        curve.start_zap(context, ZAP_DOMAINS)
    else:
        _warn_if_open(log, config.consoleauth_listen, config.consoleauth_events_listen)
    server = BusServer(config.consoleauth_listen, handlers(state), inline=inline,
                       context=context, curve=curve, roles=ROLES, role_aware=ROLE_AWARE)
    try:
        bound = server.start()
    except zmq.ZMQError as exc:
        log.error("service.bind_failed", endpoint=config.consoleauth_listen, error=str(exc))
        print(f"consoleauth: error: cannot bind {config.consoleauth_listen}: {exc}", file=sys.stderr)
        return 1
    publisher = Publisher(config.consoleauth_events_listen, control_log, context=context,
                          curve=curve)
    try:
        events = publisher.start()
    except zmq.ZMQError as exc:
        server.stop(grace=0)
        log.error("service.bind_failed", endpoint=config.consoleauth_events_listen,
                  error=str(exc))
        print(f"consoleauth: error: cannot bind {config.consoleauth_events_listen}: {exc}",
              file=sys.stderr)
        return 1
    state.publisher = publisher
    metrics = None
    if config.consoleauth_metrics_port:
        host = metrics_host(config.consoleauth_listen)
        try:
            metrics = start_metrics(host, config.consoleauth_metrics_port, server.counters,
                                    lambda: {"version": __version__, "store": store.name})
        except OSError as exc:
            publisher.stop()
            server.stop(grace=0)
            log.error("service.bind_failed", host=host, port=config.consoleauth_metrics_port,
                      error=str(exc))
            print(f"consoleauth: error: cannot listen on {host}:"
                  f"{config.consoleauth_metrics_port}: {exc}", file=sys.stderr)
            return 1
    log.info("service.start", version=__version__, listen=bound, events=events,
             store=store.name, ttl_s=config.console_token_ttl, curve=curve is not None,
             authorized_keys=len(curve.keyring) if curve is not None else None,
             metrics_port=metrics.server_port if metrics is not None else None)
    purger = gevent.spawn(_purge_loop, state, log)
    shutdown = Shutdown().install()
    shutdown.wait()
    log.info("service.stopping", signal=shutdown.signal)
    purger.kill()
    if metrics is not None:
        metrics.stop(timeout=1)
    publisher.stop()
    server.stop(grace=min(config.graceful_timeout, 5.0))
    state.close()
    log.info("service.stop", counters=dict(server.counters))
    return 0


def _purge_loop(state: State, log: structlog.BoundLogger) -> None:
    while True:
        gevent.sleep(PURGE_EVERY)
        try:
            purged = state.store.purge(state.clock())
        except StoreUnavailable as exc:
            log.warning("store.purge_failed", error=str(exc))
            continue
        if purged:
            log.info("store.purged", expired=purged)




def _warn_if_open(log: Any, *endpoints: str) -> None:
    """Plain ZeroMQ on an address others can reach: anyone there can mint tokens, and
    read the console passwords check_token answers (no role tells a proxy apart)."""
    for endpoint in endpoints:
        host = urlsplit(endpoint).hostname or ""
        if host not in ("127.0.0.1", "::1", "localhost") and not endpoint.startswith(
                ("ipc://", "inproc://")):
            log.warning("bus.insecure", endpoint=endpoint,
                        hint="set bus_secret_key_file and bus_authorized_keys_dir (CURVE): "
                        "without it any caller can mint tokens and read console passwords")


if __name__ == "__main__":
    raise SystemExit(main())
