"""The replay's timeline: real series merged by minute, virtual copies, and loops that keep time moving.

The timeline runs from the first minute of any series to the last minute of any series, and each
symbol has a candle at the minutes its file has: a symbol listed (or delisted) during the recording
starts (or stops) there, as it did on the exchange, without cutting the others' minutes; a gap of
hours in one file (a maintenance window) is a gap of that symbol only.

Timeline minute ``t`` of loop ``k`` shows the recorded minute ``t - shift - k * period`` (``period`` is
the recorded span, ``shift`` the time shift of a replay that looks live, 0 for recorded times), so a
looping replay never goes back in time. A virtual symbol ``V0001ALGOUSDT`` is
the recorded ALGOUSDT series shifted by a per-copy number of minutes (wrapping inside the recorded
span), so a thousand virtual symbols move differently but each one is a real market.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from functions.recorder.store import CandleRecord
from marketdata.klines import FloatArray, IntArray, KlineSeries
from screener.events.models import MINUTE_MS, Candle

# Virtual copy i is shifted by (i + 1) * this many minutes: a prime, so copies rarely line up.
VIRTUAL_SHIFT_MINUTES = 997


@dataclass(frozen=True, eq=False)
class Track:
    """One emitted symbol: a recorded series, possibly renamed and shifted in time."""

    name: str
    series: KlineSeries
    shift_minutes: int
    rows: IntArray  # timeline offset (minutes from the market's start) -> row of ``series``, -1 when absent


def virtual_name(index: int, base: str) -> str:
    """Return the name of virtual copy ``index`` (0-based) of ``base``: ``V0001ALGOUSDT`` for index 0."""
    return f"V{index + 1:04d}{base}"


class ReplayMarket:
    """Recorded series on one minute timeline; ``candles_at(t)`` is every symbol's candle of minute ``t``."""

    def __init__(self, series: dict[str, KlineSeries], virtual_symbols: int = 0) -> None:
        """Merge ``series`` over the span from the first minute of any to the last minute of any.

        ``virtual_symbols`` > 0 replaces the real symbols by that many virtual copies (for load tests).
        """
        if not series:
            raise ValueError("a replay needs at least one recorded series")
        self.start_ms = min(s.first_open_time for s in series.values())
        self.last_ms = max(s.last_open_time for s in series.values())
        self.recorded_start_ms = self.start_ms
        self.time_shift_ms = 0
        self.minutes = (self.last_ms - self.start_ms) // MINUTE_MS + 1
        self.period_ms = self.minutes * MINUTE_MS
        dense = {name: self._dense_rows(s) for name, s in series.items()}
        bases = sorted(series)
        if virtual_symbols:
            self.tracks = [
                Track(
                    virtual_name(i, bases[i % len(bases)]),
                    series[bases[i % len(bases)]],
                    ((i + 1) * VIRTUAL_SHIFT_MINUTES) % self.minutes,
                    dense[bases[i % len(bases)]],
                )
                for i in range(virtual_symbols)
            ]
        else:
            self.tracks = [Track(name, series[name], 0, dense[name]) for name in bases]

    def _dense_rows(self, series: KlineSeries) -> IntArray:
        rows = np.full(self.minutes, -1, dtype=np.int64)
        rows[(series.open_time - self.start_ms) // MINUTE_MS] = np.arange(len(series), dtype=np.int64)
        return rows

    def shift_time(self, shift_ms: int) -> None:
        """Move the whole timeline by ``shift_ms`` (whole minutes) from the recorded times.

        Every candle, warm-up row and bar read from the market afterwards carries shifted times, so
        everything derived from them (metrics, alerts and their ids) is a function of the shifted minute.
        """
        if shift_ms % MINUTE_MS:
            raise ValueError(f"a time shift must be whole minutes, got {shift_ms} ms")
        delta = shift_ms - self.time_shift_ms
        self.start_ms += delta
        self.last_ms += delta
        self.time_shift_ms = shift_ms

    @property
    def symbols(self) -> list[str]:
        """Return the emitted symbol names."""
        return [t.name for t in self.tracks]

    def loop_of(self, t: int) -> int:
        """Return which loop timeline minute ``t`` belongs to (0 for the recorded span itself)."""
        return (t - self.start_ms) // self.period_ms

    def _offsets(self, track: Track, times: IntArray) -> IntArray:
        return ((times - self.start_ms) // MINUTE_MS + track.shift_minutes) % self.minutes

    def candles_at(self, t: int) -> list[Candle]:
        """Return the candles of timeline minute ``t`` (open time ``t``) of every symbol that has one."""
        offset = (t - self.start_ms) // MINUTE_MS
        out = []
        for track in self.tracks:
            row = int(track.rows[(offset + track.shift_minutes) % self.minutes])
            if row >= 0:
                shift = t - int(track.series.open_time[row])
                out.append(track.series.candle(row, symbol=track.name, shift_ms=shift))
        return out

    def track_arrays(self, track: Track, first_ms: int, end_ms: int) -> tuple[IntArray, FloatArray]:
        """Return the open times and value rows (``KlineSeries.VALUE_COLUMNS``) of ``track`` in [first, end)."""
        times = np.arange(first_ms, end_ms, MINUTE_MS, dtype=np.int64)
        rows = track.rows[self._offsets(track, times)]
        present = rows >= 0
        return times[present], track.series.values[rows[present]]

    def records_between(self, track: Track, first_ms: int, end_ms: int) -> list[CandleRecord]:
        """Return ``track``'s rows in [first, end) as ``candles_1m`` records (the warm-up's bulk path)."""
        times, values = self.track_arrays(track, first_ms, end_ms)
        derived = track.series.quote_volume_derived
        return [
            (track.name, t, o, h, lo, c, v, q, int(n), tv, tq, derived)
            for t, (o, h, lo, c, v, q, n, tv, tq) in zip(times.tolist(), values.tolist(), strict=True)
        ]

    def candles_between(self, track: Track, first_ms: int, end_ms: int) -> list[Candle]:
        """Return ``track``'s candles with open time in [first, end), renamed and shifted onto the timeline."""
        times = np.arange(first_ms, end_ms, MINUTE_MS, dtype=np.int64)
        rows = track.rows[self._offsets(track, times)]
        return [
            track.series.candle(int(row), symbol=track.name, shift_ms=int(t) - int(track.series.open_time[row]))
            for t, row in zip(times.tolist(), rows.tolist(), strict=True)
            if row >= 0
        ]

    def series_candles(self, name: str, first_ms: int, end_ms: int) -> list[Candle]:
        """Return the candles of the symbol called ``name`` with open time in [first, end) on the timeline."""
        track = next((t for t in self.tracks if t.name == name), None)
        if track is None:
            raise KeyError(f"{name} is not a symbol of this replay")
        return self.candles_between(track, first_ms, end_ms)
