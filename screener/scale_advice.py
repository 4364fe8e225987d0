"""``screener scale-advice``: read each consumer's lag as KEDA does and print the replicas it would choose.

KEDA's ``nats-jetstream`` scaler polls the NATS monitoring endpoint
``/jsz?acc=<account>&consumers=true&config=true`` and takes, for the named consumer of the named stream,
``num_pending + num_ack_pending`` as the lag. The HPA it drives targets an average of ``lagThreshold``
per replica, so it asks for ``ceil(lag / lagThreshold)`` replicas, bounded by the ScaledObject's
``minReplicaCount`` and ``maxReplicaCount``; from zero replicas KEDA itself activates the first one
only when the lag exceeds ``activationLagThreshold``.

``SCALING`` below is the one table of thresholds. The ScaledObjects in ``keda/`` are checked against it
(and against ``screener.names``) by ``tests/deploy``, so the figures printed here are the cluster's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, TextIO

from screener.config import Settings
from screener.names import CONSUMERS, ConsumerSpec

# NATS without configured accounts puts every client in the global account.
DEFAULT_ACCOUNT = "$G"


class ScaleAdviceError(Exception):
    """The monitoring endpoint could not be read or did not answer as NATS does; the message says which."""


@dataclass(frozen=True)
class ScalingPolicy:
    """The KEDA settings of one JetStream-driven function (mirrored by its ScaledObject in ``keda/``)."""

    consumer: ConsumerSpec
    min_replicas: int
    max_replicas: int
    lag_threshold: int
    activation_lag_threshold: int
    polling_interval_seconds: int
    cooldown_period_seconds: int

    @property
    def function(self) -> str:
        """Return the function's name."""
        return self.consumer.function


# Why these figures (docs/deploy.md, "What scales on what signal", says the same at more length):
# - calculator: latency-critical (metrics are due seconds after the minute closes) and it keeps warm
#   state, so never zero. Each minute close lands one candle per symbol at once (~300-500 events); one
#   replica drains that in well under a second, so only a backlog above 500 per replica adds one.
# - rules: same shape one hop later (one metrics snapshot per symbol per minute); min 1 for latency.
# - recorder: batch writes to PostgreSQL, not on the alert path, so a backlog of 2000 per replica is
#   fine and it may sleep at zero when no candles arrive (replay stopped, market data paused). Max 4
#   bounds the PostgreSQL connections it opens.
# - notifier: alerts are rare and bursty; each webhook may wait seconds on a slow endpoint, so 50
#   pending alerts per replica. At zero until the first alert (activation 0: any alert wakes it); the
#   WebSocket path (gateway) does not depend on it, only webhooks wait for the cold start.
SCALING: dict[str, ScalingPolicy] = {
    policy.function: policy
    for policy in (
        ScalingPolicy(
            CONSUMERS["calculator"],
            min_replicas=1,
            max_replicas=8,
            lag_threshold=500,
            activation_lag_threshold=0,
            polling_interval_seconds=5,
            cooldown_period_seconds=300,
        ),
        ScalingPolicy(
            CONSUMERS["rules"],
            min_replicas=1,
            max_replicas=6,
            lag_threshold=500,
            activation_lag_threshold=0,
            polling_interval_seconds=5,
            cooldown_period_seconds=300,
        ),
        ScalingPolicy(
            CONSUMERS["recorder"],
            min_replicas=0,
            max_replicas=4,
            lag_threshold=2000,
            activation_lag_threshold=0,
            polling_interval_seconds=15,
            cooldown_period_seconds=300,
        ),
        ScalingPolicy(
            CONSUMERS["notifier"],
            min_replicas=0,
            max_replicas=5,
            lag_threshold=50,
            activation_lag_threshold=0,
            polling_interval_seconds=10,
            cooldown_period_seconds=120,
        ),
    )
}


def jsz_url(monitor_url: str, account: str = DEFAULT_ACCOUNT) -> str:
    """Return the monitoring URL KEDA's ``nats-jetstream`` scaler reads."""
    query = urllib.parse.urlencode({"acc": account, "consumers": "true", "config": "true"}, safe="$")
    return f"{monitor_url.rstrip('/')}/jsz?{query}"


def fetch_jsz(monitor_url: str, account: str = DEFAULT_ACCOUNT, timeout: float = 5.0) -> dict[str, Any]:
    """Return the decoded ``/jsz`` document of ``account``."""
    url = jsz_url(monitor_url, account)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise ScaleAdviceError(f"cannot read {url}: {exc}") from exc
    if not isinstance(document, dict):
        raise ScaleAdviceError(f"{url} did not return a JSON object")
    return document


def lag_from_jsz(document: dict[str, Any], account: str, stream: str, consumer: str) -> int | None:
    """Return ``num_pending + num_ack_pending`` of ``consumer`` on ``stream``, or None if it does not exist."""
    for account_detail in document.get("account_details") or []:
        if account_detail.get("name") != account and account_detail.get("id") != account:
            continue
        for stream_detail in account_detail.get("stream_detail") or []:
            if stream_detail.get("name") != stream:
                continue
            for consumer_detail in stream_detail.get("consumer_detail") or []:
                if consumer_detail.get("name") == consumer:
                    return int(consumer_detail.get("num_pending", 0)) + int(consumer_detail.get("num_ack_pending", 0))
    return None


def consumer_lag(monitor_url: str, account: str, stream: str, consumer: str) -> int | None:
    """Read the live lag of one consumer exactly as KEDA does; None if the consumer does not exist."""
    return lag_from_jsz(fetch_jsz(monitor_url, account), account, stream, consumer)


def desired_replicas(lag: int, policy: ScalingPolicy) -> int:
    """Return the replica count KEDA and its HPA converge to for ``lag``.

    With ``minReplicaCount`` 0 and the lag at or below ``activationLagThreshold`` the scaler is
    inactive and the deployment stays at (or returns to, after the cooldown) zero. Otherwise the
    HPA's AverageValue target gives ``ceil(lag / lagThreshold)``, at least one and within the bounds.
    """
    # The activation threshold only matters to scaling from and to zero; with a minimum of one or more
    # the HPA is always in charge.
    if policy.min_replicas == 0 and lag <= policy.activation_lag_threshold:
        return 0
    wanted = math.ceil(lag / policy.lag_threshold)
    return max(policy.min_replicas, 1, min(policy.max_replicas, wanted))


@dataclass(frozen=True)
class Advice:
    """One row of the report."""

    policy: ScalingPolicy
    lag: int | None
    replicas: int


def advise(monitor_url: str, account: str = DEFAULT_ACCOUNT) -> list[Advice]:
    """Return, for every JetStream-driven function, its live lag and the replicas KEDA would choose."""
    document = fetch_jsz(monitor_url, account)
    rows = []
    for policy in SCALING.values():
        spec = policy.consumer
        lag = lag_from_jsz(document, account, spec.stream.name, spec.durable)
        rows.append(Advice(policy, lag, desired_replicas(lag or 0, policy)))
    return rows


def format_table(rows: list[Advice]) -> str:
    """Return ``rows`` as an aligned text table."""
    header = ("function", "stream", "consumer", "lag", "threshold", "activation", "min", "max", "replicas")
    lines = [header]
    for row in rows:
        p = row.policy
        lines.append(
            (
                p.function,
                p.consumer.stream.name,
                p.consumer.durable,
                "missing" if row.lag is None else str(row.lag),
                str(p.lag_threshold),
                str(p.activation_lag_threshold),
                str(p.min_replicas),
                str(p.max_replicas),
                str(row.replicas),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def as_json(rows: list[Advice]) -> str:
    """Return ``rows`` as a JSON array (one object per function)."""
    return json.dumps(
        [
            {
                "function": row.policy.function,
                "stream": row.policy.consumer.stream.name,
                "consumer": row.policy.consumer.durable,
                "lag": row.lag,
                "lag_threshold": row.policy.lag_threshold,
                "activation_lag_threshold": row.policy.activation_lag_threshold,
                "min_replicas": row.policy.min_replicas,
                "max_replicas": row.policy.max_replicas,
                "replicas": row.replicas,
            }
            for row in rows
        ],
        indent=2,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``screener scale-advice``."""
    parser.add_argument(
        "--monitor-url",
        help="NATS monitoring URL, e.g. http://nats.nats-io:8222 (default: SCREENER_NATS_MONITOR_URL)",
    )
    parser.add_argument("--account", default=DEFAULT_ACCOUNT, help="JetStream account (default: $G, no accounts)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS until interrupted")


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Print the advice once, or every ``--watch`` seconds; return 2 if no monitoring URL is known."""
    stream = out or sys.stdout
    monitor_url = args.monitor_url or settings.nats_monitor_url
    if not monitor_url:
        print("screener scale-advice: set --monitor-url or SCREENER_NATS_MONITOR_URL", file=sys.stderr)
        return 2
    while True:
        try:
            rows = advise(monitor_url, args.account)
        except ScaleAdviceError as exc:
            print(f"screener scale-advice: {exc}", file=sys.stderr)
            return 1
        print(as_json(rows) if args.json else format_table(rows), file=stream, flush=True)
        if not args.watch:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
        print(file=stream)
