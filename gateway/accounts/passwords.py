"""Password hashes: argon2id (argon2-cffi's RFC 9106 defaults), computed off the event loop.

A hash takes tens of milliseconds and 64 MiB: it runs in a worker thread, at most a few at once per
process, so a burst of sign-ins neither blocks the loop nor exhausts memory.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MAX_CONCURRENT_HASHES = 2


class Passwords:
    """Hash and verify passwords; an unknown user is verified against a dummy hash to cost the same time."""

    def __init__(self, hasher: PasswordHasher | None = None, max_concurrent: int = MAX_CONCURRENT_HASHES) -> None:
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        """Return the argon2id hash of ``password``."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Return whether ``password`` matches ``stored``; with no stored hash, spend the same time and say no."""
        if stored is None:
            await self._verify(await self._dummy_hash(), password)
            return False
        return await self._verify(stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """Return whether ``stored`` was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    async def _verify(self, stored: str, password: str) -> bool:
        async with self._slots:
            try:
                return await asyncio.to_thread(self._hasher.verify, stored, password)
            except (VerificationError, InvalidHashError):
                return False

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            # Two callers may both compute it on the first unknown e-mail; either result serves.
            self._dummy = await self.hash(secrets.token_urlsafe(24))
        return self._dummy
