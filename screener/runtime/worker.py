"""The JetStream adapter: pull batches from a function's durable consumer and run its handler.

Delivery semantics, in order of a batch's life:
1. every message is decoded (NATS binding) and parsed by the function; one that can never be
   processed (``InvalidEvent``) is republished to the function's dead-letter subject with the reason
   and acknowledged, so it is neither retried for ever nor silently lost;
2. the handler runs on the rest; it writes its state before it returns. While it runs, the batch's
   messages are kept in progress (``+WPI``) so a slow batch is not redelivered to another worker;
3. its output events are published and their acknowledgements awaited (deterministic ids, so a
   re-publish after a crash is dropped by the duplicate window);
4. only then are the inputs acknowledged. A worker killed anywhere before this point leaves its
   inputs unacknowledged, and JetStream redelivers them after ``ack_wait``: processed once in effect.

Consumers have no delivery limit (``max_deliver`` -1): JetStream would drop a message that reached
it with no trace but an advisory, and a nak that only means "not yet" (``TransientError``: a server
down, an earlier minute still on its way) is not a failure. ``TransientError`` naks the batch with a
short capped backoff, for as long as it takes. Any other exception is a crash: the batch is retried
one message at a time, so one poison message cannot take its neighbours with it, and a message whose
handler has crashed ``max_crashes`` times (counted here, not by JetStream) is dead-lettered with the
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from screener.config import Settings
from screener.connections import nats_client_of
from screener.events import nats_binding
from screener.events.envelope import InvalidEvent
from screener.runtime.function import Delivery, Function, PartialBatch, TransientError
from screener.runtime.publisher import Publisher, PublishError
from screener.runtime.pull import ConsumerError, PullFetcher
from screener.streams import ensure_consumer, ensure_streams
from screener.tracing import start_event_span, tracer

log = logging.getLogger(__name__)

# How long a loop waits before pulling again after the server refused a pull request.
_REFUSED_RETRY_SECONDS = 1.0
# The longest a nak delays a redelivery: an event naked for a transient failure is never away longer
# than ack_wait or this.
MAX_RETRY_DELAY_SECONDS = 5.0
# How long a batch whose outputs JetStream did not store waits before it is tried again.
PUBLISH_RETRY_SECONDS = 1.0
# The longest an event waiting for an earlier one of its symbol is kept away (screener.runtime.sequence).
MAX_WAIT_DELAY_SECONDS = 2.0
# How long a loop with parked events waits for new ones before it retries the parked ones.
PARKED_RETRY_SECONDS = 0.05
# How long an event may stay parked here before it is handed back to JetStream (nak).
MAX_PARKED_SECONDS = 60.0
# Crash counts kept per message (by stream sequence); the oldest are forgotten beyond this.
_CRASH_MEMORY = 100_000


def waiting_delay(base: float | None, deliveries: int) -> float:
    """Return the nak delay of an event waiting for an earlier one: ``base``, growing while it keeps waiting.

    Waiting is not failing, but an event that waited several times is likely behind one that a killed
    worker holds until ``ack_wait``: asking again every ``base`` seconds would only add redeliveries.
    """
    first = base if base is not None else 0.2
    return float(min(MAX_WAIT_DELAY_SECONDS, first * 1.6 ** max(0, deliveries - 1)))


def backoff_seconds(attempt: int, base: float = 0.5, cap: float = MAX_RETRY_DELAY_SECONDS) -> float:
    """Return the nak delay before delivery ``attempt + 1``: exponential, capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


@dataclass
class WorkerStats:
    """Counters a worker exposes on its health endpoint."""

    batches: int = 0
    processed: int = 0
    emitted: int = 0
    dead_lettered: int = 0
    retried: int = 0
    waited: int = 0
    crashes: int = 0
    last_batch_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)


@dataclass
class _Item:
    msg: Msg
    delivery: Delivery[Any]
    parked_at: float | None = None  # time.monotonic() when it first had to wait


class Worker:
    """Run one ``Function`` against its durable pull consumer."""

    def __init__(
        self,
        function: Function[Any],
        js: JetStreamContext,
        settings: Settings,
        *,
        batch_size: int | None = None,
        concurrency: int | None = None,
        fetch_timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.function = function
        self.settings = settings
        self.stats = WorkerStats()
        self._js = js
        self._publisher = Publisher(js)
        self._batch_size = batch_size or settings.batch_size
        limit = function.consumer.max_concurrency
        wanted = concurrency or settings.worker_concurrency
        self._concurrency = min(wanted, limit) if limit else wanted
        self._fetch_timeout = fetch_timeout
        self._clock = clock
        self._stopping = asyncio.Event()
        self._ready = False
        self._loops: list[tuple[asyncio.Task[None], PullFetcher]] = []
        # stream sequence -> crashes of the handler on that message, in this process.
        self._crashes: OrderedDict[int, int] = OrderedDict()
        # Events waiting for an earlier one of their symbol, kept in progress (see _settle).
        self._parked: list[_Item] = []
        # A function whose parse reads data only through parse_data says so: the JSON is then
        # validated straight from the message's bytes (screener.runtime.function.RawJsonParser).
        self._decode_json = not getattr(function, "parses_json_bytes", False)

    @property
    def name(self) -> str:
        """Return the function's name (its consumer's function field)."""
        return self.function.consumer.function

    def stop(self) -> None:
        """Ask the worker to drain: finish the batches in hand, fetch no more."""
        self._stopping.set()
        for task, fetcher in self._loops:
            if fetcher.idle:
                task.cancel()  # nothing in hand: do not wait out the fetch timeout (see _loop)

    @property
    def ready(self) -> bool:
        """Return whether the worker is bound to its consumer and fetching."""
        return self._ready and not self._stopping.is_set()

    # The worker as a ``screener.health.HealthSource``.

    def alive(self) -> tuple[bool, str]:
        """Return True: a worker that cannot work exits, and an idle one is fine."""
        return True, "serving"

    def counters(self) -> dict[str, Any]:
        """Return the worker's counters."""
        return dict(self.stats.__dict__)

    async def run(self) -> None:
        """Process batches until ``stop`` is called; then drain and close the function."""
        spec = self.function.consumer
        await ensure_streams(self._js, self.settings)
        await ensure_consumer(self._js, spec, self.settings)
        bind = getattr(self.function, "bind_jetstream", None)
        if bind is not None:
            bind(self._js)  # functions that read the streams themselves (screener.runtime.sequence)
        await self.function.start()
        # One fetcher per loop: each waits for its own requests' replies (screener.runtime.pull).
        client = nats_client_of(self._js)
        fetchers = [PullFetcher(client, spec.stream.name, spec.durable) for _ in range(self._concurrency)]
        try:
            for fetcher in fetchers:
                await fetcher.start()
            self._ready = True
            log.info("%s: consuming %s/%s", self.name, spec.stream.name, spec.durable)
            self._loops = [(asyncio.create_task(self._loop(fetcher)), fetcher) for fetcher in fetchers]
            heartbeat = asyncio.create_task(self._keep_parked_in_progress())
            try:
                await asyncio.gather(*(task for task, _ in self._loops))
            finally:
                heartbeat.cancel()
                for task, _ in self._loops:
                    task.cancel()
                self._loops = []
        finally:
            for fetcher in fetchers:
                await fetcher.close()
            self._ready = False
            await self.function.close()
            log.info("%s: drained and stopped", self.name)

    async def _loop(self, fetcher: PullFetcher) -> None:
        while not self._stopping.is_set():
            parked = self._unpark()
            try:
                # With events parked, look for new ones only briefly: the parked ones are retried as
                # soon as the fetch returns (their predecessors may be done by now, here or elsewhere).
                wait = PARKED_RETRY_SECONDS if parked else self._fetch_timeout
                messages = await fetcher.fetch(max(1, self._batch_size - len(parked)), wait)
            except asyncio.CancelledError:
                if not self._stopping.is_set():
                    raise
                # stop() cancelled a fetch still waiting for its first message: the loop is done.
                # (Anything delivered to it after all is unacknowledged, so JetStream redelivers it.)
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                await self._release_parked(parked)
                return
            except ConsumerError as exc:
                self._park(parked)
                log.warning("%s: %s; retrying in %.0f s", self.name, exc, _REFUSED_RETRY_SECONDS)
                await asyncio.sleep(_REFUSED_RETRY_SECONDS)
                continue
            if messages or parked:
                await self.process(messages, parked)
        await self._release_parked(self._unpark())

    async def process(self, messages: Sequence[Msg], parked: Sequence[_Item] = ()) -> None:
        """Run one fetched batch (and the events parked earlier) through parse, handle, publish and ack."""
        self.stats.batches += 1
        self.stats.last_batch_at = self._clock()
        # Plain loops, not gather: a task per message would cost more than parsing or acking it.
        items = list(parked)
        for msg in messages:
            item = await self._parse(msg)
            if item is not None:
                items.append(item)
        if not items:
            return
        if parked:
            items.sort(key=lambda i: i.msg.metadata.sequence.stream)  # stream order, as first delivered
        with tracer().start_as_current_span(f"{self.name}.batch") as span:
            span.set_attribute("batch.size", len(items))
            try:
                async with self._kept_in_progress(items):
                    waiting, delay = await self._handle_and_publish(items)
            except TransientError as exc:
                self.stats.retried += len(items)
                log.warning("%s: transient failure, retrying %d events: %s", self.name, len(items), exc)
                for item in items:
                    await self._nak(item.msg, exc.delay_seconds)
                return
            except Exception:
                self.stats.crashes += 1
                log.exception("%s: handler crashed on a batch of %d; isolating", self.name, len(items))
                await self._isolate(items)
                return
        await self._settle(items, waiting, delay)

    async def _settle(self, items: Sequence[_Item], waiting: frozenset[int], delay: float | None) -> None:
        """Acknowledge the done items; park the waiting ones (a nak would scramble their order).

        A waiting event is kept here, in progress, and handed to the handler again with the next
        fetch, in stream order, until its predecessor is done. One parked for longer than
        ``MAX_PARKED_SECONDS`` is let go (nak) for any worker to take.
        """
        now = time.monotonic()
        for index, item in enumerate(items):
            if index not in waiting:
                await item.msg.ack()
                item.parked_at = None
            elif item.parked_at is not None and now - item.parked_at > MAX_PARKED_SECONDS:
                item.parked_at = None
                await self._nak(item.msg, waiting_delay(delay, item.msg.metadata.num_delivered))
            else:
                if item.parked_at is None:
                    item.parked_at = now
                self._parked.append(item)
        self.stats.waited += len(waiting)
        self.stats.processed += len(items) - len(waiting)

    def _park(self, items: Sequence[_Item]) -> None:
        self._parked.extend(items)

    def _unpark(self) -> list[_Item]:
        """Take every parked event (this loop now owns them)."""
        parked, self._parked = self._parked, []
        return parked

    async def _release_parked(self, items: Sequence[_Item]) -> None:
        """Hand parked events back to JetStream at once (stopping: another worker takes them)."""
        for item in items:
            with contextlib.suppress(Exception):
                await item.msg.nak()

    async def _keep_parked_in_progress(self) -> None:
        """Tell JetStream every third of ``ack_wait`` that parked events are still being worked on."""
        while True:
            await asyncio.sleep(self.settings.ack_wait_seconds / 3)
            for item in list(self._parked):
                with contextlib.suppress(Exception):  # best effort: the ack decides
                    await item.msg.in_progress()

    async def _handle_and_publish(self, items: Sequence[_Item]) -> tuple[frozenset[int], float | None]:
        """Run the handler, publish its outputs; return the indices of the items that must wait, and for how long."""
        # One span per input event continues the trace that event carries (the candle's, end to end);
        # the function passes the span's traceparent on to what it emits.
        spans = []
        deliveries = []
        for item in items:
            span, traceparent = start_event_span(item.delivery.event, f"{self.name}.handle")
            spans.append(span)
            deliveries.append(
                Delivery(item.delivery.event, item.delivery.payload, traceparent, item.msg.metadata.sequence.stream)
            )
        waiting: frozenset[int] = frozenset()
        delay: float | None = None
        try:
            try:
                outputs = await self.function.handle(deliveries)
            except PartialBatch as partial:
                outputs, waiting, delay = partial.outputs, partial.waiting, partial.delay_seconds
            if outputs:
                try:
                    await self._publisher.publish(list(outputs))
                except PublishError as exc:
                    # JetStream away or restarting: not the event's fault, so no crash is counted
                    # (five would dead-letter a valid event); the batch comes back after a backoff.
                    raise TransientError(f"{self.name}: outputs not stored: {exc}", PUBLISH_RETRY_SECONDS) from exc
                self.stats.emitted += len(outputs)
            published = getattr(self.function, "published", None)
            if published is not None:
                await published([d for i, d in enumerate(deliveries) if i not in waiting])
        finally:
            for span in spans:
                span.end()
        return waiting, delay

    async def _isolate(self, items: Sequence[_Item]) -> None:
        """Retry a crashed batch one event at a time; dead-letter the events that crash too often."""
        for item in items:
            try:
                waiting, delay = await self._handle_and_publish([item])
            except TransientError as exc:
                await self._nak(item.msg, exc.delay_seconds)
                continue
            except Exception as exc:
                crashes = self._count_crash(item.msg)
                if crashes >= self.settings.max_crashes:
                    await self._dead_letter(item.msg, f"handler crashed {crashes} times: {exc!r}", item.delivery.event)
                else:
                    event_id = item.delivery.event.get_id()
                    limit = self.settings.max_crashes
                    log.warning("%s: event %s crashed (%d of %d): %r", self.name, event_id, crashes, limit, exc)
                    await self._nak(item.msg, backoff_seconds(crashes))
                continue
            await self._settle([item], waiting, delay)

    def _count_crash(self, msg: Msg) -> int:
        sequence = msg.metadata.sequence.stream
        crashes = self._crashes.pop(sequence, 0) + 1
        self._crashes[sequence] = crashes
        while len(self._crashes) > _CRASH_MEMORY:
            self._crashes.popitem(last=False)
        return crashes

    @contextlib.asynccontextmanager
    async def _kept_in_progress(self, items: Sequence[_Item]) -> AsyncIterator[None]:
        """Tell JetStream the batch is being worked on every third of ``ack_wait`` while it is.

        Without it a batch slower than ``ack_wait`` (a warm start, a slow database) is redelivered
        to another worker while this one still works on it.
        """
        interval = self.settings.ack_wait_seconds / 3

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                for item in items:
                    with contextlib.suppress(Exception):  # best effort: the ack decides
                        await item.msg.in_progress()

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _parse(self, msg: Msg) -> _Item | None:
        event: BaseCloudEvent | None = None
        try:
            event = nats_binding.from_message(msg.headers, msg.data, decode_json=self._decode_json)
            payload = self.function.parse(event)
        except InvalidEvent as exc:
            await self._dead_letter(msg, exc.reason, event)
            return None
        return _Item(msg, Delivery(event, payload))

    async def _dead_letter(self, msg: Msg, reason: str, event: BaseCloudEvent | None) -> None:
        sequence = msg.metadata.sequence.stream
        event_id = event.get_id() if event is not None else None
        log.warning("%s: dead-lettering %s (seq %d) on %s: %s", self.name, event_id, sequence, msg.subject, reason)
        # Keyed by the message's place in its stream, not its event id: two distinct bad events may
        # share an id (or have none), and each must leave its own dead letter.
        await self._publisher.dead_letter(
            self.name,
            reason,
            payload=msg.data,
            headers=msg.headers,
            original_subject=msg.subject,
            message_id=f"{msg.metadata.stream}:{sequence}",
        )
        await msg.ack()
        self.stats.dead_lettered += 1

    async def _nak(self, msg: Msg, delay: float | None) -> None:
        attempts = msg.metadata.num_delivered
        wanted = delay if delay is not None else backoff_seconds(attempts)
        await msg.nak(delay=min(wanted, MAX_RETRY_DELAY_SECONDS))
