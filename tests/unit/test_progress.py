"""The console's alert count is what a visitor of the dashboard sees, and it names what is hidden."""

from __future__ import annotations

import asyncpg

from screener.events.models import MINUTE_MS, AlertAudience
from screener.progress import alert_counts
from tests.gateway.helpers import BASE_MINUTE, insert_alerts, make_alert, seed_rules


async def test_console_counts_what_an_anonymous_visitor_sees_and_names_the_hidden(pg: asyncpg.Connection) -> None:
    await seed_rules(pg)
    public = [make_alert("BTCUSDT", "futures_pioneer_bull", BASE_MINUTE + i * MINUTE_MS) for i in range(3)]
    # Whale Detector is off by default: the rules function records its alerts for no one but those who
    # switched it on (audience.public false), so neither the dashboard nor /api/alerts shows them.
    hidden = AlertAudience(public=False)
    whale = [
        make_alert("ETHUSDT", "futures_whale_detector", BASE_MINUTE + i * MINUTE_MS, audience=hidden) for i in range(2)
    ]
    await insert_alerts(pg, public + whale)
    counts = await alert_counts(pg)
    assert counts.shown == 3 and counts.total == 5
    line = counts.describe()
    assert line.startswith("alerts 3 on the dashboard")
    assert "Whale Detector 2" in line and "off by default" in line
    anonymous = await pg.fetchval(
        "SELECT count(*) FROM alert_history WHERE coalesce((audience->>'public')::boolean, true)"
    )
    assert anonymous == counts.shown
