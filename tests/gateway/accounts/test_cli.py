"""``screener users``, run as the operator runs it (a subprocess), against the test's PostgreSQL and gateway."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.gateway.accounts.helpers import Client, bearer, error_of, login, register
from tests.gateway.conftest import GatewayFactory

REPO = Path(__file__).resolve().parents[3]
ADMIN_PASSWORD = "operator's own passphrase"


async def users(
    dsn: str | None,
    *args: str,
    stdin: str | None = None,
    data_dir: Path | None = None,
    settings: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run ``screener users ARGS``; return (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(settings or {})
    if dsn:
        env["SCREENER_POSTGRES_DSN"] = dsn
    if data_dir:
        env["SCREENER_DATA_DIR"] = str(data_dir)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "screener.cli",
        "users",
        *args,
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin.encode() if stdin else None)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def iso_to_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_create_admin_then_sign_in_as_admin(accounts_gw: Client, postgres_dsn: str) -> None:
    status, out, err = await users(
        postgres_dsn, "create-admin", "--email", "root@example.com", "--password", ADMIN_PASSWORD
    )
    assert status == 0, err
    assert "admin root@example.com created" in out
    response = await login(accounts_gw, "root@example.com", ADMIN_PASSWORD)
    body = await response.json()
    assert response.status == 200
    assert body["user"]["role"] == "admin" and body["user"]["status"] == "active"
    me = await (await accounts_gw.get("/api/me", headers=bearer(body["token"]))).json()
    assert me["role"] == "admin"


async def test_create_admin_asks_for_the_password_when_not_given(accounts_gw: Client, postgres_dsn: str) -> None:
    status, _, err = await users(
        postgres_dsn, "create-admin", "--email", "asked@example.com", stdin=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"
    )
    assert status == 0, err
    assert ADMIN_PASSWORD not in err
    assert (await login(accounts_gw, "asked@example.com", ADMIN_PASSWORD)).status == 200


async def test_create_admin_promotes_an_existing_user(accounts_gw: Client, postgres_dsn: str) -> None:
    await register(accounts_gw, "promote@example.com")
    status, out, err = await users(
        postgres_dsn, "create-admin", "--email", "PROMOTE@example.com", "--password", ADMIN_PASSWORD
    )
    assert status == 0, err
    assert "now an admin" in out
    body = await (await login(accounts_gw, "promote@example.com", ADMIN_PASSWORD)).json()
    assert body["user"]["role"] == "admin"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("create-admin", "--email", "not-an-email", "--password", ADMIN_PASSWORD), "not an e-mail"),
        (("create-admin", "--email", "a@example.com", "--password", "short"), "8 to 1024"),
        (("set-plan", "nobody@example.com", "--plan", "monthly"), "no user"),
        (("invite", "create", "--expires-in", "soon"), "not a duration"),
    ],
)
async def test_bad_input_exits_1_saying_why(postgres_dsn: str, args: tuple[str, ...], says: str) -> None:
    status, _, err = await users(postgres_dsn, *args)
    assert status == 1
    assert says in err


async def test_set_plan_and_status_show_in_api_me_and_billing(accounts_gw: Client, postgres_dsn: str) -> None:
    created = await register(accounts_gw, "customer@example.com")
    headers = bearer(created["token"])
    status, out, err = await users(
        postgres_dsn, "set-plan", "customer@example.com", "--plan", "yearly", "--expires", "30d", "--tv-addon", "on"
    )
    assert status == 0, err
    assert "yearly" in out
    me = await (await accounts_gw.get("/api/me", headers=headers)).json()
    assert me["plan"] == "yearly" and me["status"] == "active" and me["tv_addon_active"] is True
    assert me["plan_activated_at"] is not None
    expires = iso_to_datetime(me["plan_expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    billing = await (await accounts_gw.get("/api/billing", headers=headers)).json()
    assert billing["plan"] == "yearly" and billing["plan_expires_at"] == me["plan_expires_at"]

    status, _, err = await users(
        postgres_dsn, "set-plan", "customer@example.com", "--plan", "none", "--status", "expired"
    )
    assert status == 0, err
    me = await (await accounts_gw.get("/api/me", headers=headers)).json()
    assert me["plan"] is None and me["plan_expires_at"] is None and me["status"] == "expired"

    status, _, err = await users(
        postgres_dsn, "set-status", "customer@example.com", "trial", "--trial-ends", "2030-01-02"
    )
    assert status == 0, err
    me = await (await accounts_gw.get("/api/me", headers=headers)).json()
    assert me["status"] == "trial" and me["trial_ends_at"] == "2030-01-02T00:00:00.000Z"


async def test_list_shows_every_user(accounts_gw: Client, postgres_dsn: str) -> None:
    await register(accounts_gw, "first@example.com")
    await register(accounts_gw, "second@example.com")
    status, out, err = await users(postgres_dsn, "list")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["email", "role", "status"]
    assert any(line.startswith("first@example.com") for line in lines)
    assert any(line.startswith("second@example.com") for line in lines)
    assert lines[-1] == "2 user(s)"


async def test_disable_and_enable(accounts_gw: Client, postgres_dsn: str) -> None:
    await register(accounts_gw, "paused@example.com")
    assert (await users(postgres_dsn, "disable", "paused@example.com"))[0] == 0
    await error_of(await login(accounts_gw, "paused@example.com"), 403, "account_disabled")
    assert (await users(postgres_dsn, "enable", "paused@example.com"))[0] == 0
    assert (await login(accounts_gw, "paused@example.com")).status == 200


async def test_invites_created_by_command_sign_up_once(make_gateway: GatewayFactory, postgres_dsn: str) -> None:
    gw = await make_gateway(signup_mode="invite", auth_rate_limit_per_minute=1000, frontend_origin="https://app.test")
    status, out, err = await users(
        postgres_dsn,
        *("invite", "create", "--expires-in", "2d", "--count", "2"),
        settings={"SCREENER_FRONTEND_ORIGIN": "https://app.test"},
    )
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    code = lines[0].split()[0]
    assert f"link https://app.test/invite/{code}" in lines[0]
    expires = iso_to_datetime(lines[0].split()[2])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=2))) < timedelta(minutes=5)
    await register(gw, "invitee@example.com", invite_code=code)
    status, out, _ = await users(postgres_dsn, "invite", "list")
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert "used" in rows[code] and "invitee@example.com" in rows[code]
    other = lines[1].split()[0]
    assert "valid" in rows[other]
    assert out.splitlines()[-1] == "2 invite(s)"


async def test_without_a_database_it_says_how_to_get_one(tmp_path: Path) -> None:
    status, _, err = await users(None, "list", data_dir=tmp_path)
    assert status == 1
    assert "start `screener up`" in err and "SCREENER_POSTGRES_DSN" in err


async def test_it_finds_the_database_of_a_running_screener_up(
    accounts_gw: Client, postgres_dsn: str, tmp_path: Path
) -> None:
    from screener import stackfiles

    stackfiles.write_servers(tmp_path, {"postgres": postgres_dsn})  # as `screener up` does, with our own pid
    await register(accounts_gw, "found@example.com")
    status, out, err = await users(None, "list", data_dir=tmp_path)
    assert status == 0, err
    assert "found@example.com" in out
