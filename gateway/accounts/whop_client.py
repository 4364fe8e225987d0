"""Whop's REST API v1, the three calls billing needs, over aiohttp under the outbound-address policy.

Whop's documentation (docs.whop.com/api-reference, 2026, and its official SDKs generated from the
same OpenAPI document): base ``https://api.whop.com/api/v1``, ``Authorization: Bearer <API key>``;

- ``POST /checkout_configurations`` with ``plan_id``, ``redirect_url``, ``metadata`` and an
  ``Idempotency-Key`` header answers ``{"id": "ch_...", "purchase_url": ...}``; its payments and
  memberships inherit the metadata;
- ``GET /payments?checkout_configuration_ids[]=ch_...`` answers ``{"data": [payment], "page_info"}``,
  a payment having ``status`` (``paid`` once collected), ``substatus`` (``succeeded``, ``refunded``...),
  ``metadata``, ``membership: {id, status}`` and ``plan: {id}``;
- ``GET /memberships/{id}`` answers the membership: ``status``, ``renewal_period_end``,
  ``cancel_at_period_end``, ``manage_url``, ``plan: {id}``, ``metadata``.

Every failure is a ``WhopUnavailable`` (503: Whop unreachable or too slow) or a ``WhopError`` (502:
Whop answered something unusable); neither carries the API key.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from gateway.accounts.errors import ShownError
from screener.outbound import OutboundPolicy, OutboundRefused

log = logging.getLogger(__name__)
_MAX_BODY = 1024 * 1024  # Whop's answers are a few kB; anything this large is not one


class WhopError(ShownError):
    """Whop answered, but not with what its documentation promises (or refused the request): 502."""

    def __init__(self, detail: str) -> None:
        super().__init__(502, "billing_provider_error", "The payment provider answered with an error", detail)


class WhopUnavailable(ShownError):
    """Whop could not be reached in time: 503, nothing was changed."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            503, "billing_unavailable", "The payment provider is unavailable. Please try again shortly.", detail
        )


class WhopClient:
    """A small client of Whop's API v1: checkout configurations, payments and memberships."""

    def __init__(self, base_url: str, api_key: str, timeout_seconds: float, policy: OutboundPolicy) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._policy = policy
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session (inside the running loop)."""
        if self._session is None:
            self._session = self._policy.client_session(timeout=self._timeout, limit=20)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def create_checkout(self, plan_id: str, redirect_url: str, metadata: dict[str, str], key: str) -> Any:
        """Create a checkout configuration for ``plan_id``; ``key`` makes a retry return the same one."""
        body = {"plan_id": plan_id, "redirect_url": redirect_url, "metadata": metadata}
        return await self._call("POST", "/checkout_configurations", json=body, headers={"Idempotency-Key": key})

    async def checkout_payments(self, checkout_id: str) -> list[Any]:
        """Return the payments made through the checkout configuration ``checkout_id``."""
        answer = await self._call("GET", "/payments", params=[("checkout_configuration_ids[]", checkout_id)])
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise WhopError("GET /payments answered without a 'data' list")
        return data

    async def membership(self, membership_id: str) -> Any:
        """Return the membership ``membership_id``."""
        # Callers pass ids checked against Whop's form; quoting keeps any other id inside its path segment.
        return await self._call("GET", f"/memberships/{quote(membership_id, safe='')}")

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            await self.start()
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        headers.update(kwargs.pop("headers", {}))
        what = f"{method} {path}"
        try:
            async with self._session.request(method, self._base + path, headers=headers, **kwargs) as response:
                raw = await response.content.read(_MAX_BODY + 1)
                status = response.status
        except OutboundRefused as exc:
            raise WhopUnavailable(f"{what}: the Whop API address is refused by the outbound policy ({exc})") from None
        except TimeoutError:
            raise WhopUnavailable(f"{what}: Whop did not answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise WhopUnavailable(f"{what}: Whop could not be reached ({type(exc).__name__})") from None
        if status in (429, 502, 503, 504):
            raise WhopUnavailable(f"{what}: Whop answered {status}")
        if status >= 400:
            log.warning("Whop refused %s: %s %s", what, status, raw[:300].decode("utf-8", "replace"))
            raise WhopError(f"{what}: Whop answered {status}")
        if len(raw) > _MAX_BODY:
            raise WhopError(f"{what}: Whop's answer is larger than {_MAX_BODY} bytes")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise WhopError(f"{what}: Whop's answer is not JSON") from None
