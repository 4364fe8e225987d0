"""The per-destination token bucket."""

from __future__ import annotations

import pytest

from functions.notifier.ratelimit import TokenBucket


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_a_burst_then_one_token_per_interval() -> None:
    clock = _Clock()
    bucket = TokenBucket(rate_per_minute=6, burst=2, clock=clock)
    assert bucket.reserve() == 0
    assert bucket.reserve() == 0
    assert bucket.wait_time() == pytest.approx(10.0)
    clock.t += 4
    assert bucket.wait_time() == pytest.approx(6.0)
    clock.t += 6
    assert bucket.reserve() == 0
    assert bucket.wait_time() == pytest.approx(10.0)


def test_reserving_ahead_books_later_tokens() -> None:
    bucket = TokenBucket(rate_per_minute=60, burst=1, clock=_Clock())
    assert bucket.reserve() == 0
    assert bucket.reserve() == pytest.approx(1.0)
    assert bucket.reserve() == pytest.approx(2.0)


def test_idle_time_refills_only_up_to_the_burst() -> None:
    clock = _Clock()
    bucket = TokenBucket(rate_per_minute=60, burst=3, clock=clock)
    clock.t += 3600
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.wait_time() == pytest.approx(1.0)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate_per_minute"):
        TokenBucket(0)
