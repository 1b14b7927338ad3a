"""Billers as the pipeline routes to them: a code, a time budget, a bound on calls.

The bound (a semaphore per biller) is what keeps one slow company from taking
every request slot: its calls queue behind its own bound and run out of their
own budget, while the others go on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from billhub.pipeline.ports import Biller


@dataclass
class BillerRoute:
    code: str
    name: str
    biller: Biller
    budget: float
    max_concurrency: int
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_concurrency)

    @property
    def online(self) -> bool:
        """A remote system (cancel calls, late postings) rather than the hub's own store."""
        return not self.biller.status_is_authoritative
