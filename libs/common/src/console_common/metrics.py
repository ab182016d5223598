"""A tiny Prometheus text-format registry: counters, gauges and histograms.

    registry = Registry()
    opened = registry.counter("novncproxy_sessions_total", "Sessions opened.")
    checks = registry.counter("novncproxy_token_checks_total", "Token checks.", ("result",))
    latency = registry.histogram("novncproxy_token_check_seconds", "Token check latency.")
    opened.inc()
    checks.inc(result="ok")
    latency.observe(0.004)
    body = registry.render()  # serve with CONTENT_TYPE

One registry per service process, created at start and passed to whoever updates it (no
module-level state). Updates are plain dict operations: cheap enough per session or per
request, never meant per frame. gevent runs one greenlet at a time, so no locks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LabelKey = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Iterable[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)

    def _key(self, labels: dict[str, str]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:  # each kind (Counter, Gauge, Histogram) renders its own
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up. Without labels it is reported as 0 from the start."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelKey, float] = {} if labelnames else {(): 0}

    def inc(self, amount: float = 1, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0)

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, key)} {_format(v)}"
                for key, v in sorted(self._values.items())]


class Gauge(Counter):
    """A value that goes up and down."""

    kind = "gauge"

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0) + amount

    def dec(self, amount: float = 1, **labels: str) -> None:
        self.inc(-amount, **labels)

    def set(self, value: float, **labels: str) -> None:
        self._values[self._key(labels)] = value


class Histogram(_Metric):
    """Observations counted in cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help, labelnames)
        if list(buckets) != sorted(buckets) or not buckets:
            raise ValueError("histogram buckets must be sorted and not empty")
        self.buckets = (*buckets, math.inf) if buckets[-1] != math.inf else tuple(buckets)
        # per label set: [count per bucket (not cumulative)..., sum, count]
        self._series: dict[LabelKey, list[float]] = {} if labelnames else {(): self._empty()}

    def _empty(self) -> list[float]:
        return [0] * (len(self.buckets) + 2)

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._empty()
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series[i] += 1
                break
        series[-2] += value
        series[-1] += 1

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return int(series[-1]) if series else 0

    def lines(self) -> list[str]:
        out = []
        for key, series in sorted(self._series.items()):
            running = 0.0
            for bound, n in zip(self.buckets, series, strict=False):
                running += n
                le = f'le="{_format(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} "
                           f"{_format(running)}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_format(series[-2])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {_format(series[-1])}")
        return out


class Registry:
    """The metrics of one process, rendered in Prometheus text format 0.0.4."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help, labelnames))  # type: ignore[return-value]

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help, labelnames, buckets))  # type: ignore[return-value]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines += metric.header()
            lines += metric.lines()
        return "\n".join(lines) + "\n"
