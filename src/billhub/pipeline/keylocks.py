"""One lock per payment key, held while a payment or reversal of that key is decided.

A repeat (on any link), a reversal, or the original itself: whichever comes
second waits for the first to finish, then reads its outcome. Locks exist only
while someone holds or waits for them, so memory follows the work in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from billhub.pipeline.model import PaymentKey


class KeyLocks:
    def __init__(self) -> None:
        self._locks: dict[PaymentKey, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: PaymentKey) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = (asyncio.Lock(), [0])
            self._locks[key] = entry
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
