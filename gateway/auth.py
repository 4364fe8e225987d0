"""Verify JWTs: HS256 with a shared secret (Supabase-compatible) and RS256/ES256 keys from a JWKS URL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import jwt
from aiohttp import web

from gateway.errors import unauthorized

ASYMMETRIC = ("RS256", "ES256")
# The JWK key type each accepted asymmetric algorithm needs (RFC 7518, section 6.1).
KEY_TYPE_OF = {"RS256": "RSA", "ES256": "EC"}
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class Identity:
    """The caller: ``user_id`` from the token's ``sub``, or None for an anonymous caller.

    ``email``, ``issuer`` and ``issued_at`` are the token's ``email``, ``iss`` and ``iat`` claims when
    present: the accounts endpoints provision a user row from them and refuse revoked tokens.
    """

    user_id: str | None
    email: str | None = None
    issuer: str | None = None
    issued_at: int | None = None

    @property
    def anonymous(self) -> bool:
        """Return whether no token was presented."""
        return self.user_id is None


ANONYMOUS = Identity(None)


class InvalidToken(Exception):
    """A token was presented but cannot be trusted; the message says why (safe to show)."""


class TokenVerifier:
    """Verify bearer tokens against the configured secret and JWKS."""

    def __init__(self, secret: str | None, audience: str, jwks_url: str | None = None) -> None:
        self._secret = secret
        self._audience = audience
        self._jwks = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=300, timeout=5) if jwks_url else None

    async def verify(self, token: str) -> Identity:
        """Return the identity in ``token``; raise ``InvalidToken`` saying why it is refused."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("token is malformed") from None
        algorithm = header.get("alg")
        key: object
        if algorithm == "HS256" and self._secret:
            key = self._secret
        elif algorithm in ASYMMETRIC and self._jwks is not None:
            jwks = self._jwks
            try:
                # PyJWKClient fetches with urllib (blocking): keep it off the event loop.
                signing = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
            except jwt.PyJWKClientError as exc:
                raise InvalidToken(f"no usable signing key: {exc}") from None
            # A token may name any alg; verifying an ES256 signature with an RSA key raises deep in
            # the crypto backend, so a key of the wrong type is refused here as an invalid token.
            if signing.key_type != KEY_TYPE_OF[algorithm]:
                raise InvalidToken(f"algorithm {algorithm!r} does not match its signing key ({signing.key_type})")
            key = signing.key
        else:
            raise InvalidToken(f"algorithm {algorithm!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key=key,  # type: ignore[arg-type]
                algorithms=[algorithm],
                audience=self._audience,
                options={"require": ["exp", "sub"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token audience is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise InvalidToken("token signature or claims are invalid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 200:
            raise InvalidToken("token 'sub' is not a user id")
        return Identity(
            subject,
            email=_short_text(claims.get("email")),
            issuer=_short_text(claims.get("iss")),
            issued_at=claims["iat"] if isinstance(claims.get("iat"), int) else None,
        )


def _short_text(value: object, limit: int = 320) -> str | None:
    """Return an optional string claim, or None when it is absent, not a string or unreasonably long."""
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def bearer_token(request: web.Request, *, allow_query: bool = False) -> str | None:
    """Return the token of ``Authorization: Bearer`` (or ``?token=`` where allowed), if any."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("Authorization header must be 'Bearer <token>'")
        return value.strip()
    if allow_query:
        token = request.query.get("token")
        if token:
            return token
    return None
