"""Verify a Whop webhook delivery: Standard Webhooks signatures (standardwebhooks.com, spec v1).

Whop's webhook guide (docs.whop.com/developer/guides/webhooks) and every webhook page of its API
reference give the headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` (``v1,<base64>``, several space-separated when secrets rotate). The signature is
HMAC-SHA256 over ``<webhook-id>.<webhook-timestamp>.<raw body>``. Whop's SDKs take the key as
``base64(<ws_... secret>)`` and Standard Webhooks libraries base64-decode it again, so the HMAC key
is the raw bytes of the ``ws_...`` secret as shown in Whop's dashboard. A ``whsec_``-prefixed secret
(the Standard Webhooks form) is the base64 of the key after the prefix.

The spec's replay defence is a timestamp tolerance (5 minutes either way); the receiver adds the
other half, refusing a ``webhook-id`` it has already applied (``billing_webhook_events``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping

TOLERANCE_SECONDS = 5 * 60
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


class BadSignature(Exception):
    """The delivery is not a genuine, fresh Whop webhook; the message says why (safe to log)."""


def signing_key(secret: str) -> bytes:
    """Return the HMAC key of a webhook secret (``ws_...`` as raw bytes, ``whsec_...`` base64-decoded)."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ValueError("the webhook secret starts with whsec_ but is not base64 after it") from None
    return secret.encode()


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature of one delivery."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """Return the delivery's ``webhook-id`` once its signature and timestamp check out.

    Raise ``BadSignature`` for a missing header, a timestamp more than ``TOLERANCE_SECONDS`` from
    ``now`` (Unix seconds), or no matching ``v1`` signature (compared in constant time).
    """
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not webhook_id or not stamp or not signatures:
        raise BadSignature("the webhook-id, webhook-timestamp and webhook-signature headers are required")
    if not _ID.match(webhook_id):
        raise BadSignature("the webhook-id header is malformed")
    if not stamp.isdigit() or len(stamp) > 12:
        raise BadSignature("the webhook-timestamp header is not Unix seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise BadSignature(f"the webhook-timestamp is more than {TOLERANCE_SECONDS} s away from now")
    expected = sign(key, webhook_id, timestamp, body).encode()
    for candidate in signatures.split()[:20]:
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return webhook_id
    raise BadSignature("no v1 signature matches")
