"""One trace follows a candle from the collector through the calculator and the rules to its alert."""

from __future__ import annotations

import asyncio

import asyncpg
from nats.js import JetStreamContext
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.emitter import closed_candle_event
from functions.calculator.function import create as create_calculator
from functions.rules.function import create as create_rules
from screener.config import load_settings
from screener.events import nats_binding
from screener.events.models import Candle
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_streams
from screener.tracing import current_traceparent, tracer


def trace_id_of(traceparent: object) -> int:
    return int(str(traceparent).split("-")[1], 16)


async def test_a_candles_trace_reaches_its_alert(
    span_exporter: InMemorySpanExporter,
    jetstream: JetStreamContext,
    nats_url: str,
    redis_url: str,
    postgres_dsn: str,
    pg: asyncpg.Connection,
) -> None:
    # A rule that fires on any minute with a 5m change, so the candle surely ends in an alert.
    await pg.execute(
        "INSERT INTO alert_rules (rule_type, name, expression, min_coverage, frequency) "
        "VALUES ('trace_probe', 'Trace probe', 'c5m > -1000', 0, 'once_per_bar_close')"
    )
    settings = load_settings(
        {}, nats_url=nats_url, redis_url=redis_url, postgres_dsn=postgres_dsn, ack_wait_seconds=10.0
    )
    await ensure_streams(jetstream, settings)
    workers = [
        Worker(create_calculator(settings), jetstream, settings, fetch_timeout=0.1),
        Worker(create_rules(settings), jetstream, settings, fetch_timeout=0.1),
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    alerts = await jetstream.subscribe("alerts.>", ordered_consumer=True)
    candle = Candle(
        symbol="TRACEUSDT",
        open_time=1_771_200_000_000,
        open=10.0,
        high=10.5,
        low=9.9,
        close=10.4,
        volume=100.0,
        quote_volume=1_020.0,
    )
    with tracer().start_as_current_span("collector.emit_closed") as root:
        event = closed_candle_event(candle, traceparent=current_traceparent())
    await Publisher(jetstream).publish([event])
    try:
        message = await alerts.next_msg(timeout=60)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks)

    trace_id = root.get_span_context().trace_id
    alert = nats_binding.from_message(message.headers, message.data)
    assert alert.get_data()["rule_type"] == "trace_probe"  # type: ignore[index]
    assert trace_id_of(alert.get_attributes()["traceparent"]) == trace_id
    hops = {s.name: s for s in span_exporter.get_finished_spans() if s.context.trace_id == trace_id}
    assert {"collector.emit_closed", "calculator.handle", "rules.handle"} <= set(hops)
    assert hops["calculator.handle"].parent.span_id == root.get_span_context().span_id  # type: ignore[union-attr]
    assert hops["rules.handle"].parent.span_id == hops["calculator.handle"].context.span_id  # type: ignore[union-attr]
