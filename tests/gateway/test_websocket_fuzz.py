"""Fuzzing WebSocket frames: whatever a client sends, the socket answers with an envelope, never a crash.

The decoder shared with REST (``gateway.validation.decode_json``) and the v2 message handler are fed
arbitrary text, arbitrary JSON and near-miss messages against a running gateway.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.validation import UnsafeJson, decode_json

Client = TestClient[web.Request, web.Application]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
MESSAGES = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "hello", "subscribe", "unsubscribe", "resume", "nope"])},
    optional={
        "symbols": JSON | st.lists(st.sampled_from(["BTCUSDT", "btcusdt", "$$", ""]), max_size=5),
        "rule_types": JSON,
        "alerts": JSON,
        "metrics": JSON,
        "protocol": JSON,
        "id": JSON,
        "last_alert_id": JSON | st.uuids().map(str),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400) | JSON.map(lambda v: json.dumps(v, allow_nan=True)))
def test_the_decoder_returns_safe_json_or_names_the_problem(text: str) -> None:
    problem: UnsafeJson | None = None
    try:
        decoded = decode_json(text, "message")
    except UnsafeJson as exc:
        problem = exc
    if problem is not None:
        assert problem.field and problem.reason
    else:
        json.dumps(decoded, allow_nan=False)  # whatever passed can be echoed back


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(MESSAGES | st.text(max_size=200).map(lambda t: {"raw": t}))
async def test_each_fuzzed_frame_is_answered_with_an_envelope(gw: Client, message: dict[str, Any]) -> None:
    ws = await gw.ws_connect("/ws/alerts?protocol=2")
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    await ws.send_str(message["raw"] if set(message) == {"raw"} else json.dumps(message))
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.TEXT, msg
    assert json.loads(msg.data)["type"] in ("pong", "hello", "subscribed", "resumed", "error", "alert")
    await ws.close()
