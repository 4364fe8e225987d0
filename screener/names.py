"""Stream, subject, consumer and event-type names: the single place they are spelled.

The KEDA and Knative manifests are checked against this module by ``tests/deploy``, so a renamed
consumer cannot silently break autoscaling.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENT_SOURCE_COLLECTOR = "/screener/collector"
EVENT_SOURCE_CALCULATOR = "/screener/calculator"
EVENT_SOURCE_RULES = "/screener/rules"
EVENT_SOURCE_GATEWAY = "/screener/gateway"

# Event types: reverse-DNS, versioned by a ``.v1`` suffix.
TYPE_CANDLE_CLOSED = "com.screener.candle.closed.v1"
TYPE_CANDLE_FORMING = "com.screener.candle.forming.v1"
TYPE_METRICS_COMPUTED = "com.screener.metrics.computed.v1"
TYPE_METRICS_PROVISIONAL = "com.screener.metrics.provisional.v1"
TYPE_ALERT_TRIGGERED = "com.screener.alert.triggered.v1"
TYPE_RULES_CHANGED = "com.screener.rules.changed.v1"

# Subjects carry the symbol as their last token (events.md), so consumers and KEDA can scope by it.
SUBJECT_PREFIX_BY_TYPE: dict[str, str] = {
    TYPE_CANDLE_CLOSED: "candles.1m",
    TYPE_CANDLE_FORMING: "candles.forming",
    TYPE_METRICS_COMPUTED: "metrics.1m",
    TYPE_METRICS_PROVISIONAL: "metrics.forming",
    TYPE_ALERT_TRIGGERED: "alerts",
}
SUBJECT_RULES_CHANGED = "control.rules.changed"
SUBJECT_DEAD_LETTER_PREFIX = "deadletter"


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream: its name and the subjects it captures."""

    name: str
    subjects: tuple[str, ...]


STREAM_CANDLES = StreamSpec("CANDLES", ("candles.>",))
STREAM_METRICS = StreamSpec("METRICS", ("metrics.>",))
STREAM_ALERTS = StreamSpec("ALERTS", ("alerts.>",))
STREAM_DEAD_LETTERS = StreamSpec("DEADLETTERS", (f"{SUBJECT_DEAD_LETTER_PREFIX}.>",))
STREAMS: tuple[StreamSpec, ...] = (STREAM_CANDLES, STREAM_METRICS, STREAM_ALERTS, STREAM_DEAD_LETTERS)


@dataclass(frozen=True)
class ConsumerSpec:
    """One function's durable pull consumer."""

    function: str
    durable: str
    stream: StreamSpec
    filter_subject: str
    # Batches one worker process may have in flight; None: as configured (worker_concurrency).
    max_concurrency: int | None = None


CONSUMER_CALCULATOR = ConsumerSpec("calculator", "calculator", STREAM_CANDLES, "candles.>")
CONSUMER_RECORDER = ConsumerSpec("recorder", "recorder", STREAM_CANDLES, "candles.1m.>")
# The rules evaluate each symbol's minutes in order (cooldowns, on_change, recent()): one batch at a time.
CONSUMER_RULES = ConsumerSpec("rules", "rules", STREAM_METRICS, "metrics.>", max_concurrency=1)
CONSUMER_NOTIFIER = ConsumerSpec("notifier", "notifier", STREAM_ALERTS, "alerts.>")
CONSUMERS: dict[str, ConsumerSpec] = {
    c.function: c for c in (CONSUMER_CALCULATOR, CONSUMER_RECORDER, CONSUMER_RULES, CONSUMER_NOTIFIER)
}


def subject_for(event_type: str, symbol: str) -> str:
    """Return the NATS subject an event of ``event_type`` about ``symbol`` is published on."""
    try:
        prefix = SUBJECT_PREFIX_BY_TYPE[event_type]
    except KeyError:
        raise ValueError(f"no subject is defined for event type {event_type!r}") from None
    return f"{prefix}.{symbol}"


def dead_letter_subject(function: str) -> str:
    """Return the dead-letter subject of ``function``."""
    return f"{SUBJECT_DEAD_LETTER_PREFIX}.{function}"
