"""The product's web client, unchanged, from "expired" through Whop's checkout to the screener, in Chromium.

Issue 16's "done when": with the local Whop server configured, the client goes from its "expired"
page through checkout and confirm to the screener. This drive runs the real pieces as separate
processes: the fake Whop (``python -m tests.fakes.whop_server``, its hosted checkout page included),
``screener up`` configured with it (open sign-up without a trial, so a new user starts expired),
and the client built by Vite against that gateway and served on its own origin. Headless Chromium
(Playwright over the system's binary) then plays the buyer:

1. signs up: the client shows its pricing page, and the API refuses the watchlist (403);
2. picks a plan: the browser goes to the checkout page, pays, and Whop sends it back to
   ``/billing?session=<ref>`` (``--return-path /app``: to the screener, whose guard confirms); the
   client calls ``POST /api/billing/confirm`` then ``POST /api/refresh``. Whop's payment webhooks are
   held back, so only the client's confirm can activate the buyer (``--payment-webhooks now``: they
   arrive before the browser is sent back; ``after``: while it comes back, racing the confirm);
3. the billing page shows the plan and the "Manage on Whop" link; the screener opens, a watchlist
   star is saved (no 403) and is still there after a reload;
4. the TradingView add-on is bought from the billing page the same way, and the TradingView
   username saved;
5. Whop's back office: a cancellation at the period's end (webhook) gives the client's "canceled"
   banner; the membership ending (webhook) sends the client back to its pricing page and the API
   refuses the watchlist again.

Each step is printed with its result, screenshots go to ``--shots``. Usage::

    .venv/bin/python bench/client_billing_journey.py --frontend /work/frontend [--shots /tmp/billing-journey]

``--frontend`` is a checkout of the client with its ``node_modules`` (``npm ci``); the client is built
into a temporary folder for the gateway's port. Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository's packages
    sys.path.insert(0, str(REPO))

from screener.embedded.servers import free_port  # noqa: E402
from tests.fakes.whop_server import API_KEY, PLAN_IDS, WEBHOOK_SECRET  # noqa: E402

CHROMIUM = os.environ.get("SCREENER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
JWT_SECRET = "journey-" + "0123456789abcdef" * 3
PASSWORD = "correct horse battery"


class JourneyFailed(AssertionError):
    """A step did not give what the client's user should see."""


@dataclass
class Journey:
    """The running pieces and what the browser saw of the API."""

    gateway: str
    client: str
    whop: str
    shots: Path
    responses: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    step_number: int = 0
    return_path: str = "/billing"  # where Whop sends the buyer back (client.md: /billing or /app)
    payment_webhooks: str = "never"  # Whop's payment webhooks: "never" (only confirm), "now" or "after" (racing)
    email: str = field(default_factory=lambda: f"buyer-{secrets.token_hex(4)}@example.com")

    def step(self, title: str, result: str) -> None:
        """Print one passed step and its result."""
        self.step_number += 1
        print(f"[{self.step_number:2d}] {title}: {result}", flush=True)

    def calls(self, method: str, path: str) -> list[int]:
        """Return the statuses of the browser's calls ``method path`` (path without its query)."""
        return [status for m, p, status in self.responses if m == method and p == path]


def _get_json(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.5)
    raise JourneyFailed(f"{url} did not answer within {seconds:g} s")


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` in its own process group, output to ``log``; stop it (SIGINT, then SIGKILL) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def build_client(frontend: Path, gateway: str, out: Path) -> None:
    """Build the client with Vite against ``gateway`` (its env names: src/services/backendApi.ts)."""
    env = dict(os.environ)
    env.update(
        {
            "VITE_BACKEND_API_URL": gateway,
            "VITE_BACKEND_WS_URL": gateway.replace("http", "ws", 1) + "/ws/alerts",
            "VITE_USE_BACKEND_API": "true",
        }
    )
    vite = frontend / "node_modules" / ".bin" / "vite"
    done = subprocess.run(
        [str(vite), "build", "--outDir", str(out), "--emptyOutDir"],
        cwd=frontend,
        env=env,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise JourneyFailed(f"vite build failed: {done.stderr.decode(errors='replace')[-2000:]}")


def client_files(dist: Path) -> dict[str, Path]:
    """Return the built client's files by their path under ``dist``."""
    root = dist.resolve()
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


@contextlib.asynccontextmanager
async def serve_client(files: dict[str, Path], port: int) -> AsyncIterator[None]:
    """Serve the built client as its host would: files, and index.html for every route of the app."""
    index = await asyncio.to_thread(files["index.html"].read_bytes)

    async def page(request: web.Request) -> web.StreamResponse:
        found = files.get(request.match_info["path"])
        return web.FileResponse(found) if found else web.Response(body=index, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{path:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def gateway_env(data: Path, whop_api: str, client_origin: str) -> dict[str, str]:
    """Return ``screener up``'s environment: billing through the fake Whop, sign-up without a trial."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(
        {
            "SCREENER_DATA_DIR": str(data),
            "SCREENER_REPLAY_SPEED": "600",
            "SCREENER_JWT_SECRET": JWT_SECRET,
            "SCREENER_FRONTEND_ORIGIN": client_origin,
            "SCREENER_OPEN_SIGNUP_TRIAL": "false",
            "SCREENER_OUTBOUND_ALLOW": "127.0.0.1/32",  # the fake Whop is on loopback
            "SCREENER_WHOP_API_URL": whop_api,
            "SCREENER_WHOP_API_KEY": API_KEY,
            "SCREENER_WHOP_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **{f"SCREENER_WHOP_PLAN_{slug.upper()}": plan_id for slug, plan_id in PLAN_IDS.items()},
        }
    )
    return env


async def _api(page: Any, method: str, path: str, base: str, body: Any = None) -> tuple[int, Any]:
    """Call the gateway from the page with the client's stored token; return status and JSON body."""
    answer: dict[str, Any] = await page.evaluate(
        """async ([url, method, body]) => {
            const token = localStorage.getItem('auth_token') || localStorage.getItem('token');
            const r = await fetch(url, {method, headers: {'Authorization': 'Bearer ' + token,
                'Content-Type': 'application/json'}, body: body === null ? undefined : JSON.stringify(body)});
            let data = null; try { data = await r.json() } catch (e) {}
            return {status: r.status, data};
        }""",
        [base + path, method, body],
    )
    return answer["status"], answer["data"]


async def _text(page: Any, text: str, seconds: float = 20.0) -> None:
    try:
        await page.get_by_text(text, exact=False).first.wait_for(timeout=seconds * 1000)
    except Exception as exc:  # Playwright's TimeoutError: say what the page showed instead
        body = (await page.inner_text("body"))[:600].replace("\n", " | ")
        raise JourneyFailed(f"{text!r} never appeared on {page.url}; the page shows: {body}") from exc


async def _shot(page: Any, journey: Journey, name: str) -> str:
    path = journey.shots / f"{journey.step_number + 1:02d}-{name}.png"
    await page.evaluate("window.scrollTo(0, 0)")  # a reload keeps the scroll position; banners are at the top
    await page.screenshot(path=str(path), full_page=False)
    return str(path)


async def drive(journey: Journey) -> None:
    """Play the buyer in Chromium (the steps of the module docstring)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()

        def record(response: Any) -> None:
            url = response.url
            if url.startswith(journey.gateway):
                path = url[len(journey.gateway) :].split("?")[0]
                journey.responses.append((response.request.method, path, response.status))

        page.on("response", record)

        # 1. Sign up: a new open sign-up starts expired and sees the pricing page.
        await page.goto(journey.client + "/signup")
        await page.fill("#email", journey.email)
        await page.fill("#password", PASSWORD)
        await page.fill("#confirmPassword", PASSWORD)
        await page.check("input[type=checkbox]")
        await page.get_by_role("button", name="Create Account").click()
        await _text(page, "Start your free trial")
        status, me = await _api(page, "GET", "/api/me", journey.gateway)
        if status != 200 or me.get("status") != "expired":
            raise JourneyFailed(f"GET /api/me after sign-up: {status} {me}")
        journey.step(
            "sign up",
            f"POST /auth/register {journey.calls('POST', '/auth/register')}, user status {me['status']!r}, "
            f"pricing page shown ({await _shot(page, journey, 'expired')})",
        )
        status, body = await _api(page, "POST", "/api/watchlist", journey.gateway, {"symbol": "BTC"})
        if status != 403 or body.get("error") != "subscription_expired":
            raise JourneyFailed(f"watchlist before buying: {status} {body}")
        journey.step("watchlist before buying", f"{status} {body['error']!r}")

        # 2. Pick a plan: the client asks for a checkout and the browser goes to Whop's page.
        delivered_before = len(_get_json(journey.whop + "/_fake/state")["deliveries"])
        async with page.expect_navigation(url=f"{journey.whop}/checkout/**"):
            await page.get_by_role("button", name="Start Free Trial").first.click()
        await _text(page, "Checkout")
        journey.step(
            "pick screener_monthly",
            f"POST /api/checkout {journey.calls('POST', '/api/checkout')}, browser at {page.url} "
            f"({await _shot(page, journey, 'whop-checkout')})",
        )

        # 3. Pay: Whop sends the browser back to <return path>?session=<ref>; the client confirms and refreshes.
        async with page.expect_response(lambda r: r.url.startswith(journey.gateway + "/api/refresh"), timeout=30_000):
            await page.click("#pay")
        landed = page.url
        if journey.return_path == "/app":  # SubscriptionGuard confirmed: the screener opens
            await page.locator("[aria-label='Add to watchlist']:visible").first.wait_for(timeout=60_000)
        else:
            await _text(page, "Manage on Whop")
        confirms = journey.calls("POST", "/api/billing/confirm")
        refreshes = journey.calls("POST", "/api/refresh")
        if not confirms or confirms[-1] != 200 or not refreshes or refreshes[-1] != 200:
            raise JourneyFailed(f"confirm {confirms}, refresh {refreshes}")
        status, me = await _api(page, "GET", "/api/me", journey.gateway)
        if me.get("status") != "active" or me.get("plan") != "monthly":
            raise JourneyFailed(f"after confirm, /api/me says {me}")
        delivered = [("payment.succeeded", 200), ("membership.activated", 200)]
        expected = [] if journey.payment_webhooks == "never" else delivered
        for _ in range(100):  # "after": they may still be on their way
            webhooks = [(d["type"], d["status"]) for d in _get_json(journey.whop + "/_fake/state")["deliveries"]]
            if webhooks[delivered_before:] == expected:
                break
            await asyncio.sleep(0.1)
        else:
            raise JourneyFailed(f"Whop's payment webhooks ({journey.payment_webhooks}): {webhooks}")
        journey.step(
            "pay and come back",
            f"back at {landed}, POST /api/billing/confirm {confirms}, POST /api/refresh {refreshes}, "
            f"Whop's webhooks {webhooks[delivered_before:] or 'held back'}, user {me['status']!r} plan "
            f"{me['plan']!r} until {me['plan_expires_at']} ({await _shot(page, journey, 'back-from-whop')})",
        )
        if journey.return_path == "/app":
            await page.goto(journey.client + "/billing")
            await _text(page, "Manage on Whop")
        status, billing = await _api(page, "GET", "/api/billing", journey.gateway)
        journey.step(
            "billing page",
            f"GET /api/billing {status}: plan {billing['plan']!r}, membership {billing['whop_membership_id']}, "
            f"manage_url {billing['manage_url']}",
        )

        # 4. The screener: a watchlist star is saved and survives a reload.
        before_screener = len(journey.responses)
        await page.get_by_text("Back to Screener").click()
        star = page.locator("[aria-label='Add to watchlist']:visible").first
        await star.wait_for(timeout=60_000)
        async with page.expect_response(
            lambda r: r.url.startswith(journey.gateway + "/api/watchlist") and r.request.method == "POST"
        ) as added:
            await star.click()
        watchlist_status = (await added.value).status
        if watchlist_status >= 300:
            raise JourneyFailed(f"POST /api/watchlist answered {watchlist_status}")
        await page.reload()
        await page.locator("[aria-label='Remove from watchlist']:visible").first.wait_for(timeout=60_000)
        status, saved = await _api(page, "GET", "/api/watchlist", journey.gateway)
        forbidden = [(m, p, s) for m, p, s in journey.responses[before_screener:] if s == 403]
        if forbidden:
            raise JourneyFailed(f"403 answers in the screener: {forbidden}")
        journey.step(
            "screener",
            f"at {page.url}, star POST /api/watchlist {watchlist_status}, after reload GET /api/watchlist "
            f"{status} {saved}, no 403 ({await _shot(page, journey, 'screener')})",
        )

        # 5. The TradingView add-on, bought from the billing page while the plan runs.
        await page.goto(journey.client + "/billing")
        async with page.expect_navigation(url=f"{journey.whop}/checkout/**"):
            await page.get_by_role("button", name="$19.99/mo").click()
        async with page.expect_response(lambda r: r.url.startswith(journey.gateway + "/api/refresh"), timeout=30_000):
            await page.click("#pay")
        if journey.return_path == "/app":  # back on the screener: the username is set on the billing page
            await page.locator("[aria-label='Remove from watchlist']:visible").first.wait_for(timeout=60_000)
            await page.goto(journey.client + "/billing")
        username = page.get_by_placeholder("Your TradingView username")
        await username.wait_for(timeout=20_000)
        await username.fill("journey_trader")
        async with page.expect_response(lambda r: "/api/settings/tv-username" in r.url) as saved_name:
            await page.get_by_role("button", name="Save").click()
        status, with_addon = await _api(page, "GET", "/api/billing", journey.gateway)
        wanted = {"status": "active", "plan": "monthly", "tv_addon_active": True, "tv_username": "journey_trader"}
        if {key: with_addon.get(key) for key in wanted} != wanted:
            raise JourneyFailed(f"after the add-on's checkout, /api/billing says {with_addon}")
        journey.step(
            "TradingView add-on from the billing page",
            f"POST /api/checkout {journey.calls('POST', '/api/checkout')}, POST /api/billing/confirm "
            f"{journey.calls('POST', '/api/billing/confirm')}, GET /api/billing {status}: plan "
            f"{with_addon['plan']!r} tv_addon_active {with_addon['tv_addon_active']}, "
            f"PUT /api/settings/tv-username {(await saved_name.value).status} "
            f"({await _shot(page, journey, 'tv-addon')})",
        )

        # 6. Whop's back office: the screener plan is canceled at the period's end, then it ends.
        membership = billing["whop_membership_id"]
        canceled = _get_json(f"{journey.whop}/_fake/memberships/{membership}/cancel", "POST")
        await page.goto(journey.client + "/app")
        await _text(page, "Your subscription is canceled")
        # The client draws this banner above its app, whose header is fixed at the top: say whether it is seen.
        covered = await page.get_by_text("Your subscription is canceled").first.evaluate(
            """el => { const box = el.getBoundingClientRect();
               const top = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
               return !(el.contains(top) || top.contains(el)); }"""
        )
        status, me = await _api(page, "GET", "/api/me", journey.gateway)
        if me.get("status") != "canceled":
            raise JourneyFailed(f"after the cancellation webhook, /api/me says {me}")
        seen = "under the client's fixed header" if covered else "visible"
        journey.step(
            "webhook membership.cancel_at_period_end_changed",
            f"delivery {canceled['delivery']['status']}, user {me['status']!r} until {me['plan_expires_at']}, "
            f"screener still open, client banner rendered ({seen}) ({await _shot(page, journey, 'canceled')})",
        )
        ended = _get_json(f"{journey.whop}/_fake/memberships/{membership}/deactivate", "POST")
        await page.reload()
        await _text(page, "Your subscription has expired")
        status, body = await _api(page, "POST", "/api/watchlist", journey.gateway, {"symbol": "ETH"})
        if status != 403:
            raise JourneyFailed(f"watchlist after the membership ended: {status} {body}")
        journey.step(
            "webhook membership.deactivated",
            f"delivery {ended['delivery']['status']}, client back on its pricing page, watchlist {status} "
            f"{body['error']!r} ({await _shot(page, journey, 'expired-again')})",
        )
        await browser.close()


async def run(
    frontend: Path, shots: Path, *, return_path: str = "/billing", payment_webhooks: str = "never"
) -> Journey:
    """Start the fake Whop, ``screener up`` and the client; drive the journey; stop everything."""
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    gateway_port, client_port, whop_port = free_port(), free_port(), free_port()
    journey = Journey(
        f"http://127.0.0.1:{gateway_port}",
        f"http://127.0.0.1:{client_port}",
        f"http://127.0.0.1:{whop_port}",
        shots,
        return_path=return_path,
        payment_webhooks=payment_webhooks,
    )
    with tempfile.TemporaryDirectory(prefix="billing-journey-") as tmp:
        work = Path(tmp)
        # Run as root, the embedded PostgreSQL runs as nobody: a folder it can reach keeps its data in here,
        # so it goes away with the rest (else it falls back to a folder of its own under /tmp, left behind).
        await asyncio.to_thread(work.chmod, 0o755)
        started = time.monotonic()
        out = work / "dist"
        await asyncio.to_thread(build_client, frontend, journey.gateway, out)
        journey.step("build the client", f"vite build against {journey.gateway} in {time.monotonic() - started:.0f} s")
        whop_args = [sys.executable, "-m", "tests.fakes.whop_server", "--port", str(whop_port)]
        whop_args += ["--webhook-url", journey.gateway + "/api/billing/webhook"]
        whop_args += ["--payment-webhooks", payment_webhooks]
        with _process(whop_args, shots / "whop.log"):
            await asyncio.to_thread(_wait_http, journey.whop + "/_fake/state", 30)
            env = gateway_env(work / "state", journey.whop + "/api/v1", journey.client)
            env["SCREENER_WHOP_RETURN_URL"] = journey.client + return_path
            up = [sys.executable, "-m", "screener.cli", "up", "--port", str(gateway_port)]
            with _process(up, shots / "screener-up.log", env):
                await asyncio.to_thread(_wait_http, journey.gateway + "/api/health", 180)
                journey.step(
                    "start",
                    f"fake Whop at {journey.whop}, screener up at {journey.gateway}, client at {journey.client}",
                )
                async with serve_client(await asyncio.to_thread(client_files, out), client_port):
                    await drive(journey)
    return journey


def main() -> None:
    """Parse the options, run the journey, exit 1 on a failed step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frontend", type=Path, required=True, help="the client's source with node_modules")
    parser.add_argument("--shots", type=Path, default=Path("/tmp/billing-journey"), help="screenshots and logs")
    parser.add_argument(
        "--return-path", choices=("/billing", "/app"), default="/billing", help="where Whop sends the buyer back"
    )
    parser.add_argument(
        "--payment-webhooks",
        choices=("never", "now", "after"),
        default="never",
        help="never: Whop's payment webhooks are lost, only the client's confirm activates; now: they come "
        "before the browser is sent back; after: while it comes back, racing the confirm",
    )
    args = parser.parse_args()
    try:
        asyncio.run(
            run(
                args.frontend,
                args.shots,
                return_path=args.return_path,
                payment_webhooks=args.payment_webhooks,
            )
        )
    except JourneyFailed as exc:
        print(f"FAILED: {exc}", flush=True)
        sys.exit(1)
    print("every step passed", flush=True)


if __name__ == "__main__":
    main()
