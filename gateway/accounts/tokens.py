"""The gateway's own tokens (decision 4): HS256 JWTs that ``gateway.auth.TokenVerifier`` accepts."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

from gateway.accounts.users import User

# Marks the tokens this gateway issued, so a token of a deleted account is not re-provisioned.
ISSUER = "screener-gateway"


class TokenIssuer:
    """Sign tokens with the shared HS256 secret: ``sub``, ``email``, ``role``, ``aud``, ``iss``, ``iat``, ``exp``."""

    def __init__(
        self, secret: str, audience: str, lifetime_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._audience = audience
        self._lifetime = lifetime_seconds
        self._clock = clock

    def issue(self, user: User) -> str:
        """Return a signed token for ``user``."""
        now = int(self._clock())
        claims = {
            "sub": str(user.id),
            "email": user.email or "",
            "role": user.role,
            "aud": self._audience,
            "iss": ISSUER,
            "iat": now,
            "exp": now + int(self._lifetime),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")
