"""Parsers of the accounts' request fields: each returns a value or raises a ``ShownError`` naming the field."""

from __future__ import annotations

import re
from typing import Any

from gateway.accounts.errors import ShownError

MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8  # the client checks the same (client.md section 1)
MAX_PASSWORD_LENGTH = 1024
# Deliberately loose: one @, no spaces, a dot in the domain. Deliverability is the mail's job.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_INVITE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def bad(field: str, sentence: str, detail: str) -> ShownError:
    """Return a 400 whose sentence the client shows and whose detail names ``field``."""
    return ShownError(400, "invalid_parameter", sentence, f"parameter {field!r}: {detail}")


def email(body: dict[str, Any], name: str = "email") -> str:
    """Return a trimmed e-mail address."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad(name, "Please enter your email address", "is required and must be a string")
    value = value.strip()
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL.match(value):
        raise bad(name, "Please enter a valid email address", "must be an e-mail address of at most 254 characters")
    return value


def new_password(body: dict[str, Any], name: str) -> str:
    """Return a password to set: 8 to 1024 characters."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise bad(name, "Please enter a password", "is required and must be a string")
    if len(value) < MIN_PASSWORD_LENGTH:
        raise bad(name, f"Password must be at least {MIN_PASSWORD_LENGTH} characters", "is too short")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise bad(name, f"Password must be at most {MAX_PASSWORD_LENGTH} characters", "is too long")
    return value


def given_password(body: dict[str, Any], name: str) -> str:
    """Return a password to check against a stored hash (no strength rule: it may predate one)."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise bad(name, "Please enter your password", "is required and must be a string")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise bad(name, f"Password must be at most {MAX_PASSWORD_LENGTH} characters", "is too long")
    return value


def invalid_reset_token(name: str = "token") -> ShownError:
    """Return the 400 of a reset token that is malformed, unknown, used or expired (one answer for all)."""
    return ShownError(
        400,
        "invalid_reset_token",
        "This reset link is invalid or has expired",
        f"parameter {name!r}: is not a live reset token",
    )


def reset_token(body: dict[str, Any], name: str = "token") -> str:
    """Return the raw token of a reset link."""
    value = body.get(name)
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise invalid_reset_token(name)
    return value


def invite_code(value: object) -> str | None:
    """Return an invite code that has the shape of one, else None."""
    return value if isinstance(value, str) and _INVITE.match(value) else None
