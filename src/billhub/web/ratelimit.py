"""Rate limits per client address and per account: a sliding window, time injected.

The limit is on attempts, answered or not, so an unknown account costs as much
as a known one and enumeration is held to the limit (specs/READINGS.md). Kept in
the process's memory: one web service per database is the deployment here, and a
restart forgetting the windows only gives an attacker one more minute.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable


class RateLimiter:
    def __init__(self, per_window: int, window_s: float, clock: Callable[[], float]) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> int | None:
        """Count an attempt; None if allowed, else the seconds to wait (>= 1)."""
        now = self._clock()
        q = self._hits.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if len(q) >= self.per_window:
            return max(1, math.ceil(q[0] + self.window_s - now))
        q.append(now)
        if len(self._hits) > 100_000:  # forget idle keys so memory stays bounded
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window_s}
        return None
