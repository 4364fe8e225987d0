"""RSI and MACD carried along a whole series of bars, from its first bar: TA-Lib's values over all of it.

TA-Lib seeds RSI and MACD on the first bars of the series it is given and then recurses over the
rest. Run over everything a symbol ever had, the seed is the symbol's first bar and never moves, so
the values are those of ``talib.RSI``/``talib.MACD`` over the whole history (metrics.md). The
recursion state after each closed bar (``CarriedState``) is what the next bar needs; the value at a
minute is one step from the state after the last closed bar with the forming bar's close.

The state has two phases. While the series is short (fewer than ``STEADY_BARS`` bars), it holds
TA-Lib's seed sums, advanced bar by bar in Python floats with TA-Lib's operations in TA-Lib's order
(``advance_one``). From then on every quantity is a first-order linear recursion, run over whole
rows of bars at once by ``scipy.signal.lfilter`` (``advance_steady``): the same formulas, rounded in
a different order, so the values agree with the bar-by-bar loop to about 1e-15 relative (tests
compare both with TA-Lib to 1e-9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from functions.calculator import indicators
from functions.calculator.indicators import MACD_FAST, MACD_SIGNAL, MACD_SLOW, RSI_PERIOD

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Bars before the first RSI value (14), the first MACD value (33, when the signal is seeded).
RSI_FIRST = RSI_PERIOD
MACD_FIRST = MACD_SLOW - 1 + MACD_SIGNAL - 1
# From this many closed bars on, the state is a plain recursion (every seed is in the past).
STEADY_BARS = MACD_FIRST + 1
K_SLOW, K_FAST, K_SIGNAL = 2.0 / (MACD_SLOW + 1), 2.0 / (MACD_FAST + 1), 2.0 / (MACD_SIGNAL + 1)

# The columns of a state row, in order.
FIELDS = ("bars", "close", "gain", "loss", "slow", "fast", "signal")
BARS, CLOSE, GAIN, LOSS, SLOW, FAST, SIGNAL = range(len(FIELDS))


@dataclass
class CarriedState:
    """The recursion state of many series after their last closed bar: ``values`` is (FIELDS, rows).

    ``bars`` counts the closed bars so far; ``close`` is the last one's close. While ``bars`` is at
    most RSI_PERIOD, ``gain``/``loss`` are the running sums of the ups and downs so far, after that
    Wilder's averages; below MACD_SLOW bars ``slow``/``fast`` are running sums of closes (``fast``
    from bar MACD_SLOW - MACD_FAST on), then the EMAs; ``signal`` sums the MACD values until the
    signal is seeded (bar MACD_FIRST), then is its EMA. All zeros: a series with no bar yet.
    """

    values: FloatArray

    @staticmethod
    def empty(rows: int) -> CarriedState:
        """Return the state of ``rows`` series without any bar."""
        return CarriedState(np.zeros((len(FIELDS), rows)))


def advance_one(state: list[float], close: float) -> None:
    """Advance one state row (Python floats, in place) by one closed bar: TA-Lib's operations and order."""
    n = int(state[BARS])
    if n > 0:
        change = close - state[CLOSE]
        up, down = max(change, 0.0), -min(change, 0.0)
        if n < RSI_PERIOD:  # changes 1 .. 13: the seed's running sums
            state[GAIN] += up
            state[LOSS] += down
        elif n == RSI_PERIOD:  # the 14th change completes the seed
            state[GAIN] = (state[GAIN] + up) / RSI_PERIOD
            state[LOSS] = (state[LOSS] + down) / RSI_PERIOD
        else:
            state[GAIN] = (state[GAIN] * (RSI_PERIOD - 1) + up) / RSI_PERIOD
            state[LOSS] = (state[LOSS] * (RSI_PERIOD - 1) + down) / RSI_PERIOD
    if n < MACD_SLOW - 1:
        state[SLOW] += close
        if n >= MACD_SLOW - MACD_FAST:
            state[FAST] += close
    elif n == MACD_SLOW - 1:  # the 26th close seeds both EMAs with their SMAs
        state[SLOW] = (state[SLOW] + close) / MACD_SLOW
        state[FAST] = (state[FAST] + close) / MACD_FAST
    else:
        state[SLOW] = (close - state[SLOW]) * K_SLOW + state[SLOW]
        state[FAST] = (close - state[FAST]) * K_FAST + state[FAST]
    if MACD_SLOW - 1 <= n < MACD_FIRST:
        state[SIGNAL] += state[FAST] - state[SLOW]
    elif n == MACD_FIRST:
        state[SIGNAL] = (state[SIGNAL] + (state[FAST] - state[SLOW])) / MACD_SIGNAL
    elif n > MACD_FIRST:
        line = state[FAST] - state[SLOW]
        state[SIGNAL] = (line - state[SIGNAL]) * K_SIGNAL + state[SIGNAL]
    state[CLOSE] = close
    state[BARS] = n + 1


# The steady recursions as ``lfilter`` runs them: y = gain * input + keep * y_before.
RSI_GAIN, RSI_KEEP = 1.0 / RSI_PERIOD, (RSI_PERIOD - 1) / RSI_PERIOD
SLOW_KEEP, FAST_KEEP, SIGNAL_KEEP = 1.0 - K_SLOW, 1.0 - K_FAST, 1.0 - K_SIGNAL


def advance_bar(state: list[float], close: float) -> None:
    """Advance one state row (Python floats, in place) by one closed bar, bit for bit as ``advance`` does.

    The seeds go through ``advance_one``; a steady row takes one step of the ``lfilter`` form
    (``advance_steady``), whose rounding this repeats exactly. The state kept with the rings
    (``state/write_candles.lua`` and its mirror ``state.candles.apply_candles``) advances by this
    step, so the stream's state after a bar is the backtest's (tests compare the bytes).
    """
    if state[BARS] < STEADY_BARS:
        advance_one(state, close)
        return
    change = close - state[CLOSE]
    up = max(change, 0.0)
    down = -min(change, 0.0)
    state[GAIN] = RSI_GAIN * up + RSI_KEEP * state[GAIN]
    state[LOSS] = RSI_GAIN * down + RSI_KEEP * state[LOSS]
    state[SLOW] = K_SLOW * close + SLOW_KEEP * state[SLOW]
    state[FAST] = K_FAST * close + FAST_KEEP * state[FAST]
    state[SIGNAL] = K_SIGNAL * (state[FAST] - state[SLOW]) + SIGNAL_KEEP * state[SIGNAL]
    state[CLOSE] = close
    state[BARS] += 1


def advance(state: CarriedState, closes: FloatArray, lengths: IntArray) -> FloatArray:
    """Return the state after each bar of left-aligned rows: (FIELDS, rows, width + 1), column 0 the given state.

    Row r advances by ``closes[r, :lengths[r]]``; columns past its length repeat its last state.
    Rows run as whole rows through ``lfilter`` once steady; a young row first goes bar by bar in
    Python through its seeds (at most STEADY_BARS bars in its life).
    """
    rows, width = closes.shape
    out = np.empty((len(FIELDS), rows, width + 1))
    out[:, :, 0] = state.values
    if width == 0:
        return out
    steady = state.values[BARS] >= STEADY_BARS
    if steady.all():
        advance_steady(state.values, closes, out=out[:, :, 1:])
    else:
        if steady.any():  # the steady rows together, as when all are
            at = np.flatnonzero(steady)
            out[:, at, 1:] = advance_steady(state.values[:, at], closes[at])
        _advance_young(out, closes, lengths, np.flatnonzero(~steady))
    # Past each row's bars: its last state.
    after = np.arange(width + 1)[None, :] > lengths[:, None]
    if after.any():
        last = out[:, np.arange(rows), lengths]
        np.copyto(out, last[:, :, None], where=after[None])
    return out


def _advance_young(out: FloatArray, closes: FloatArray, lengths: IntArray, young: IntArray) -> None:
    """Fill the states of the ``young`` rows: through their seeds bar by bar, then steady.

    The seeds are ``advance_one`` itself, row by row in Python floats: a row seeds at most
    STEADY_BARS bars in its life and a block holds few rows, so numpy's cost per call (what
    ``advance_many`` pays for every bar) would be most of it. A row whose seeds are done runs its
    remaining bars through ``advance_steady``, together with the rows that finished seeding at the same bar.
    """
    state = out[:, young, 0].copy()
    length = lengths[young]
    done = np.zeros(len(young), dtype=np.int64)
    for k, row in enumerate(young.tolist()):
        values = state[:, k].tolist()
        count = min(int(length[k]), max(STEADY_BARS - int(values[BARS]), 0))
        if count <= 0:
            continue
        steps = []
        for close in closes[row, :count].tolist():
            advance_one(values, close)
            steps.append(list(values))
        out[:, row, 1 : count + 1] = np.array(steps).T
        state[:, k] = values
        done[k] = count
    for start in np.unique(done[done < length]).tolist():
        at = np.flatnonzero((done == start) & (done < length))
        rows = young[at]
        count = int(length[at].max()) - start
        # Rows shorter than the longest run past their end; ``advance`` overwrites those columns.
        out[:, rows, start + 1 : start + 1 + count] = advance_steady(state[:, at], closes[rows, start : start + count])


def advance_many(state: FloatArray, close: FloatArray) -> FloatArray:
    """Return ``advance_one`` of each column of ``state`` (FIELDS, rows) by one bar of ``close`` (rows,)."""
    n = state[BARS]
    previous, gain, loss = state[CLOSE], state[GAIN], state[LOSS]
    slow, fast, signal = state[SLOW], state[FAST], state[SIGNAL]
    out = state.copy()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        change = close - previous
        up = np.maximum(change, 0.0)
        down = np.negative(np.minimum(change, 0.0))
        summing, seed, wilder = (n > 0) & (n < RSI_PERIOD), n == RSI_PERIOD, n > RSI_PERIOD
        for field, average, move in ((GAIN, gain, up), (LOSS, loss, down)):
            out[field] = np.where(summing, average + move, average)
            out[field] = np.where(seed, (average + move) / RSI_PERIOD, out[field])
            out[field] = np.where(wilder, (average * (RSI_PERIOD - 1) + move) / RSI_PERIOD, out[field])
        sums, seeded = n < MACD_SLOW - 1, n == MACD_SLOW - 1
        emas = n > MACD_SLOW - 1
        out[SLOW] = np.where(sums, slow + close, slow)
        out[FAST] = np.where(sums & (n >= MACD_SLOW - MACD_FAST), fast + close, fast)
        out[SLOW] = np.where(seeded, (slow + close) / MACD_SLOW, out[SLOW])
        out[FAST] = np.where(seeded, (fast + close) / MACD_FAST, out[FAST])
        out[SLOW] = np.where(emas, (close - slow) * K_SLOW + slow, out[SLOW])
        out[FAST] = np.where(emas, (close - fast) * K_FAST + fast, out[FAST])
        line = out[FAST] - out[SLOW]
        out[SIGNAL] = np.where((n >= MACD_SLOW - 1) & (n < MACD_FIRST), signal + line, signal)
        out[SIGNAL] = np.where(n == MACD_FIRST, (signal + line) / MACD_SIGNAL, out[SIGNAL])
        out[SIGNAL] = np.where(n > MACD_FIRST, (line - signal) * K_SIGNAL + signal, out[SIGNAL])
    out[CLOSE] = close
    out[BARS] = n + 1
    return out


def advance_steady(state: FloatArray, closes: FloatArray, out: FloatArray | None = None) -> FloatArray:
    """Return the states after each of ``closes`` (rows, bars) for steady rows: (FIELDS, rows, bars).

    ``out``, when given, receives them (the caller's array, not a copy of a fresh one).
    """
    rows, width = closes.shape
    if out is None:
        out = np.empty((len(FIELDS), rows, width))
    change = np.empty_like(closes)
    np.subtract(closes[:, :1], state[CLOSE][:, None], out=change[:, :1])
    np.subtract(closes[:, 1:], closes[:, :-1], out=change[:, 1:])
    out[BARS] = state[BARS][:, None] + np.arange(1, width + 1)
    out[CLOSE] = closes
    out[GAIN] = _first_order(np.maximum(change, 0.0), RSI_GAIN, RSI_KEEP, state[GAIN])
    out[LOSS] = _first_order(-np.minimum(change, 0.0), RSI_GAIN, RSI_KEEP, state[LOSS])
    out[SLOW] = _first_order(closes, K_SLOW, SLOW_KEEP, state[SLOW])
    out[FAST] = _first_order(closes, K_FAST, FAST_KEEP, state[FAST])
    out[SIGNAL] = _first_order(out[FAST] - out[SLOW], K_SIGNAL, SIGNAL_KEEP, state[SIGNAL])
    return out


def _first_order(inputs: FloatArray, gain: float, keep: float, initial: FloatArray) -> FloatArray:
    """Return y with y[i] = gain * inputs[i] + keep * y[i - 1] along each row, y[-1] = ``initial``."""
    result, _ = lfilter([gain], [1.0, -keep], inputs, axis=1, zi=(keep * initial)[:, None])
    out: FloatArray = result
    return out


@dataclass(frozen=True)
class FormingValues:
    """RSI and MACD with the forming bar's close, from the state after the last closed bar."""

    rsi: FloatArray
    macd: FloatArray
    signal: FloatArray
    hist: FloatArray


def forming_values(state: FloatArray, close: FloatArray) -> FormingValues:
    """Return the indicators of bars extended by their forming close, at every minute of each bar.

    ``state`` (FIELDS, S, B) is each bar's state before it (after the last closed bar); ``close`` (S,
    B, M) the close at each of its minutes. The forming bar is bar number ``state[BARS]`` (0-based):
    NaN before each indicator's first value, the seed where the forming bar completes it, one step
    of the recursion after that. Results are (S, B, M).
    """
    n = state[BARS]
    previous, gain, loss = (state[i][..., None] for i in (CLOSE, GAIN, LOSS))
    slow, fast, signal = (state[i][..., None] for i in (SLOW, FAST, SIGNAL))
    # Temporaries are reused once read (fewer fresh arrays); the operations and their order are as written.
    up = close - previous
    # The fall, negated: adding the fall is subtracting this (IEEE 754 defines x - y as x + (-y)).
    down = np.minimum(up, 0.0)
    np.maximum(up, 0.0, out=up)
    young = bool((n < STEADY_BARS).any())  # a series' first bars: no value yet, or the seeds (once per series)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rsi_seed = np.nonzero(n == RSI_FIRST) if young else None
        seeded_rsi = (
            indicators.rsi_value(
                (state[GAIN][rsi_seed][:, None] + up[rsi_seed]) / RSI_PERIOD,
                (state[LOSS][rsi_seed][:, None] - down[rsi_seed]) / RSI_PERIOD,
            )
            if rsi_seed is not None and len(rsi_seed[0])
            else None
        )
        # TA-Lib's order: scale the average by period - 1, add the move, divide by the period.
        average_gain = np.add(gain * (RSI_PERIOD - 1), up, out=up)
        average_gain /= RSI_PERIOD
        average_loss = np.subtract(loss * (RSI_PERIOD - 1), down, out=down)
        average_loss /= RSI_PERIOD
        rsi = indicators.rsi_value(average_gain, average_loss)
        # TA-Lib's EMA update ((close - ema) * k) + ema, for the fast and slow EMAs, then the signal's.
        line = close - fast
        line *= K_FAST
        line += fast
        slow_now = np.subtract(close, slow, out=average_gain)
        slow_now *= K_SLOW
        slow_now += slow
        line -= slow_now
        signal_line = line - signal
        signal_line *= K_SIGNAL
        signal_line += signal
        if young:
            if rsi_seed is not None and seeded_rsi is not None:
                rsi[rsi_seed] = seeded_rsi
            seed = np.nonzero(n == MACD_FIRST)
            if len(seed[0]):
                signal_line[seed] = (state[SIGNAL][seed][:, None] + line[seed]) / MACD_SIGNAL
            rsi[n < RSI_FIRST] = np.nan
            line[n < MACD_FIRST] = np.nan
            signal_line[n < MACD_FIRST] = np.nan
    return FormingValues(rsi, line, signal_line, line - signal_line)
