"""Candle events: deterministic ids, event time, the trace starting at the collector, dead letters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import collector.emitter
from collector.emitter import CandleEmitter, closed_candle_event
from marketdata.klines import KlineSeries
from screener.config import load_settings
from screener.events import nats_binding
from screener.names import STREAM_CANDLES, STREAM_DEAD_LETTERS, TYPE_CANDLE_CLOSED
from screener.runtime.publisher import REASON_HEADER, Publisher
from screener.streams import ensure_streams


def test_closed_event_has_the_deterministic_id_subject_and_close_time(series_2026: dict[str, KlineSeries]) -> None:
    candle = series_2026["LINKUSDT"].candle(0)
    event = closed_candle_event(candle)
    assert event.get_id() == f"candle.1m:LINKUSDT:{candle.open_time}"
    assert event.get_type() == TYPE_CANDLE_CLOSED
    assert event.get_subject() == "LINKUSDT"
    assert event.get_time() == datetime.fromtimestamp((candle.open_time + 60_000) / 1000, tz=UTC)
    assert closed_candle_event(candle, 1769904060123).get_time() == datetime.fromtimestamp(1769904060.123, tz=UTC)


async def test_a_minute_is_one_span_whose_traceparent_every_event_carries(
    series_2026: dict[str, KlineSeries], jetstream: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(collector.emitter, "tracer", lambda: provider.get_tracer("test"))
    await ensure_streams(jetstream, load_settings({}))
    emitter = CandleEmitter(Publisher(jetstream))
    minute = [series.candle(0) for series in series_2026.values()]
    await emitter.emit_closed(minute)
    (span,) = spans.get_finished_spans()
    assert span.name == "collector.emit_closed"
    context = span.get_span_context()
    assert context is not None
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}"
    info = await jetstream.stream_info(STREAM_CANDLES.name)
    for seq in range(1, info.state.last_seq + 1):
        msg = await jetstream.get_msg(STREAM_CANDLES.name, seq)
        event = nats_binding.from_message(dict(msg.headers or {}), msg.data or b"")
        assert str(event.get_attributes()["traceparent"]).startswith(expected)  # then the trace flags


async def test_invalid_candles_are_dead_lettered_and_the_rest_published(
    series_2026: dict[str, KlineSeries], jetstream: JetStreamContext
) -> None:
    await ensure_streams(jetstream, load_settings({}))
    emitter = CandleEmitter(Publisher(jetstream))
    good = series_2026["DOTUSDT"].candle(5)
    bad = series_2026["NEARUSDT"].candle(5).model_copy(update={"open": -1.0})
    assert await emitter.emit_closed([good, bad]) == 1
    assert emitter.stats.closed == 1 and emitter.stats.invalid == 1
    assert (await jetstream.stream_info(STREAM_CANDLES.name)).state.messages == 1
    msg = await jetstream.get_last_msg(STREAM_DEAD_LETTERS.name, "deadletter.collector")
    assert (msg.headers or {})[REASON_HEADER] == "prices must be finite and > 0"
    data = nats_binding.from_message(dict(msg.headers or {}), msg.data or b"").get_data()
    assert isinstance(data, dict) and data["symbol"] == "NEARUSDT"
