"""Payments in flight per settlement date, so that a cutover can wait for its dates.

LINK-SPEC 6.1: the cutover is answered once every payment of the closed dates
already in flight has its answer and is durably recorded. A payment enters here
before it checks whether its date is closed, with no await in between, so a
cutover that closes the date either sees it in flight or is seen by it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date


class InFlightDates:
    def __init__(self) -> None:
        self._counts: Counter[date] = Counter()
        self._changed = asyncio.Event()

    def enter(self, day: date) -> None:
        self._counts[day] += 1

    def leave(self, day: date) -> None:
        self._counts[day] -= 1
        if self._counts[day] <= 0:
            del self._counts[day]
        self._changed.set()

    def count_before(self, day: date) -> int:
        return sum(n for d, n in self._counts.items() if d < day)

    async def drained(self, before: date) -> None:
        """Return once no payment of a date before ``before`` is in flight."""
        while self.count_before(before):
            self._changed.clear()
            await self._changed.wait()
