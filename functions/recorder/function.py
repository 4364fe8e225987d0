"""The recorder: a function of its own that stores every closed candle in ``candles_1m``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
from cloudevents.core.base import BaseCloudEvent

from functions.recorder.store import insert_candles
from screener.config import Settings
from screener.connections import create_pg_pool
from screener.db.partitions import PartitionCache
from screener.events.envelope import InvalidEvent, expect_type, parse_data
from screener.events.models import Candle
from screener.names import CONSUMER_RECORDER, TYPE_CANDLE_CLOSED
from screener.runtime.function import Delivery, TransientError

log = logging.getLogger(__name__)


class Recorder:
    """Write closed candles into ``candles_1m``, one COPY per batch, idempotently."""

    consumer = CONSUMER_RECORDER

    def __init__(self, settings: Settings, pool: asyncpg.Pool | None = None) -> None:
        self._settings = settings
        self._pool = pool
        self._own_pool = pool is None
        self._partitions = PartitionCache()
        self.recorded = 0

    async def start(self) -> None:
        """Open the PostgreSQL pool (unless one was given)."""
        if self._pool is None:
            self._pool = await create_pg_pool(self._settings)

    async def close(self) -> None:
        """Close the pool this recorder opened."""
        if self._pool is not None and self._own_pool:
            await self._pool.close()
            self._pool = None

    def parse(self, event: BaseCloudEvent) -> Candle:
        """Return the closed candle of ``event``; raise ``InvalidEvent`` for anything else."""
        expect_type(event, TYPE_CANDLE_CLOSED)
        candle = parse_data(event, Candle)
        if not candle.closed:
            raise InvalidEvent(f"candle {candle.symbol}@{candle.open_time} is not closed", event.get_id())
        reason = candle.validation_error()
        if reason is not None:
            raise InvalidEvent(f"invalid candle {candle.symbol}@{candle.open_time}: {reason}", event.get_id())
        return candle

    async def handle(self, batch: Sequence[Delivery[Candle]]) -> Sequence[BaseCloudEvent]:
        """Store the batch's candles; emit nothing."""
        if self._pool is None:
            raise RuntimeError("Recorder.handle called before start()")
        try:
            async with self._pool.acquire() as conn:
                self.recorded += await insert_candles(conn, [d.payload for d in batch], self._partitions)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            raise TransientError(f"recorder: PostgreSQL unavailable: {exc}", delay_seconds=2.0) from exc
        return ()


def create(settings: Settings) -> Recorder:
    """Return the recorder function for ``screener run recorder``."""
    return Recorder(settings)
