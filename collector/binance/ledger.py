"""Which closed minutes of each symbol have been emitted (or stored), so none is emitted twice or lost."""

from __future__ import annotations

from collections.abc import Iterable

from screener.events.models import MINUTE_MS


class _SymbolMinutes:
    """Minutes done up to ``frontier`` with no hole, plus the done minutes after it."""

    __slots__ = ("after", "frontier", "in_flight")

    def __init__(self, first_wanted: int) -> None:
        self.frontier = first_wanted - MINUTE_MS
        self.after: set[int] = set()
        self.in_flight: set[int] = set()

    def advance(self) -> None:
        while self.frontier + MINUTE_MS in self.after:
            self.frontier += MINUTE_MS
            self.after.discard(self.frontier)


class MinuteLedger:
    """Track the closed minutes each symbol has had emitted, by open time.

    A minute is *claimed* before it is published (so a stream frame and a REST row of the same minute
    cannot both be published), then either *done* or *released* when publishing failed. The gap
    finder asks for the minutes neither done nor claimed.
    """

    def __init__(self) -> None:
        self._symbols: dict[str, _SymbolMinutes] = {}

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._symbols

    @property
    def symbols(self) -> list[str]:
        """Return the tracked symbols."""
        return list(self._symbols)

    def track(self, symbol: str, first_wanted: int) -> None:
        """Start tracking ``symbol``; minutes before ``first_wanted`` are never asked for."""
        if symbol not in self._symbols:
            self._symbols[symbol] = _SymbolMinutes(first_wanted)

    def forget(self, symbol: str) -> None:
        """Stop tracking ``symbol`` (delisted, or no longer in the top N)."""
        self._symbols.pop(symbol, None)

    def is_done(self, symbol: str, open_time: int) -> bool:
        """Return whether ``symbol``'s minute ``open_time`` was emitted (or is not wanted)."""
        state = self._symbols.get(symbol)
        return state is None or open_time <= state.frontier or open_time in state.after

    def claim(self, symbol: str, open_time: int) -> bool:
        """Reserve a minute for publishing; return False when it is done, claimed or not tracked."""
        state = self._symbols.get(symbol)
        if state is None or open_time <= state.frontier or open_time in state.after or open_time in state.in_flight:
            return False
        state.in_flight.add(open_time)
        return True

    def done(self, symbol: str, open_times: Iterable[int]) -> None:
        """Mark minutes as emitted or stored (claims are settled)."""
        state = self._symbols.get(symbol)
        if state is None:
            return
        for t in open_times:
            state.in_flight.discard(t)
            if t > state.frontier:
                state.after.add(t)
        state.advance()

    def release(self, symbol: str, open_times: Iterable[int]) -> None:
        """Give back claims whose publishing failed, so the gap finder asks for them again."""
        state = self._symbols.get(symbol)
        if state is not None:
            state.in_flight.difference_update(open_times)

    def missing(self, symbol: str, up_to: int) -> list[int]:
        """Return ``symbol``'s minutes up to ``up_to`` (inclusive) that are neither done nor claimed."""
        state = self._symbols.get(symbol)
        if state is None:
            return []
        return [
            t
            for t in range(state.frontier + MINUTE_MS, up_to + 1, MINUTE_MS)
            if t not in state.after and t not in state.in_flight
        ]
