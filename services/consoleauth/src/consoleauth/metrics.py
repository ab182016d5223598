"""consoleauth's ``/metrics`` and ``/healthz`` (HTTP, ``consoleauth_metrics_port``), so
Prometheus can tell it is up (``up{job="consoleauth"}``) and how its bus requests end.

The figures are the bus server's own counters (``BusServer.counters``, kept anyway),
read at scrape time by a collector: nothing is added to the request path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import prometheus_client
from console_common.net.plainhttp import PlainHttpServer
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class BusCollector(Collector):
    """``consoleauth_requests_total{method, result}`` (result: ``ok`` or the error type
    answered: InvalidToken, Unavailable, InternalError, ...) and
    ``consoleauth_rejected_total{reason}`` (refused before any method ran)."""

    def __init__(self, counters: Mapping[str, int], info: Callable[[], dict[str, str]]) -> None:
        self.counters, self.info = counters, info

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily("consoleauth_requests", "Bus requests answered, by "
                                       "method and result (ok or the error type).",
                                       labels=["method", "result"])
        rejected = CounterMetricFamily("consoleauth_rejected", "Bus requests refused before "
                                       "a method ran (bad_request, forbidden, dropped, "
                                       "internal_error, reply_dropped).", labels=["reason"])
        for key, count in sorted(self.counters.items()):
            method, dot, result = key.partition(".")
            if dot:
                requests.add_metric([method, result], count)
            else:
                rejected.add_metric([key], count)
        info = GaugeMetricFamily("consoleauth_info", "Always 1; the labels say what runs.",
                                 labels=sorted(self.info()))
        info.add_metric([v for _, v in sorted(self.info().items())], 1)
        yield from (requests, rejected, info)


def metrics_host(listen: str) -> str:
    """The HTTP host of the metrics port: the bus's (``tcp://*:6085`` -> every address)."""
    host = urlsplit(listen).hostname or ""
    return "0.0.0.0" if host in ("", "*") else host


def start_metrics(host: str, port: int, counters: Mapping[str, int],
                  info: Callable[[], dict[str, str]]) -> PlainHttpServer:
    """Serve ``/metrics`` and ``/healthz`` (a small pool of its own: a scrape never waits
    for the bus). Raises OSError when the port cannot be bound."""
    registry = CollectorRegistry()
    registry.register(BusCollector(counters, info))

    def route(path: str, _query: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, prometheus_client.CONTENT_TYPE_LATEST, \
                prometheus_client.generate_latest(registry)
        if path == "/healthz":
            return 200, "application/json", json.dumps(
                {"ok": True, "service": "consoleauth", "pid": os.getpid()}).encode()
        return 404, "text/plain", b"not found\n"

    server = PlainHttpServer((host, port), route)
    server.start()
    return server
