"""What the composition injects into the core: the real clock and identifiers."""

from __future__ import annotations

import random
import secrets
import string
import time
from datetime import UTC, date, datetime

_ALNUM = string.ascii_uppercase + string.digits


def utc_today() -> date:
    return datetime.now(UTC).date()


class SystemClock:
    """The real clock: UTC wall time for records, the monotonic clock for budgets."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class RandomIds:
    """Payment ids unique forever, and approval codes, at the cost of one counter step.

    A payment id is the process's start time and 48 random bits (drawn once),
    then a counter: unique across restarts and instances without a system call
    per payment. Approval codes come from a per-process random stream seeded
    from the OS; they identify, they do not protect.
    """

    def __init__(self) -> None:
        self._prefix = f"P{datetime.now(UTC):%y%m%d%H%M%S}{secrets.token_hex(6)}"
        self._n = 0
        self._codes = random.Random(secrets.randbits(128))

    def payment_id(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:x}"

    def approval_code(self) -> str:
        return "".join(self._codes.choices(_ALNUM, k=6))
