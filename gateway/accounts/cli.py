"""``screener users``: the operator's account commands (create an admin, list and show users, set plans, invites).

They talk to PostgreSQL directly: the one ``SCREENER_POSTGRES_DSN`` names, or the embedded one of a
``screener up`` running on the same data folder.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.accounts import billing_store, store
from gateway.accounts.billing import signup_state
from gateway.accounts.errors import ShownError
from gateway.accounts.fields import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from gateway.accounts.fields import email as parse_email
from gateway.accounts.passwords import Passwords
from gateway.accounts.plans import entitled
from gateway.accounts.users import PLANS, ROLES, STATUSES, User, iso
from screener import stackfiles
from screener.config import Settings
from screener.db.migrate import migrate

_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
TRIAL = timedelta(days=7)


class UsageError(Exception):
    """A command's input is wrong or its target does not exist; the message says which."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the actions of ``screener users``."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create-admin", help="create an admin (or make an existing user one)")
    create.add_argument("--email", required=True)
    create.add_argument("--password", help="the password (default: asked for, not echoed)")
    actions.add_parser("list", help="list every user")
    actions.add_parser("show", help="show a user's plan, Whop memberships and checkouts (for support)").add_argument(
        "email"
    )
    plan = actions.add_parser("set-plan", help="set a user's plan")
    plan.add_argument("email")
    plan.add_argument("--plan", required=True, choices=(*PLANS, "none"))
    plan.add_argument("--status", choices=STATUSES, help="default: active when a plan is set, unchanged for none")
    plan.add_argument("--expires", help="when the plan ends: 2027-01-31, an ISO instant, or a duration like 30d")
    plan.add_argument("--tv-addon", choices=("on", "off"), help="the TradingView add-on")
    status = actions.add_parser("set-status", help="set a user's status")
    status.add_argument("email")
    status.add_argument("status", choices=STATUSES)
    status.add_argument("--trial-ends", help="with trial: when it ends (date, instant or duration; default 7d)")
    role = actions.add_parser("set-role", help="make a user an admin or a plain user")
    role.add_argument("email")
    role.add_argument("role", choices=ROLES)
    for name, text in (("disable", "refuse a user's sign-in and tokens"), ("enable", "undo disable")):
        actions.add_parser(name, help=text).add_argument("email")
    invite = actions.add_parser("invite", help="create or list invite codes")
    invite_actions = invite.add_subparsers(dest="invite_action", required=True, metavar="ACTION")
    invite_create = invite_actions.add_parser("create", help="create single-use invite codes")
    invite_create.add_argument("--expires-in", default="7d", help="lifetime like 7d, 12h or 2w (default 7d)")
    invite_create.add_argument("--count", type=int, default=1, help="how many codes (default 1)")
    invite_actions.add_parser("list", help="list invites and their state")


def parse_duration(text: str) -> timedelta:
    """Return the duration of ``30m``, ``12h``, ``7d`` or ``2w``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"{text!r} is not a duration like 30m, 12h, 7d or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_when(text: str, now: datetime) -> datetime:
    """Return the instant of a duration from now, an ISO date (midnight UTC) or an ISO instant."""
    if _DURATION.match(text.strip()):
        return now + parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is neither a date, an ISO instant nor a duration like 30d") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _ask_password() -> str:
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise UsageError("the two passwords differ")
    return first


def _check_password(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise UsageError(f"the password must have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")


async def _user(conn: asyncpg.Connection, email: str) -> User:
    user = await store.by_email(conn, email)
    if user is None:
        raise UsageError(f"no user has the e-mail {email!r}")
    return user


def _describe(user: User) -> str:
    plan = user.plan or "no plan"
    until = f" until {iso(user.plan_expires_at)}" if user.plan_expires_at else ""
    trial = f", trial ends {iso(user.trial_ends_at)}" if user.status == "trial" and user.trial_ends_at else ""
    addon = "on" if user.tv_addon_active else "off"
    off = ", DISABLED" if user.disabled else ""
    return f"{user.email} ({user.role}, {user.status}{trial}, {plan}{until}, tv add-on {addon}{off})"


async def create_admin(conn: asyncpg.Connection, settings: Settings, email: str, password: str) -> str:
    """Create an admin, or make the existing user with that e-mail an admin with this password."""
    try:
        email = parse_email({"email": email})
    except ShownError:
        raise UsageError(f"{email!r} is not an e-mail address") from None
    _check_password(password)
    password_hash = await Passwords().hash(password)
    existing = await store.by_email(conn, email)
    if existing is not None:
        await store.update_user(conn, existing.id, {"role": "admin", "password_hash": password_hash})
        return f"{email} is now an admin, with the new password"
    state = signup_state(settings, invited=False, now=datetime.now(UTC))
    user = await store.insert_user(conn, email, password_hash, state, role="admin")
    assert user is not None
    return f"admin {email} created (id {user.id}); sign in with this e-mail and password"


async def set_plan(conn: asyncpg.Connection, args: argparse.Namespace, now: datetime) -> str:
    """Set a user's plan, its end, the status and the TV add-on."""
    user = await _user(conn, args.email)
    changes: dict[str, Any] = {}
    if args.plan == "none":
        changes.update(plan=None, plan_expires_at=None)
        if args.expires:
            raise UsageError("--expires needs a plan")
    else:
        changes.update(plan=args.plan, status="active")
        changes["plan_expires_at"] = parse_when(args.expires, now) if args.expires else None
        if user.plan != args.plan or user.plan_activated_at is None:
            changes["plan_activated_at"] = now
    if args.status:
        changes["status"] = args.status
    if args.tv_addon:
        changes["tv_addon_active"] = args.tv_addon == "on"
    return f"set: {_describe(await store.update_user(conn, user.id, changes))}"


async def set_status(conn: asyncpg.Connection, args: argparse.Namespace, now: datetime) -> str:
    """Set a user's status (a trial gets its end)."""
    user = await _user(conn, args.email)
    changes: dict[str, Any] = {"status": args.status}
    if args.status == "trial":
        changes["trial_ends_at"] = parse_when(args.trial_ends, now) if args.trial_ends else now + TRIAL
    elif args.trial_ends:
        raise UsageError("--trial-ends goes with the status trial")
    return f"set: {_describe(await store.update_user(conn, user.id, changes))}"


async def show(conn: asyncpg.Connection, email: str, now: datetime) -> str:
    """Return a user's plan as the client sees it, with the Whop memberships and checkouts behind it."""
    user = await _user(conn, email)
    lines = [
        _describe(user),
        f"id {user.id}, created {iso(user.created_at)}, plan activated {iso(user.plan_activated_at) or '-'}",
        f"may use paid features now: {'yes' if entitled(user, now) else 'no'} (with billing on)",
    ]
    memberships = await billing_store.memberships_of(conn, user.id)
    if memberships:
        rows = [["membership", "plan", "whop status", "period ends", "cancels at end", "refunded", "manage"]]
        rows += [
            [
                m.membership_id,
                m.plan_slug,
                m.status,
                iso(m.renewal_period_end) or "-",
                "yes" if m.cancel_at_period_end else "-",
                iso(m.refunded_at) or "-",
                m.manage_url or "-",
            ]
            for m in memberships
        ]
        lines.append(_table(rows))
    checkouts = await conn.fetch(
        """SELECT ref, plan_slug, checkout_id, created_at, confirmed_at FROM billing_checkouts
           WHERE user_id = $1 ORDER BY created_at DESC LIMIT 10""",
        user.id,
    )
    if checkouts:
        rows = [["checkout", "plan", "whop checkout", "started", "confirmed"]]
        rows += [
            [c["ref"], c["plan_slug"], c["checkout_id"], iso(c["created_at"]) or "", iso(c["confirmed_at"]) or "-"]
            for c in checkouts
        ]
        lines.append(_table(rows))
    if not memberships and not checkouts:
        lines.append("no Whop membership or checkout")
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def list_users(users: list[User]) -> str:
    """Return the users as a table."""
    rows = [["email", "role", "status", "plan", "plan expires", "trial ends", "created", "last login", "disabled"]]
    for u in users:
        rows.append(
            [
                u.email or f"(no e-mail, id {u.id})",
                u.role,
                u.status,
                u.plan or "-",
                iso(u.plan_expires_at) or "-",
                iso(u.trial_ends_at) or "-",
                iso(u.created_at) or "-",
                iso(u.last_login_at) or "-",
                "yes" if u.disabled else "-",
            ]
        )
    return _table(rows) + f"\n{len(users)} user(s)"


async def invite_commands(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> str:
    """Create or list invites."""
    now = datetime.now(UTC)
    if args.invite_action == "create":
        if not 1 <= args.count <= 100:
            raise UsageError("--count must be between 1 and 100")
        lifetime = parse_duration(args.expires_in)
        origin = settings.frontend_origin.rstrip("/")
        lines = []
        for _ in range(args.count):
            invite = await store.create_invite(conn, lifetime)
            lines.append(f"{invite.code}  expires {iso(invite.expires_at)}  link {origin}/invite/{invite.code}")
        return "\n".join(lines)
    rows = [["code", "state", "created", "expires", "used by"]]
    invites = await store.list_invites(conn)
    for i in invites:
        rows.append([i.code, i.state(now), iso(i.created_at) or "", iso(i.expires_at) or "", i.used_by_email or "-"])
    return _table(rows) + f"\n{len(invites)} invite(s)"


async def _run(args: argparse.Namespace, settings: Settings, dsn: str) -> str:
    password = None
    if args.action == "create-admin":
        password = args.password if args.password is not None else _ask_password()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, settings.retention_hours)  # idempotent: the tables exist whatever ran before
        now = datetime.now(UTC)
        if args.action == "create-admin":
            assert password is not None
            return await create_admin(conn, settings, args.email, password)
        if args.action == "list":
            return list_users(await store.list_users(conn))
        if args.action == "show":
            return await show(conn, args.email, now)
        if args.action == "set-plan":
            return await set_plan(conn, args, now)
        if args.action == "set-status":
            return await set_status(conn, args, now)
        if args.action == "set-role":
            user = await store.update_user(conn, (await _user(conn, args.email)).id, {"role": args.role})
            return f"set: {_describe(user)}"
        if args.action in ("disable", "enable"):
            user = await _user(conn, args.email)
            disabled_at = (user.disabled_at or now) if args.action == "disable" else None
            return f"set: {_describe(await store.update_user(conn, user.id, {'disabled_at': disabled_at}))}"
        return await invite_commands(conn, args, settings)
    finally:
        await conn.close()


def database(settings: Settings) -> str:
    """Return the DSN to use: the configured one, else the embedded one of a running ``screener up``."""
    dsn = settings.postgres_dsn or stackfiles.running_postgres(settings.data_dir)
    if not dsn:
        raise UsageError(
            f"no database: start `screener up` (it records its database in {settings.data_dir}/) "
            "or set SCREENER_POSTGRES_DSN"
        )
    return dsn


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``screener users`` action; print its result."""
    try:
        print(asyncio.run(_run(args, settings, database(settings))))
    except UsageError as exc:
        print(f"screener users: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"screener users: database unavailable: {exc}", file=sys.stderr)
        return 1
    return 0
