"""Channel formats: Discord embed, Telegram sendMessage, signed JSON."""

from __future__ import annotations

import json
import uuid

from functions.notifier.formats import (
    COLOR_DOWN,
    COLOR_NEUTRAL,
    COLOR_UP,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    build_request,
    direction,
    format_value,
    verify_signature,
)
from functions.notifier.models import Webhook, delivery_id
from tests.functions.notifier.helpers import make_alert

WEBHOOK_ID = uuid.UUID("11111111-2222-3333-4444-555555555555")
NOW = 1_763_726_400.0


def _webhook(kind: str, **extra: str) -> Webhook:
    return Webhook.from_row({"id": WEBHOOK_ID, "user_id": "alice", "kind": kind, "url": "http://x/hook", **extra})


def test_discord_body_is_one_embed_with_metrics_colour_and_timestamp() -> None:
    alert = make_alert()
    request = build_request(_webhook("discord"), alert, NOW, "Surge 60 Bull")
    body = json.loads(request.body)
    (embed,) = body["embeds"]
    assert embed["title"] == "ETHUSDT · Surge 60 Bull"
    assert embed["description"] == "ETHUSDT surged"
    assert embed["color"] == COLOR_UP
    assert embed["timestamp"] == alert.timestamp
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {"Price": "3120.5", "c1h": "+1.90%", "c8h": "+3.20%", "v1h": "812.35K USDT"}
    assert body["allowed_mentions"] == {"parse": []}
    assert request.headers["Content-Type"] == "application/json"


def test_discord_colour_follows_the_rule_side_then_the_price_change() -> None:
    assert direction(make_alert("futures_big_bear_60")) == -1
    assert direction(make_alert("futures_top_hunter")) == -1
    assert direction(make_alert("futures_whale_accumulation")) == 1
    assert direction(make_alert("futures_knife_catcher", metadata={"c5m": -2.0})) == -1
    body = json.loads(build_request(_webhook("discord"), make_alert("custom", metadata={}), NOW).body)
    assert body["embeds"][0]["color"] == COLOR_NEUTRAL
    body = json.loads(build_request(_webhook("discord"), make_alert("futures_big_bear_60"), NOW).body)
    assert body["embeds"][0]["color"] == COLOR_DOWN


def test_telegram_body_is_send_message_with_escaped_html() -> None:
    alert = make_alert(metadata={"c5m": 1.5, "note": "<b>x</b> & y"})
    request = build_request(_webhook("telegram", chat_id="-100123"), alert, NOW)
    body = json.loads(request.body)
    assert body["chat_id"] == "-100123"
    assert body["parse_mode"] == "HTML"
    assert body["text"].splitlines()[0] == "🟢 <b>ETHUSDT · futures_big_bull_60</b>"
    assert "Price: <code>3120.5</code>" in body["text"]
    assert "note: <code>&lt;b&gt;x&lt;/b&gt; &amp; y</code>" in body["text"]


def test_json_body_is_the_public_view_plus_delivery_id_and_is_signed() -> None:
    alert = make_alert()
    request = build_request(_webhook("http", secret="s3cret"), alert, NOW)
    body = json.loads(request.body)
    expected_delivery = delivery_id(WEBHOOK_ID, alert.id)
    assert body == {**alert.public_view(), "delivery_id": expected_delivery}
    assert request.headers[DELIVERY_HEADER] == expected_delivery
    assert request.headers[TIMESTAMP_HEADER] == str(int(NOW))
    signature = request.headers[SIGNATURE_HEADER]
    assert signature.startswith("sha256=")
    assert verify_signature("s3cret", request.body, signature, request.headers[TIMESTAMP_HEADER], now=NOW + 10)


def test_signature_rejects_a_changed_body_a_wrong_key_and_a_replay() -> None:
    request = build_request(_webhook("http", secret="s3cret"), make_alert(), NOW)
    signature, timestamp = request.headers[SIGNATURE_HEADER], request.headers[TIMESTAMP_HEADER]
    assert not verify_signature("s3cret", request.body + b" ", signature, timestamp, now=NOW)
    assert not verify_signature("other", request.body, signature, timestamp, now=NOW)
    assert not verify_signature("s3cret", request.body, signature, timestamp, now=NOW + 301)
    # Moving the timestamp forward to dodge the replay window breaks the signature.
    assert not verify_signature("s3cret", request.body, signature, str(int(NOW) + 300), now=NOW + 301)


def test_json_without_secret_is_sent_unsigned() -> None:
    request = build_request(_webhook("http"), make_alert(), NOW)
    assert SIGNATURE_HEADER not in request.headers
    assert DELIVERY_HEADER in request.headers


def test_non_finite_metrics_become_null_in_json() -> None:
    request = build_request(_webhook("http"), make_alert(metadata={"rsi15m": float("nan")}), NOW)
    assert json.loads(request.body)["metadata"] == {"rsi15m": None}


def test_format_value_reads_like_a_trader_would() -> None:
    assert format_value("c5m", -0.456) == "-0.46%"
    assert format_value("v1d", 2_500_000_000) == "2.50B USDT"
    assert format_value("rsi15m", 71.23456) == "71.23"
    assert format_value("flag", True) == "True"
