"""Plan gating on the server (client.md decision 7): paid features need a live plan or trial.

With billing on, watchlist, webhooks, custom rules and rule toggles answer ``403 {"error":
"subscription_expired"}`` to a user the client would send to its "expired" page (the rule of
``plans.entitled``); admins are never gated and public data stays public. With billing off nothing
is gated and no user row is read.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.accounts.plans import entitled
from gateway.accounts.service import ACCOUNTS
from gateway.context import require_user
from gateway.errors import subscription_expired


async def require_live_plan(request: web.Request) -> None:
    """Raise 401 without a user, 403 ``subscription_expired`` without a live plan (billing on only)."""
    require_user(request)
    accounts = request.app[ACCOUNTS]
    if not accounts.billing.enabled:
        return
    user = await accounts.current_user(request)
    if not entitled(user, datetime.now(UTC)):
        raise subscription_expired("your trial or plan has ended: buy a plan to use this feature")


def needs_plan(handler: Handler) -> Handler:
    """Return ``handler`` behind ``require_live_plan``."""

    @functools.wraps(handler)
    async def gated(request: web.Request) -> web.StreamResponse:
        await require_live_plan(request)
        return await handler(request)

    return gated
