"""Alert history: ``GET /api/alerts`` and the delivery log of one alert."""

from __future__ import annotations

import uuid

from aiohttp import web

from gateway import validation
from gateway.context import GATEWAY, identity, require_user
from gateway.errors import BadParameter, json_ok
from gateway.history import recent_alerts
from gateway.views import alert_row_view, delivery_view

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000  # client.md, decision 2: larger values are clamped, never refused


async def list_alerts(request: web.Request) -> web.Response:
    """Return a JSON array of alerts, newest first (api.md, "alert history")."""
    query = request.query
    validation.only_params(request, {"symbol", "rule_type", "since", "limit"})
    limit = validation.integer("limit", query.get("limit"), default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT, clamp=True)
    assert limit is not None
    gw = request.app[GATEWAY]
    user_id = identity(request).user_id
    rule_type = validation.rule_type("rule_type", query.get("rule_type"), required=False)
    if rule_type is not None and not gw.switches.visible_to(user_id, rule_type):
        # Someone else's rule answers exactly like one that does not exist.
        raise BadParameter(
            "rule_type", f"must name a rule you can see; {rule_type!r} is unknown (GET /api/alert-rules lists them)"
        )
    rows = await recent_alerts(
        gw.pool,
        user_id=user_id,
        symbol=validation.symbol("symbol", query.get("symbol"), required=False),
        rule_type=rule_type,
        since=validation.instant("since", query.get("since")),
        limit=limit,
    )
    return json_ok([alert_row_view(r) for r in rows])


async def alert_deliveries(request: web.Request) -> web.Response:
    """Return the delivery log of one alert to the caller's webhooks."""
    user_id = require_user(request)
    try:
        alert_id = uuid.UUID(request.match_info["alert_id"])
    except ValueError:
        raise BadParameter("alert_id", "must be a UUID") from None
    async with request.app[GATEWAY].pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT d.webhook_id, w.kind, d.status, d.attempts, d.last_error, d.http_status, d.sent_at,
                      d.updated_at
               FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
               WHERE d.alert_id = $1 AND w.user_id = $2 ORDER BY d.updated_at DESC""",
            alert_id,
            user_id,
        )
    return json_ok(
        {
            "alert_id": str(alert_id),
            "deliveries": [delivery_view(r, "webhook_id", "kind") for r in rows],
        }
    )
