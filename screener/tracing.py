"""OpenTelemetry, set up once per process; the ``traceparent`` extension carries a trace across hops.

One trace follows a candle from the collector through the calculator and the rules to the gateway's
WebSocket frame (CloudEvents distributed tracing extension: the W3C ``traceparent`` travels as a
CloudEvent attribute, so it survives NATS, JetStream redelivery and Knative's HTTP hops alike).
"""

from __future__ import annotations

import functools

from cloudevents.core.base import BaseCloudEvent
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from screener.config import Settings

_configured = False


def setup_tracing(settings: Settings, service_name: str) -> None:
    """Install the tracer provider once; the exporter follows ``settings.otel_exporter``.

    With no exporter no provider is installed: OpenTelemetry's default spans record nothing and cost
    almost nothing (a minute's burst starts a span per event), and each event emitted still carries
    the ``traceparent`` of the event that caused it, so a trace stays whole across services that do
    export.
    """
    global _configured
    if _configured or settings.otel_exporter == "none":
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"{settings.service_name}-{service_name}"}))
    exporter: SpanExporter
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint) if settings.otel_endpoint else OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True


@functools.cache
def tracer() -> trace.Tracer:
    """Return the project's tracer (it follows the provider even when that is installed later)."""
    return trace.get_tracer("screener")


def traceparent_of(event: BaseCloudEvent) -> str | None:
    """Return the ``traceparent`` extension of ``event``, if any."""
    value = event.get_attributes().get("traceparent")
    return str(value) if value else None


def current_traceparent() -> str | None:
    """Return the W3C ``traceparent`` of the current span, to put into an outgoing event."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def start_event_span(event: BaseCloudEvent, name: str) -> tuple[trace.Span, str | None]:
    """Start (not enter) a span continuing ``event``'s trace; return it and its own ``traceparent``."""
    parent = traceparent_of(event)
    ctx = propagate.extract({"traceparent": parent}) if parent else None
    span = tracer().start_span(name, context=ctx, kind=trace.SpanKind.CONSUMER)
    span_context = span.get_span_context()
    if span_context.is_valid:
        flags = f"{int(span_context.trace_flags):02x}"
        return span, f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags}"
    return span, parent


def traceparent_for(delivery: object) -> str | None:
    """Return the ``traceparent`` an event emitted for ``delivery`` should carry."""
    own = getattr(delivery, "traceparent", None)
    if own:
        return str(own)
    event = getattr(delivery, "event", None)
    return traceparent_of(event) if event is not None else None
