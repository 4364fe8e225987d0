"""One trace follows an event across hops: the ``traceparent`` extension is continued by every worker."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from screener.config import load_settings
from screener.events import nats_binding
from screener.names import STREAM_ALERTS
from screener.runtime.publisher import Publisher
from screener.runtime.worker import Worker
from screener.streams import ensure_consumer, ensure_streams
from screener.tracing import current_traceparent, tracer
from tests.fakes.echo import ECHO_CONSUMER, Echo, input_event


async def test_worker_continues_the_trace_of_each_event_and_passes_it_on(
    span_exporter: InMemorySpanExporter, jetstream: JetStreamContext, redis_url: str
) -> None:
    settings = load_settings({}, ack_wait_seconds=5.0)
    await ensure_streams(jetstream, settings)
    await ensure_consumer(jetstream, ECHO_CONSUMER, settings)
    with tracer().start_as_current_span("collector.emit") as root:
        event = input_event(7, traceparent_hint=True)
        event._attributes["traceparent"] = current_traceparent()
    await Publisher(jetstream).publish([event])
    worker = Worker(Echo(redis_url), jetstream, settings, fetch_timeout=0.2)
    task = asyncio.create_task(worker.run())
    sub = await jetstream.subscribe(f"{STREAM_ALERTS.subjects[0][:-1]}>", ordered_consumer=True)
    output = await sub.next_msg(timeout=10)
    worker.stop()
    await task

    trace_id = root.get_span_context().trace_id
    emitted = nats_binding.from_message(output.headers, output.data)
    emitted_trace = int(str(emitted.get_attributes()["traceparent"]).split("-")[1], 16)
    assert emitted_trace == trace_id
    # The exporter is the session's: keep this trace's spans only.
    handle_spans = [
        s for s in span_exporter.get_finished_spans() if s.name == "echo.handle" and s.context.trace_id == trace_id
    ]
    assert handle_spans
    assert handle_spans[0].context.trace_id == trace_id
    assert handle_spans[0].parent is not None
    assert handle_spans[0].parent.span_id == root.get_span_context().span_id
