"""A small local server that speaks Whop's REST API v1 as documented, and sends signed webhooks.

API (docs.whop.com/api-reference, base path ``/api/v1``, ``Authorization: Bearer <key>``, else 401):

- ``POST /checkout_configurations`` ``{plan_id, redirect_url?, metadata?}`` (+ ``Idempotency-Key``:
  the same key answers the same configuration) → ``{id: "ch_...", plan: {id}, metadata, redirect_url,
  purchase_url: "https://whop.com/checkout/<plan_id>/?session=<ch_id>", ...}``; an unknown plan: 404;
- ``GET /payments?checkout_configuration_ids[]=ch_...`` → ``{data: [payment], page_info}``, a payment
  being ``{id: "pay_...", status, substatus, checkout_configuration_id, metadata, membership: {id,
  status}, plan: {id}, user: {id, username, email}, paid_at, billing_reason, ...}``;
- ``GET /memberships/{id}`` → ``{id: "mem_...", status, renewal_period_start, renewal_period_end,
  cancel_at_period_end, manage_url, plan: {id}, user, metadata, ...}``; unknown: 404.

The test plays the buyer and Whop's back office: ``pay`` a checkout (a membership and a payment
inheriting its metadata), ``renew``, ``cancel_at_period_end``, ``deactivate``, ``refund``. Each returns the
webhook event Whop would send; ``deliver`` posts it signed the Standard Webhooks way (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<ts>.<body>">`` keyed by
the raw bytes of the ``ws_`` secret). ``delay_seconds`` and ``fail_status`` make the API slow or failing.

Run alone (``python -m tests.fakes.whop_server --port 8790 --webhook-url http://127.0.0.1:8080/api/billing/webhook``)
it also plays Whop's hosted checkout for a browser: ``purchase_url`` points at this server's
``/checkout/<plan_id>/?session=<ch_id>``, a page whose "Pay" button pays the checkout and sends the
browser (303) to the configuration's ``redirect_url``, as Whop does after a hosted checkout. The
webhook events of a payment go to ``--webhook-url`` before the redirect (``--payment-webhooks after``:
while the browser comes back, racing the client's confirm; ``never``: lost, only the confirm
activates). The back office is a small JSON API under ``/_fake/``: ``GET /_fake/state``;
``POST /_fake/memberships/<id>/<action>``, the action one of ``cancel, resume, deactivate, renew,
activate, went_valid, went_invalid``; ``POST /_fake/payments/<id>/refund``. Each action delivers its
event and answers the delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import html
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

API_KEY = "whop_test_" + "k" * 24
WEBHOOK_SECRET = "ws_" + "5e" * 16
COMPANY = "biz_screenertest01"
PLAN_IDS = {
    "screener_monthly": "plan_ScreenerMonth1",
    "screener_yearly": "plan_ScreenerYear01",
    "bundle_monthly": "plan_BundleMonth001",
    "bundle_yearly": "plan_BundleYear0001",
    "tv_monthly": "plan_TvMonth0000001",
    "tv_yearly": "plan_TvYear00000001",
}
# The settings that turn billing on with this server's key, secret and plans (add ``whop_api_url``
# to reach a running one).
BILLING_SETTINGS: dict[str, Any] = {
    "whop_api_key": API_KEY,
    "whop_webhook_secret": WEBHOOK_SECRET,
    **{f"whop_plan_{slug}": plan_id for slug, plan_id in PLAN_IDS.items()},
}
_JSON: web.RequestKey[Any] = web.RequestKey("json", object)
_PERIOD_DAYS = {plan_id: 365 if slug.endswith("yearly") else 30 for slug, plan_id in PLAN_IDS.items()}


def iso(moment: datetime) -> str:
    """Return ``moment`` as Whop writes instants (ISO 8601, milliseconds, ``Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` Standard Webhooks signature Whop puts on a delivery."""
    mac = hmac.new(secret.encode(), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


@dataclass
class Delivery:
    """One webhook delivery as sent: headers, body, and the receiver's answer."""

    webhook_id: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    answer: Any = None


@dataclass
class FakeWhop:
    """Whop's API and webhook sender, in memory."""

    api_key: str = API_KEY
    secret: str = WEBHOOK_SECRET
    delay_seconds: float = 0.0
    fail_status: int | None = None
    checkouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    memberships: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    # Where the hosted checkout lives: Whop's site, or this server's own page when run alone.
    checkout_base: str = "https://whop.com"
    # Standalone only: where events are delivered, and whether a payment's events are sent at all.
    webhook_url: str | None = None
    # "now": before the browser is sent back; "after": while it comes back (racing the client's
    # confirm); "never": lost (only the confirm activates the buyer).
    payment_webhooks: str = "now"
    _sending: set[asyncio.Task[None]] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    _idempotent: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- the HTTP side -----------------------------------------------------------------------------
    def app(self) -> web.Application:
        """Return the aiohttp app serving ``/api/v1``."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/api/v1/checkout_configurations", self._create_checkout)
        app.router.add_get("/api/v1/payments", self._list_payments)
        app.router.add_get("/api/v1/memberships/{id}", self._get_membership)
        app.router.add_get("/checkout/{plan_id}/", self._checkout_page)
        app.router.add_post("/checkout/{plan_id}/pay", self._checkout_pay)
        app.router.add_get("/_fake/state", self._state)
        app.router.add_post("/_fake/memberships/{id}/{action}", self._membership_action)
        app.router.add_post("/_fake/payments/{id}/refund", self._refund_action)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/api/v1/"):  # the hosted checkout and the back office: no API key
            passed: web.StreamResponse = await handler(request)
            return passed
        body = await request.json() if request.can_read_body else None
        self.calls.append((request.method, request.path_qs, dict(request.headers), body))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.fail_status is not None:
            return web.json_response({"error": {"message": "upstream failure"}}, status=self.fail_status)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"type": "unauthorized", "message": "Invalid API key"}}, status=401)
        request[_JSON] = body
        response: web.StreamResponse = await handler(request)
        return response

    async def _create_checkout(self, request: web.Request) -> web.Response:
        body = request[_JSON]
        if not isinstance(body, dict) or body.get("plan_id") not in _PERIOD_DAYS:
            return web.json_response({"error": {"message": "Plan not found"}}, status=404)
        key = request.headers.get("Idempotency-Key")
        if key and key in self._idempotent:
            return web.json_response(self.checkouts[self._idempotent[key]])
        checkout_id = self._id("ch")
        plan_id = body["plan_id"]
        configuration = {
            "id": checkout_id,
            "company_id": COMPANY,
            "mode": "payment",
            "currency": "usd",
            "plan": {"id": plan_id, "visibility": "visible", "plan_type": "renewal", "release_method": "buy_now"},
            "affiliate_code": None,
            "metadata": body.get("metadata") or {},
            "redirect_url": body.get("redirect_url"),
            "purchase_url": f"{self.checkout_base}/checkout/{plan_id}/?session={checkout_id}",
        }
        self.checkouts[checkout_id] = configuration
        if key:
            self._idempotent[key] = checkout_id
        return web.json_response(configuration)

    async def _list_payments(self, request: web.Request) -> web.Response:
        wanted = set(request.query.getall("checkout_configuration_ids[]", []))
        data = [p for p in self.payments.values() if not wanted or p["checkout_configuration_id"] in wanted]
        page_info = {"end_cursor": None, "start_cursor": None, "has_next_page": False, "has_previous_page": False}
        return web.json_response({"data": data, "page_info": page_info})

    async def _get_membership(self, request: web.Request) -> web.Response:
        found = self.memberships.get(request.match_info["id"])
        if found is None:
            return web.json_response({"error": {"message": "Membership not found"}}, status=404)
        return web.json_response(found)

    # --- the hosted checkout (standalone) ------------------------------------------------------
    def _configuration_of(self, request: web.Request) -> dict[str, Any]:
        configuration = self.checkouts.get(request.query.get("session", ""))
        if configuration is None or configuration["plan"]["id"] != request.match_info["plan_id"]:
            raise web.HTTPNotFound(text="This checkout does not exist.")
        return configuration

    async def _checkout_page(self, request: web.Request) -> web.Response:
        configuration = self._configuration_of(request)
        checkout_id = html.escape(configuration["id"])
        plan_id = html.escape(configuration["plan"]["id"])
        page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Whop checkout (local fake)</title></head>
<body style="font-family: sans-serif; max-width: 30em; margin: 4em auto">
<h1>Checkout</h1><p>Plan <code id="plan">{plan_id}</code>, checkout <code>{checkout_id}</code>.</p>
<p>This is the local fake of Whop's hosted checkout: paying here charges nothing.</p>
<form method="post" action="/checkout/{plan_id}/pay?session={checkout_id}">
<button id="pay" type="submit">Pay</button></form></body></html>"""
        return web.Response(text=page, content_type="text/html")

    async def _checkout_pay(self, request: web.Request) -> web.Response:
        configuration = self._configuration_of(request)
        paid = self.pay(configuration["id"])
        events = [paid, self.activate(paid["data"]["membership"]["id"])]
        if self.payment_webhooks == "now":
            await self._send_all(events)
        elif self.payment_webhooks == "after":
            task = asyncio.get_running_loop().create_task(self._send_all(events, delay_seconds=0.05))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        redirect_url = configuration.get("redirect_url")
        if not isinstance(redirect_url, str) or not redirect_url:
            return web.Response(text="Paid. This checkout has no redirect_url.")
        raise web.HTTPSeeOther(redirect_url)

    async def sent(self) -> None:
        """Return once the deliveries sent in the background (``payment_webhooks="after"``) are done."""
        await asyncio.gather(*self._sending)

    async def _send_all(self, events: list[dict[str, Any]], delay_seconds: float = 0.0) -> None:
        await asyncio.sleep(delay_seconds)
        for event in events:
            await self._send(event)

    async def _send(self, event: dict[str, Any]) -> Delivery | None:
        """Deliver ``event`` to the configured webhook URL (standalone); None when there is none."""
        if self.webhook_url is None:
            return None
        try:
            delivery = await self.deliver(self.webhook_url, event)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            delivery = Delivery(event["id"], {}, b"", 0, f"not delivered: {type(exc).__name__}")
        self.deliveries.append(delivery)
        return delivery

    # --- the back office (standalone) -------------------------------------------------------------
    async def _state(self, request: web.Request) -> web.Response:
        deliveries = []
        for d in self.deliveries:
            event = json.loads(d.body) if d.body else {}
            deliveries.append(
                {"webhook_id": d.webhook_id, "type": event.get("type") or event.get("action"), "status": d.status}
            )
        return web.json_response(
            {
                "checkouts": list(self.checkouts.values()),
                "payments": list(self.payments.values()),
                "memberships": list(self.memberships.values()),
                "deliveries": deliveries,
            }
        )

    async def _membership_action(self, request: web.Request) -> web.Response:
        membership_id = request.match_info["id"]
        actions = {
            "cancel": lambda: self.cancel_at_period_end(membership_id),
            "resume": lambda: self.cancel_at_period_end(membership_id, cancel=False),
            "deactivate": lambda: self.deactivate(membership_id),
            "renew": lambda: self.renew(membership_id),
            "activate": lambda: self.activate(membership_id),
            "went_valid": lambda: self.legacy_event("membership.went_valid", membership_id),
            "went_invalid": lambda: self.legacy_event("membership.went_invalid", membership_id),
        }
        action = actions.get(request.match_info["action"])
        if membership_id not in self.memberships or action is None:
            raise web.HTTPNotFound(text="no such membership or action")
        return await self._answer(action())

    async def _refund_action(self, request: web.Request) -> web.Response:
        payment_id = request.match_info["id"]
        if payment_id not in self.payments:
            raise web.HTTPNotFound(text="no such payment")
        return await self._answer(self.refund(payment_id))

    async def _answer(self, event: dict[str, Any]) -> web.Response:
        delivery = await self._send(event)
        delivered = None if delivery is None else {"status": delivery.status, "answer": delivery.answer}
        return web.json_response({"event": event, "delivery": delivered})

    # --- the buyer and the back office ---------------------------------------------------------
    def pay(
        self, checkout_id: str, *, substatus: str = "succeeded", email: str = "buyer@whop.example"
    ) -> dict[str, Any]:
        """Pay a checkout: a new membership and its first payment; return ``payment.succeeded``'s event."""
        configuration = self.checkouts[checkout_id]
        plan_id = configuration["plan"]["id"]
        now = datetime.now(UTC)
        membership_id = self._id("mem")
        user = {"id": self._id("user"), "username": "buyer", "name": "Buyer", "email": email}
        self.memberships[membership_id] = {
            "id": membership_id,
            "status": "active" if substatus == "succeeded" else "drafted",
            "created_at": iso(now),
            "joined_at": iso(now),
            "updated_at": iso(now),
            "manage_url": f"https://whop.com/billing/manage/{membership_id}",
            "member": {"id": self._id("mber")},
            "user": user,
            "renewal_period_start": iso(now),
            "renewal_period_end": iso(now + timedelta(days=_PERIOD_DAYS[plan_id])),
            "cancel_at_period_end": False,
            "cancel_option": None,
            "cancellation_reason": None,
            "canceled_at": None,
            "currency": "usd",
            "company": {"id": COMPANY, "title": "Screener"},
            "plan": {"id": plan_id},
            "promo_code": None,
            "product": {"id": "prod_screener0001", "title": "Screener"},
            "license_key": None,
            "metadata": dict(configuration["metadata"]),
            "payment_collection_paused": False,
        }
        payment = self._payment(checkout_id, membership_id, plan_id, substatus, "subscription_create", user)
        return self.event("payment.succeeded", payment)

    def _payment(
        self, checkout_id: str | None, membership_id: str, plan_id: str, substatus: str, reason: str, user: Any
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        membership = self.memberships[membership_id]
        paid = substatus == "succeeded"
        payment = {
            "id": self._id("pay"),
            "status": "paid" if paid else "open",
            "substatus": substatus,
            "checkout_configuration_id": checkout_id,
            "billing_reason": reason,
            "created_at": iso(now),
            "paid_at": iso(now) if paid else None,
            "currency": "usd",
            "total": 29.99,
            "refunded_amount": None,
            "metadata": dict(membership["metadata"]),
            "membership": {"id": membership_id, "status": membership["status"]},
            "plan": {"id": plan_id},
            "product": {"id": "prod_screener0001"},
            "user": user,
            "company": {"id": COMPANY, "route": "screener", "title": "Screener"},
        }
        self.payments[payment["id"]] = payment
        return payment

    def renew(self, membership_id: str) -> dict[str, Any]:
        """Charge the next period: the membership's period moves on; return ``payment.succeeded``."""
        membership = self.memberships[membership_id]
        end = datetime.fromisoformat(membership["renewal_period_end"].replace("Z", "+00:00"))
        days = _PERIOD_DAYS[membership["plan"]["id"]]
        membership.update(renewal_period_start=iso(end), renewal_period_end=iso(end + timedelta(days=days)))
        payment = self._payment(None, membership_id, membership["plan"]["id"], "succeeded", "subscription_cycle", {})
        return self.event("payment.succeeded", payment)

    def cancel_at_period_end(self, membership_id: str, cancel: bool = True) -> dict[str, Any]:
        """The buyer cancels (or resumes): access runs to the period's end."""
        membership = self.memberships[membership_id]
        membership.update(cancel_at_period_end=cancel, status="canceling" if cancel else "active")
        return self.event("membership.cancel_at_period_end_changed", dict(membership))

    def activate(self, membership_id: str) -> dict[str, Any]:
        """Return ``membership.activated`` for a membership (after ``pay``)."""
        return self.event("membership.activated", dict(self.memberships[membership_id]))

    def deactivate(self, membership_id: str, status: str = "expired") -> dict[str, Any]:
        """Access ends (the period ran out, or it was canceled now)."""
        membership = self.memberships[membership_id]
        membership.update(status=status, cancel_at_period_end=False)
        return self.event("membership.deactivated", dict(membership))

    def refund(self, payment_id: str, status: str = "succeeded") -> dict[str, Any]:
        """Refund a payment in full; return ``refund.created``."""
        payment = self.payments[payment_id]
        payment.update(substatus="refunded", refunded_amount=payment["total"], refunded_at=iso(datetime.now(UTC)))
        refund = {
            "id": self._id("rfnd"),
            "amount": payment["total"],
            "currency": "usd",
            "created_at": iso(datetime.now(UTC)),
            "provider": "stripe",
            "status": status,
            "payment": {
                k: payment[k] for k in ("id", "membership", "metadata", "plan", "user", "created_at", "currency")
            },
        }
        return self.event("refund.created", refund)

    def legacy_event(self, event_type: str, membership_id: str) -> dict[str, Any]:
        """Return a v2 (legacy) membership event, ``membership.went_valid`` or ``went_invalid``.

        The v2 body names its event ``action`` and its membership differs from v1's: ``plan``,
        ``product`` and ``user`` are id strings, ``valid`` says whether it grants access, instants are
        Unix seconds. The delivery is signed like any other.
        """
        membership = self.memberships[membership_id]

        def seconds(text: str) -> int:
            return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())

        data = {
            "id": membership_id,
            "plan": membership["plan"]["id"],
            "product": membership["product"]["id"],
            "user": membership["user"]["id"],
            "status": membership["status"],
            "valid": membership["status"] in ("trialing", "active", "past_due", "canceling"),
            "cancel_at_period_end": membership["cancel_at_period_end"],
            "renewal_period_start": seconds(membership["renewal_period_start"]),
            "renewal_period_end": seconds(membership["renewal_period_end"]),
            "expires_at": None,
            "created_at": seconds(membership["created_at"]),
            "manage_url": membership["manage_url"],
            "metadata": dict(membership["metadata"]),
            "quantity": 1,
        }
        return {"id": self._id("msg"), "action": event_type, "api_version": "v2", "data": data}

    def event(self, event_type: str, data: dict[str, Any], *, at: datetime | None = None) -> dict[str, Any]:
        """Return a webhook event as Whop's v1 payload has it."""
        return {
            "id": self._id("msg"),
            "api_version": "v1",
            "timestamp": iso(at or datetime.now(UTC)),
            "type": event_type,
            "company_id": COMPANY,
            "data": data,
        }

    def signed(
        self, event: dict[str, Any], *, timestamp: int | None = None, secret: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Return the headers and body of a delivery of ``event``, signed with the secret (or another one)."""
        body = json.dumps(event).encode()
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event["id"],
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature(secret or self.secret, event["id"], stamp, body),
        }
        return headers, body

    async def deliver(self, url: str, event: dict[str, Any], **signing: Any) -> Delivery:
        """Post ``event`` to the receiver at ``url``, signed; return the delivery with its answer."""
        headers, body = self.signed(event, **signing)
        delivery = Delivery(event["id"], headers, body)
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
            delivery.status = response.status
            delivery.answer = await response.json(content_type=None)
        return delivery

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}{secrets.token_hex(5)}"


@dataclass
class RunningWhop:
    """A ``FakeWhop`` served on a free local port."""

    whop: FakeWhop
    runner: web.AppRunner
    base_url: str  # ends in /api/v1

    async def stop(self) -> None:
        """Stop serving (the API becomes unreachable)."""
        await self.runner.cleanup()


async def serve(whop: FakeWhop | None = None) -> RunningWhop:
    """Serve a fake Whop on 127.0.0.1 and a free port."""
    fake = whop or FakeWhop()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return RunningWhop(fake, runner, f"http://127.0.0.1:{port}/api/v1")


def main(argv: list[str] | None = None) -> None:
    """Serve a fake Whop (API, hosted checkout, back office) until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.whop_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--webhook-url", help="where webhook events are delivered (the gateway's /api/billing/webhook)")
    parser.add_argument(
        "--payment-webhooks",
        choices=("now", "after", "never"),
        default="now",
        help="a payment's events: before the browser is sent back, while it comes back (racing the client's "
        "confirm), or never (only the confirm activates)",
    )
    args = parser.parse_args(argv)
    base = f"http://{args.host}:{args.port}"
    fake = FakeWhop(checkout_base=base, webhook_url=args.webhook_url, payment_webhooks=args.payment_webhooks)
    settings = {
        "SCREENER_WHOP_API_URL": f"{base}/api/v1",
        "SCREENER_WHOP_API_KEY": fake.api_key,
        "SCREENER_WHOP_WEBHOOK_SECRET": fake.secret,
        **{f"SCREENER_WHOP_PLAN_{slug.upper()}": plan_id for slug, plan_id in PLAN_IDS.items()},
    }
    print(f"fake Whop on {base} (API {base}/api/v1); the gateway's settings:", flush=True)
    for name, value in settings.items():
        print(f"  {name}={value}", flush=True)
    web.run_app(fake.app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
