"""Issue 16's "done when", in CI when the web client is there: bench/client_billing_journey.py as a test.

The product's web client (its own repository) is built by Vite against a ``screener up`` that sells
plans through the fake Whop, and Chromium goes from the "expired" page through checkout and confirm to
the screener, then through Whop's cancellation and expiry webhooks. It needs the client's source with
its ``node_modules`` at ``SCREENER_TEST_CLIENT_SRC`` (``git clone`` it, ``npm ci``) and Chromium.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.client_billing_journey import run
from tests.e2e.test_dashboard_browser import pytestmark as browser_marks

CLIENT_SRC = Path(os.environ.get("SCREENER_TEST_CLIENT_SRC", "/nonexistent-client"))
pytestmark = [
    *browser_marks,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (CLIENT_SRC / "node_modules" / ".bin" / "vite").exists(),
        reason="the web client is absent: set SCREENER_TEST_CLIENT_SRC to its source folder after `npm ci`",
    ),
]


@pytest.mark.parametrize(
    ("return_path", "payment_webhooks"),
    [("/billing", "never"), ("/app", "after")],
    ids=["billing_page_confirm_only", "screener_confirm_racing_webhooks"],
)
async def test_the_web_client_goes_from_expired_through_checkout_to_the_screener(
    tmp_path: Path, return_path: str, payment_webhooks: str
) -> None:
    journey = await run(CLIENT_SRC, tmp_path / "shots", return_path=return_path, payment_webhooks=payment_webhooks)
    assert journey.step_number == 11
    assert journey.calls("POST", "/api/billing/confirm")[-1] == 200
    assert journey.calls("POST", "/api/refresh")[-1] == 200
