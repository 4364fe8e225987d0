"""Parse the plain decimal numbers of a comma-separated table with numpy, eight bytes of text at a time.

Kline files are rows of unsigned decimals (``1769904000000,0.1038,...,242160.4``). Parsing them
number by number (numpy's ``loadtxt``, ~200 ns a number) is most of what reading a recording costs;
here every field of the wanted columns is read as two 64-bit words of its text and turned into an
integer with a few whole-array operations (the SWAR digit conversion: pairs of digits, then fours,
then eights, by multiplication), so a number costs a few tens of nanoseconds.

The value is exact: a field of at most 16 characters holds at most 16 digits, so its digits are an
integer ``m`` below 2**53 (checked) and ``m / 10**k`` (``k`` digits after the point) is one correctly
rounded division of two exact doubles, the double nearest the decimal, which is what ``loadtxt``
gives. Anything else (a sign, an exponent, a longer field, quotes, blank or ragged rows, ``\\r``)
is not this form: ``parse_columns`` returns None and the caller parses the text the general way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Words = npt.NDArray[np.uint64]

# A field is read as the 16 bytes of text ending with it (``_PAD`` bytes before the text make room).
FIELD_BYTES = 16
_PAD = FIELD_BYTES
# Fields converted per step: their temporaries stay in the processor's cache.
_CHUNK = 1 << 15
# Text parsed per piece (whole rows): bounds the copies and indices a file needs at once.
_PIECE_BYTES = 4 << 20

_U = np.uint64
_ALL = _U(0xFFFF_FFFF_FFFF_FFFF)
_ZEROS = _U(0x3030_3030_3030_3030)  # b"00000000"
_DOTS = _U(0x2E2E_2E2E_2E2E_2E2E)  # b"........"
_ONES = _U(0x0101_0101_0101_0101)
_HIGH = _U(0x8080_8080_8080_8080)
_ABOVE_NINE = _U(0x4646_4646_4646_4646)  # + this sets a byte's high bit when it is above b"9"
_DOT_TO_ZERO = _U(ord(".") ^ ord("0"))
# Multiplied by a word with 0x01 at byte j, the top byte is that of these at 7 - j: the digits after
# a point at byte j of the last eight bytes (7 - j), or of the eight before them (15 - j).
_AFTER_LAST = _U(0x0706_0504_0302_0100)
_AFTER_FIRST = _U(0x0F0E_0D0C_0B0A_0908)
_EXACT = 1 << 53  # integers below this are exact doubles
# By a field's length (1 to 16): which bytes of each word are the field's, b"0" in the others.
_KEEP_LAST = np.array([_ALL << _U(8 * (8 - min(n, 8))) for n in range(FIELD_BYTES + 1)], dtype=np.uint64)
_KEEP_FIRST = np.array([(_ALL << _U(8 * (16 - n))) if n > 8 else 0 for n in range(FIELD_BYTES + 1)], dtype=np.uint64)
_FILL_LAST = _ZEROS & ~_KEEP_LAST
_FILL_FIRST = _ZEROS & ~_KEEP_FIRST
_POWERS = 10 ** np.arange(FIELD_BYTES, dtype=np.uint64)
_FLOAT_POWERS = 10.0 ** np.arange(FIELD_BYTES)  # exact doubles (up to 10**22)


def parse_columns(text: bytes | memoryview, width: int, columns: Sequence[int]) -> FloatArray | None:
    """Return ``columns`` of a table of ``width`` numbers a row as (len(columns), rows), or None.

    ``text`` is the rows without a header, each ending with a newline (the last one may not). None
    when the text is not rows of exactly ``width`` comma-separated fields whose wanted columns are
    all unsigned decimals of 1 to 16 characters (digits, at most one point, at most 2**53 - 1 without
    their point): then it is for a general parser, which says what is wrong.
    """
    data = np.frombuffer(text, dtype=np.uint8)
    # In pieces of whole rows: a year's file is not copied and indexed whole at once.
    pieces = []
    start = 0
    while start < len(data):
        stop = len(data) if len(data) - start <= _PIECE_BYTES else _after_newline(data, start + _PIECE_BYTES)
        piece = _parse_rows(data[start:stop], width, columns)
        if piece is None:
            return None
        pieces.append(piece)
        start = stop
    if len(pieces) == 1:
        return pieces[0]
    return np.concatenate(pieces, axis=1) if pieces else np.empty((len(columns), 0))


def _after_newline(data: npt.NDArray[np.uint8], at: int) -> int:
    """Return the index after the first newline at or after ``at`` (the end when there is none)."""
    window = 1 << 16
    while at < len(data):
        found = np.flatnonzero(data[at : at + window] == ord("\n"))
        if len(found):
            return at + int(found[0]) + 1
        at += window
    return len(data)


def _parse_rows(data: npt.NDArray[np.uint8], width: int, columns: Sequence[int]) -> FloatArray | None:
    """Return ``parse_columns`` of whole rows of text (``data``), or None."""
    # The text after _PAD bytes, in whole 64-bit words, with two spare words: every field's 16
    # bytes lie in three consecutive words. A last row without its newline is given one.
    size = _PAD + len(data)
    buffer = np.full(-(-(size + 1) // 8) * 8 + 16, ord("0"), dtype=np.uint8)
    buffer[_PAD:size] = data
    if not len(data) or data[-1] != ord("\n"):
        buffer[size] = ord("\n")
        size += 1
    # Every byte below b"-" ends a field: each row must have width - 1 commas, then its newline.
    ends = np.flatnonzero(buffer[_PAD:size] < ord("-"))
    if len(ends) % width:
        return None
    rows = len(ends) // width
    ends += _PAD
    grid = ends.reshape(rows, width)
    separators = np.full(width, ord(","), dtype=np.uint8)
    separators[-1] = ord("\n")
    if not bool((buffer[grid] == separators).all()):
        return None
    words = buffer.view(np.uint64)
    out = np.empty((len(columns), rows))
    for k, column in enumerate(columns):
        end = grid[:, column]
        if column:
            start = grid[:, column - 1] + 1
        else:
            start = np.empty_like(end)
            start[0] = _PAD
            start[1:] = grid[:-1, -1] + 1
        length = end - start
        if not bool(((length >= 1) & (length <= FIELD_BYTES)).all()):
            return None
        for at in range(0, rows, _CHUNK):
            part = slice(at, at + _CHUNK)
            values = _convert(words, end[part], length[part])
            if values is None:
                return None
            out[k, part] = values
    return out


def _convert(words: Words, end: npt.NDArray[np.int64], length: npt.NDArray[np.int64]) -> FloatArray | None:
    """Return the numbers of the fields of ``length`` bytes ending before ``end``, or None if one is not plain."""
    # The 16 bytes before each end, as two little-endian words: ``first`` then ``last`` (the field's
    # last byte is the top byte of ``last``). Fields of at most 8 bytes (most prices and volumes)
    # lie in ``last`` alone: ``first`` is then left out (all b"0").
    start = end - FIELD_BYTES
    word = start >> 3
    shift = ((start & 7) << 3).astype(np.uint64)
    back = _U(64) - shift  # 64 when aligned: shifting by 64 gives 0
    w1, w2 = words[word + 1], words[word + 2]
    # Bytes before the field become b"0" (leading zeros).
    last = (((w1 >> shift) | (w2 << back)) & _KEEP_LAST[length]) | _FILL_LAST[length]
    # The point: 0x01 at its byte (the zero byte of ``x ^ b"."``; exact, as no byte of it is 0x01).
    point_last = _zero_bytes(last ^ _DOTS)
    last ^= point_last * _DOT_TO_ZERO
    not_digit = (last + _ABOVE_NINE) | (last - _ZEROS)
    short = int(length.max()) <= 8
    if short:
        points = (point_last * _ONES) >> _U(56)
    else:
        first = (((words[word] >> shift) | (w1 << back)) & _KEEP_FIRST[length]) | _FILL_FIRST[length]
        point_first = _zero_bytes(first ^ _DOTS)
        first ^= point_first * _DOT_TO_ZERO
        not_digit |= (first + _ABOVE_NINE) | (first - _ZEROS)
        points = ((point_last + point_first) * _ONES) >> _U(56)
    if bool((not_digit & _HIGH).any()) or bool((points > _U(1)).any()) or bool((points >= length).any()):
        return None  # a byte that is neither a digit nor the one point, or a point alone
    digits = _eight_digits(last)
    if not short:
        digits += _eight_digits(first) * _U(100_000_000)
    if points.any():
        # The point was read as a 0 digit: drop it. With ``after`` digits after it, digits = a * 10**(after + 1) + b.
        after = (point_last * _AFTER_LAST) >> _U(56)
        if not short:
            after += (point_first * _AFTER_FIRST) >> _U(56)
        low, high = int(after.min()), int(after.max())
        if low == high and bool(points.all()):  # a column's usual case: one number of decimals
            digits = (digits + _U(9) * (digits % _POWERS[low])) // _U(10)
        else:
            below = digits % _POWERS[after]
            digits = np.where(points != 0, (digits + _U(9) * below) // _U(10), digits)  # a * 10**after + b
    else:
        after = np.zeros(len(digits), dtype=np.uint64)
    if not short and bool((digits >= _U(_EXACT)).any()):
        return None
    values: FloatArray = digits.astype(np.float64)
    values /= _FLOAT_POWERS[after]
    return values


def _zero_bytes(x: Words) -> Words:
    """Return 0x01 at each zero byte of ``x`` (exact up to the lowest one; above it too where no byte is 0x01)."""
    found: Words = (((x - _ONES) & ~x) & _HIGH) >> _U(7)
    return found


def _eight_digits(chars: Words) -> Words:
    """Return the number written by eight ASCII digits (the first in the low byte): pairs, fours, then all eight."""
    chars = ((chars & _U(0x0F0F_0F0F_0F0F_0F0F)) * _U(2561)) >> _U(8)
    chars = ((chars & _U(0x00FF_00FF_00FF_00FF)) * _U(6553601)) >> _U(16)
    number: Words = ((chars & _U(0x0000_FFFF_0000_FFFF)) * _U(42949672960001)) >> _U(32)
    return number
