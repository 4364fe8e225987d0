"""Helpers for gateway tests: tokens, seeded rows and published events (all against real servers)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import jwt
from nats.aio.client import Client as NATS

from functions.rules.history import AlertHistory
from screener.db.partitions import PartitionCache
from screener.events.envelope import make_event, nats_subject
from screener.events.models import MINUTE_MS, Alert, AlertAudience, alert_id, minute_close_iso
from screener.events.nats_binding import to_binary
from screener.names import EVENT_SOURCE_RULES, TYPE_ALERT_TRIGGERED

SECRET = "test-secret-for-the-gateway-0123456789"
AUDIENCE = "authenticated"
SEED = Path(__file__).resolve().parents[2] / "functions" / "rules" / "seed" / "rules.json"
BASE_MINUTE = 1_770_000_000_000 // MINUTE_MS * MINUTE_MS  # 2026-02-02, inside the recorded data's era


def token(
    sub: str = "user-1",
    *,
    secret: str = SECRET,
    aud: str = AUDIENCE,
    expires_in: float = 3600,
    algorithm: str = "HS256",
    key: Any = None,
    headers: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
) -> str:
    """Return a signed JWT like Supabase issues."""
    payload: dict[str, Any] = {"sub": sub, "aud": aud, "exp": int(time.time() + expires_in), "role": "authenticated"}
    payload.update(claims or {})
    return jwt.encode(payload, key if key is not None else secret, algorithm=algorithm, headers=headers)


def auth(sub: str = "user-1") -> dict[str, str]:
    """Return an Authorization header for ``sub``."""
    return {"Authorization": f"Bearer {token(sub)}"}


async def seed_rules(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Insert the product's rules from the repository's seed file; return them."""
    rules = json.loads(SEED.read_text())
    for r in rules:
        await conn.execute(
            """INSERT INTO alert_rules (rule_type, name, description, category, expression, default_on)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rule_type) DO NOTHING""",
            r["rule_type"],
            r["name"],
            r.get("description", ""),
            r.get("category", "custom"),
            r["expression"],
            r.get("default_on", True),
        )
    return list(rules)


def make_alert(
    symbol: str = "BTCUSDT",
    rule_type: str = "futures_pioneer_bull",
    minute: int = BASE_MINUTE,
    *,
    price: float = 65000.5,
    audience: AlertAudience | None = None,
    metadata: dict[str, Any] | None = None,
) -> Alert:
    """Return an alert as the rules function emits it."""
    return Alert(
        id=alert_id(rule_type, symbol, minute),
        symbol=symbol,
        rule_type=rule_type,
        description=f"{rule_type} on {symbol}",
        timestamp=minute_close_iso(minute),
        price=price,
        metadata=metadata or {"c5m": 1.5, "c15m": 2.0},
        minute=minute,
        audience=audience or AlertAudience(),
    )


async def insert_alerts(conn: asyncpg.Connection, alerts: list[Alert]) -> None:
    """Record alerts in alert_history the way the rules function does."""
    await AlertHistory().save(conn, alerts)


async def insert_candles(
    conn: asyncpg.Connection, symbol: str, start: int, count: int, *, price: float = 100.0, step: float = 0.1
) -> list[dict[str, float]]:
    """Insert ``count`` consecutive 1m candles rising by ``step``; return them."""
    await PartitionCache().ensure(conn, "candles_1m", [start, start + (count - 1) * MINUTE_MS])
    rows = []
    for i in range(count):
        o = price + i * step
        c = o + step
        row = {
            "open_time": start + i * MINUTE_MS,
            "open": o,
            "high": c + 0.05,
            "low": o - 0.05,
            "close": c,
            "volume": 10.0 + i,
            "quote_volume": (10.0 + i) * (o + c) / 2,
            "trades": 5 + i,
        }
        rows.append(row)
    await conn.executemany(
        """INSERT INTO candles_1m (symbol, open_time, open, high, low, close, volume, quote_volume, trades,
               taker_buy_volume, taker_buy_quote_volume)
           VALUES ($1, to_timestamp($2::bigint / 1000.0), $3, $4, $5, $6, $7::float8, $8::float8, $9,
                   $7::float8 / 2, $8::float8 / 2)""",
        [
            (
                symbol,
                r["open_time"],
                r["open"],
                r["high"],
                r["low"],
                r["close"],
                r["volume"],
                r["quote_volume"],
                int(r["trades"]),
            )
            for r in rows
        ],
    )
    return rows


async def publish_alert(nc: NATS, alert: Alert) -> None:
    """Publish ``alert`` as the rules function does: a binary-mode CloudEvent on its subject."""
    event = make_event(
        event_type=TYPE_ALERT_TRIGGERED,
        source=EVENT_SOURCE_RULES,
        event_id=alert.id,
        subject=alert.symbol,
        data=alert,
    )
    headers, body = to_binary(event)
    await nc.publish(nats_subject(event), body, headers=headers)
    await nc.flush()
