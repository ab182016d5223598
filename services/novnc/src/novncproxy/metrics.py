"""novncproxy's metrics (Prometheus text on /metrics), on the shared tiny registry.

Byte counters are added when a session ends (nothing is counted per chunk); a long
session shows up in them at its end.
"""

from __future__ import annotations

from console_common.metrics import Registry

TOKEN_RESULTS = ("ok", "invalid", "unavailable")
CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProxyMetrics:
    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.sessions_open = r.gauge("novncproxy_sessions_open", "Console sessions open now.")
        self.sessions_total = r.counter(
            "novncproxy_sessions_total", "Console sessions accepted (101 sent).")
        self.sessions_ended = r.counter(
            "novncproxy_sessions_ended_total", "Console sessions ended, by close reason.",
            ("close_reason",))
        self.bytes_up = r.counter(
            "novncproxy_bytes_up_total", "Bytes relayed from clients to consoles (at session end).")
        self.bytes_down = r.counter(
            "novncproxy_bytes_down_total", "Bytes relayed from consoles to clients (at session end).")
        self.token_checks = r.counter(
            "novncproxy_token_checks_total", "Token checks on the bus, by result.", ("result",))
        self.token_check_seconds = r.histogram(
            "novncproxy_token_check_seconds", "Latency of token checks on the bus.",
            buckets=CHECK_BUCKETS)
        self.handshake_errors = r.counter(
            "novncproxy_handshake_errors_total",
            "Connections or upgrades refused before a session, by reason.", ("reason",))
        for result in TOKEN_RESULTS:
            self.token_checks.inc(0, result=result)

    def render(self) -> str:
        return self.registry.render()
