"""A small Prometheus registry in the text exposition format (version 0.0.4), served at ``/metrics``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

LabelValues = tuple[tuple[str, str], ...]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: LabelValues, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = labels + extra
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.values: dict[LabelValues, float] = defaultdict(float)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the series of ``labels``."""
        self.values[tuple(sorted(labels.items()))] += amount

    def render(self) -> list[str]:
        """Return the exposition lines."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(k)} {v}" for k, v in sorted(self.values.items())]
        return lines


class Gauge:
    """A value read when scraped."""

    def __init__(self, name: str, help_text: str, read: Callable[[], dict[LabelValues, float]]) -> None:
        self.name, self.help, self._read = name, help_text, read

    def render(self) -> list[str]:
        """Return the exposition lines."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        lines += [f"{self.name}{_labels(k)} {v}" for k, v in sorted(self._read().items())]
        return lines


class Histogram:
    """Observations in cumulative buckets per label set."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts: dict[LabelValues, list[int]] = {}
        self.sums: dict[LabelValues, float] = defaultdict(float)

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation."""
        key = tuple(sorted(labels.items()))
        counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[key] += value

    def render(self) -> list[str]:
        """Return the exposition lines."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self.counts.items()):
            for bound, count in zip(self.buckets, counts, strict=False):
                lines.append(f"{self.name}_bucket{_labels(key, (('le', repr(bound)),))} {count}")
            lines.append(f"{self.name}_bucket{_labels(key, (('le', '+Inf'),))} {counts[-1]}")
            lines.append(f"{self.name}_sum{_labels(key)} {self.sums[key]}")
            lines.append(f"{self.name}_count{_labels(key)} {counts[-1]}")
        return lines


class Registry:
    """The gateway's metrics."""

    def __init__(self) -> None:
        self.requests = Counter("screener_gateway_http_requests_total", "HTTP requests by route and status.")
        self.latency = Histogram("screener_gateway_http_request_seconds", "HTTP request duration by route.")
        self.rate_limited = Counter("screener_gateway_rate_limited_total", "Requests refused with 429.")
        self.alerts_received = Counter("screener_gateway_alerts_received_total", "Alerts read from NATS.")
        self.metrics_received = Counter("screener_gateway_metrics_received_total", "Metrics events read from NATS.")
        self.invalid_events = Counter("screener_gateway_invalid_events_total", "Undecodable events from NATS.")
        self.frames_sent = Counter("screener_gateway_ws_frames_total", "WebSocket frames queued by type.")
        self.fanout = Histogram(
            "screener_gateway_fanout_seconds",
            "Time of one pass handing the pending alerts to every connected client.",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
        )
        self.slow_closes = Counter("screener_gateway_ws_slow_client_closes_total", "Clients closed with 4008.")
        self.gauges: list[Gauge] = []

    def add_gauge(self, name: str, help_text: str, read: Callable[[], dict[LabelValues, float]]) -> None:
        """Register a gauge read at scrape time."""
        self.gauges.append(Gauge(name, help_text, read))

    def render(self) -> str:
        """Return the whole exposition text."""
        lines: list[str] = []
        for metric in (
            self.requests,
            self.latency,
            self.rate_limited,
            self.alerts_received,
            self.metrics_received,
            self.invalid_events,
            self.frames_sent,
            self.fanout,
            self.slow_closes,
        ):
            lines += metric.render()
        for gauge in self.gauges:
            lines += gauge.render()
        return "\n".join(lines) + "\n"
