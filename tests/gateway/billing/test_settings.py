"""Billing settings: off when none is given, a missing or malformed one stops start-up with its name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.accounts.billing import NoBilling, billing_provider
from gateway.accounts.whop import WhopBilling
from gateway.accounts.whop_signature import BadSignature, sign, signing_key, verify
from screener.config import PLAN_SLUGS, ConfigError, load_settings
from tests.fakes.whop_server import PLAN_IDS

KEY = "whop_live_" + "s3cr3t" * 4
SECRET = "ws_" + "ab" * 16


def _env(**overrides: str | None) -> dict[str, str]:
    env = {
        "SCREENER_WHOP_API_KEY": KEY,
        "SCREENER_WHOP_WEBHOOK_SECRET": SECRET,
        **{f"SCREENER_WHOP_PLAN_{slug.upper()}": plan for slug, plan in PLAN_IDS.items()},
    }
    env.update({k: v for k, v in overrides.items() if v is not None})
    return {k: v for k, v in env.items() if overrides.get(k, "") is not None}


def test_billing_is_off_without_whop_settings() -> None:
    settings = load_settings({})
    assert not settings.billing_enabled and settings.whop_plans == {}
    assert isinstance(billing_provider(settings, pool=None), NoBilling)  # type: ignore[arg-type]


def test_complete_whop_settings_turn_billing_on_and_keep_secrets_out_of_reprs() -> None:
    settings = load_settings(_env())
    assert settings.billing_enabled
    assert settings.whop_plans == PLAN_IDS and set(settings.whop_plans) == set(PLAN_SLUGS)
    assert KEY not in repr(settings) and SECRET not in repr(settings) and KEY not in str(settings.model_dump())
    provider = billing_provider(settings.model_copy(update={"outbound_allow": []}), pool=None)  # type: ignore[arg-type]
    assert isinstance(provider, WhopBilling) and provider.enabled


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (_env(SCREENER_WHOP_API_KEY=None), "SCREENER_WHOP_API_KEY"),
        (_env(SCREENER_WHOP_WEBHOOK_SECRET=None), "SCREENER_WHOP_WEBHOOK_SECRET"),
        (_env(SCREENER_WHOP_PLAN_TV_YEARLY=None), "SCREENER_WHOP_PLAN_TV_YEARLY"),
        ({"SCREENER_WHOP_RETURN_URL": "https://app.example.test/billing"}, "SCREENER_WHOP_API_KEY"),
        (_env(SCREENER_WHOP_PLAN_BUNDLE_MONTHLY="prod_123"), "SCREENER_WHOP_PLAN_BUNDLE_MONTHLY"),
        (_env(SCREENER_WHOP_API_KEY="has space"), "SCREENER_WHOP_API_KEY"),
        (_env(SCREENER_WHOP_API_URL="ftp://api.whop.com"), "SCREENER_WHOP_API_URL"),
        (_env(SCREENER_WHOP_RETURN_URL="not a url"), "SCREENER_WHOP_RETURN_URL"),
        (_env(SCREENER_WHOP_TIMEOUT_SECONDS="0"), "SCREENER_WHOP_TIMEOUT_SECONDS"),
    ],
)
def test_a_missing_or_malformed_billing_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        load_settings(env)
    assert KEY not in str(caught.value)


def test_an_internal_whop_url_needs_the_operators_allowance() -> None:
    internal = load_settings(_env(SCREENER_WHOP_API_URL="http://127.0.0.1:9999/api/v1"))
    with pytest.raises(ConfigError, match="SCREENER_WHOP_API_URL"):
        billing_provider(internal, pool=None)  # type: ignore[arg-type]
    allowed = internal.model_copy(update={"outbound_allow": ["127.0.0.1/32"]})
    assert isinstance(billing_provider(allowed, pool=None), WhopBilling)  # type: ignore[arg-type]


def test_signatures_follow_standard_webhooks() -> None:
    # The ws_ secret's raw bytes are the key; whsec_ secrets are base64 after the prefix (the spec's form).
    assert signing_key(SECRET) == SECRET.encode()
    assert signing_key("whsec_c2VjcmV0") == b"secret"
    key, body = signing_key(SECRET), b'{"type":"payment.succeeded"}'
    good = sign(key, "msg_1", 1_700_000_000, body)
    headers: dict[str, Any] = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000"}
    assert verify(key, {**headers, "webhook-signature": f"v1,bm9wZQ== {good}"}, body, 1_700_000_100) == "msg_1"
    for bad in ({**headers, "webhook-signature": "v1,bm9wZQ=="}, headers, {**headers, "webhook-timestamp": "x"}):
        with pytest.raises(BadSignature):
            verify(key, {"webhook-signature": good, **bad}, body + b" ", 1_700_000_000)
    with pytest.raises(BadSignature, match="away from now"):
        verify(key, {**headers, "webhook-signature": good}, body, 1_700_000_301)


def test_the_gateway_refuses_to_start_naming_a_refused_whop_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env |= _env(SCREENER_WHOP_API_URL="http://10.0.0.1/api/v1")
    env |= {"SCREENER_POSTGRES_DSN": "postgresql://127.0.0.1:1/none", "SCREENER_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "screener.cli", "gateway"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "SCREENER_WHOP_API_URL" in done.stderr and "SCREENER_OUTBOUND_ALLOW" in done.stderr
    assert KEY not in done.stderr
