"""consoleauth's /metrics: the bus server's counters as Prometheus series (the scrape by a
real Prometheus is in tests/integration/test_monitoring.py)."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest

from consoleauth.metrics import BusCollector, metrics_host


def test_counters_become_requests_and_rejections():
    counters = Counter({"check_token.ok": 5, "check_token.InvalidToken": 2,
                        "ping.ok": 1, "bad_request": 3, "forbidden": 1})
    registry = CollectorRegistry()
    registry.register(BusCollector(counters, lambda: {"version": "1.2", "store": "redis"}))
    text = generate_latest(registry).decode()
    assert 'consoleauth_requests_total{method="check_token",result="ok"} 5.0' in text
    assert 'consoleauth_requests_total{method="check_token",result="InvalidToken"} 2.0' in text
    assert 'consoleauth_rejected_total{reason="bad_request"} 3.0' in text
    assert 'consoleauth_info{store="redis",version="1.2"} 1.0' in text
    counters["check_token.ok"] += 1  # read at scrape time
    assert ('consoleauth_requests_total{method="check_token",result="ok"} 6.0'
            in generate_latest(registry).decode())


def test_metrics_host_follows_the_bus_endpoint():
    assert metrics_host("tcp://127.0.0.1:6085") == "127.0.0.1"
    assert metrics_host("tcp://*:6085") == "0.0.0.0"
    assert metrics_host("tcp://0.0.0.0:6085") == "0.0.0.0"
