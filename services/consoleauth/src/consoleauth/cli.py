"""`consoleauth`: the token service on the ZeroMQ bus (nova-consoleauth)."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys

import gevent
import structlog
import zmq
from console_common import __version__
from console_common.net.bus import BusServer
from console_common.runtime.config import COMMON, parse
from console_common.runtime.service import Shutdown, boot

from consoleauth.control import open_control
from consoleauth.control.publisher import Publisher
from consoleauth.methods import handlers
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable, open_store

OPTIONS = (*COMMON, "consoleauth_listen", "consoleauth_events_listen", "console_token_ttl", "token_store", "state_dir",
           "redis_url", "redis_timeout", "consoleauth_timeout", "graceful_timeout")
PURGE_EVERY = 30.0


def main(argv: list[str] | None = None) -> int:
    config, _ = parse("consoleauth", "Console token service (nova-consoleauth) on the ZeroMQ bus.",
                      OPTIONS, argv)
    log = boot("consoleauth", config)
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
                  sessions=sessions)
    # Token checks never wait (store.lookup answers now or hands back a result to wait
    # on): they are served in the receive loop, without a greenlet each. ping counts
    # tokens, which waits on a store whose reads wait.
    inline = frozenset({"check_token", "check_tokens"} | (set() if store.reads_wait
                                                          else {"ping"}))
    server = BusServer(config.consoleauth_listen, handlers(state), inline=inline)
    try:
        bound = server.start()
    except zmq.ZMQError as exc:
        log.error("service.bind_failed", endpoint=config.consoleauth_listen, error=str(exc))
        print(f"consoleauth: error: cannot bind {config.consoleauth_listen}: {exc}", file=sys.stderr)
        return 1
    publisher = Publisher(config.consoleauth_events_listen, control_log)
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
    log.info("service.start", version=__version__, listen=bound, events=events,
             store=store.name, ttl_s=config.console_token_ttl)
    purger = gevent.spawn(_purge_loop, state, log)
    shutdown = Shutdown().install()
    shutdown.wait()
    log.info("service.stopping", signal=shutdown.signal)
    purger.kill()
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


if __name__ == "__main__":
    raise SystemExit(main())
