"""The metrics both proxies expose: the same names and labels (Prometheus tells novncproxy
and xvpvncproxy apart by job), made with prometheus-client, one registry per process. The
names, labels and meanings are listed once, in the README ("Health and metrics").
Updated once per connection or session, never per frame.
"""

from __future__ import annotations

import os
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from console_common.sessions.admission import Denial

prometheus_client.disable_created_metrics()  # no *_created series: nobody graphs them

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TOKEN_RESULTS = ("ok", *(d.value for d in Denial if d is not Denial.MISSING))
# A refusal's HTTP status (xvp answers only a status line) as the shared reason vocabulary.
REASON_OF_STATUS = {400: "bad_request", 401: "invalid_token", 403: "invalid_token",
                    408: "head_timeout", 413: "head_too_large", 431: "head_too_large",
                    429: "limited", 503: "consoleauth_unavailable", None: "closed"}


class ProxyMetrics:
    def __init__(self, max_sessions: int | None = None) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Counter("console_connections", "Client connections accepted.",
                                   registry=r)
        self.refused_total = Counter("console_refused", "Connections refused before a "
                                     "session, by reason.", ["reason"], registry=r)
        self.token_checks = Counter("console_token_checks", "Token checks, by result.",
                                    ["result"], registry=r)
        self.token_check_seconds = Histogram("console_token_check_seconds", "Latency of "
                                             "token checks on the bus.", buckets=CHECK_BUCKETS,
                                             registry=r)
        self.sessions = Counter("console_sessions", "Console sessions admitted.", registry=r)
        self.sessions_open = Gauge("console_sessions_open", "Console sessions relaying now.",
                                   registry=r, multiprocess_mode="livesum")
        self.sessions_ended = Counter("console_sessions_ended", "Console sessions ended, by "
                                      "close reason.", ["close_reason"], registry=r)
        self.bytes = Counter("console_bytes", "Bytes relayed, up (client to console) or down, "
                             "counted at session end.", ["direction"], registry=r)
        self.events_link = Gauge("console_events_link_up", "1 while the events link to "
                                 "consoleauth is heard (heartbeats), else 0.", registry=r,
                                 multiprocess_mode="min")
        # what sessions_open is compared with (alert: a proxy near max_sessions); with
        # workers the sum, like sessions_open, as max_sessions is per worker
        self.sessions_max = Gauge("console_sessions_max", "Sessions this proxy admits at "
                                  "once (max_sessions).", registry=r,
                                  multiprocess_mode="livesum")
        if max_sessions is not None:
            self.sessions_max.set(max_sessions)
        for result in TOKEN_RESULTS:  # every series present from the start
            self.token_checks.labels(result=result)
        for direction in ("up", "down"):
            self.bytes.labels(direction=direction)

    def refused(self, reason: str) -> None:
        self.refused_total.labels(reason=reason).inc()

    def token_checked(self, result: str, seconds: float | None = None) -> None:
        self.token_checks.labels(result=result).inc()
        if seconds is not None:
            self.token_check_seconds.observe(seconds)

    def relaying(self) -> None:
        self.sessions_open.inc()

    def ended(self, session: Any, relayed: bool) -> None:
        """A session is over (``relayed``: it had reached ``relaying``)."""
        if relayed:
            self.sessions_open.dec()
        self.sessions_ended.labels(close_reason=session.close_reason or "unknown").inc()
        self.bytes.labels(direction="up").inc(session.bytes_up)
        self.bytes.labels(direction="down").inc(session.bytes_down)

    def render(self) -> bytes:
        """This process's metrics; with pre-fork workers (prometheus-client's multiprocess
        mode, console_common.runtime.workers) the sum over every live worker."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return prometheus_client.generate_latest(merged)
        return prometheus_client.generate_latest(self.registry)
