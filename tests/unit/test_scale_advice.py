"""The replica formula and the jsz reading of ``screener scale-advice``, with no server."""

from __future__ import annotations

import pytest

from screener.names import CONSUMERS
from screener.scale_advice import SCALING, ScalingPolicy, desired_replicas, jsz_url, lag_from_jsz

POLICY_MIN_1 = ScalingPolicy(CONSUMERS["calculator"], 1, 8, 500, 0, 5, 300)
POLICY_MIN_0 = ScalingPolicy(CONSUMERS["notifier"], 0, 5, 50, 10, 10, 120)

JSZ = {
    "account_details": [
        {
            "name": "$G",
            "id": "$G",
            "stream_detail": [
                {
                    "name": "CANDLES",
                    "consumer_detail": [
                        {"name": "calculator", "num_pending": 700, "num_ack_pending": 100},
                        {"name": "recorder", "num_pending": 0, "num_ack_pending": 0},
                    ],
                },
                {"name": "ALERTS", "consumer_detail": [{"name": "notifier", "num_pending": 3}]},
            ],
        }
    ]
}


@pytest.mark.parametrize(
    ("lag", "expected"),
    [(0, 1), (1, 1), (500, 1), (501, 2), (1500, 3), (100_000, 8)],
)
def test_desired_replicas_with_minimum_one_is_ceil_of_lag_over_threshold_within_bounds(lag: int, expected: int) -> None:
    assert desired_replicas(lag, POLICY_MIN_1) == expected


@pytest.mark.parametrize(
    ("lag", "expected"),
    [(0, 0), (10, 0), (11, 1), (50, 1), (51, 2), (10_000, 5)],
)
def test_desired_replicas_from_zero_needs_lag_above_activation_threshold(lag: int, expected: int) -> None:
    assert desired_replicas(lag, POLICY_MIN_0) == expected


def test_lag_is_pending_plus_ack_pending_of_the_named_consumer() -> None:
    assert lag_from_jsz(JSZ, "$G", "CANDLES", "calculator") == 800
    assert lag_from_jsz(JSZ, "$G", "CANDLES", "recorder") == 0
    assert lag_from_jsz(JSZ, "$G", "ALERTS", "notifier") == 3


def test_lag_of_an_unknown_consumer_stream_or_account_is_none() -> None:
    assert lag_from_jsz(JSZ, "$G", "CANDLES", "rules") is None
    assert lag_from_jsz(JSZ, "$G", "METRICS", "rules") is None
    assert lag_from_jsz(JSZ, "OTHER", "CANDLES", "calculator") is None
    assert lag_from_jsz({}, "$G", "CANDLES", "calculator") is None


def test_jsz_url_is_the_one_keda_reads() -> None:
    assert jsz_url("http://nats:8222/") == "http://nats:8222/jsz?acc=$G&consumers=true&config=true"


def test_every_consumer_has_a_scaling_policy_on_its_own_spec() -> None:
    assert set(SCALING) == set(CONSUMERS)
    for name, policy in SCALING.items():
        assert policy.consumer is CONSUMERS[name]
        assert 0 <= policy.min_replicas <= policy.max_replicas
        assert policy.lag_threshold > 0
