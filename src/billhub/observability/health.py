"""Billers' and the journal's health: what ``/readyz``, ``/status``, logs and gauges say.

A :class:`~billhub.pipeline.ports.PipelineObserver`: it keeps, per biller, the outcome
of the last :data:`WINDOW` calls. A biller whose last :data:`DOWN_AFTER` calls all
failed (time-out, unreachable, 5xx, an answer outside the contract) is *down*; a
business refusal (``rejected``: unknown account, nothing due) is an answer and
counts as success. A refused token (401/403) marks the biller down at once: no call
will succeed until an operator fixes it. One successful call brings it back.

The clock is injected (monotonic seconds), so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

WINDOW = 20
DOWN_AFTER = 3
FAILED_OUTCOMES = frozenset({"timeout", "unavailable", "error"})


@dataclass
class _State:
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))  # True: failed
    consecutive_failures: int = 0
    last_outcome: str | None = None
    last_operation: str | None = None
    last_failure: str | None = None
    last_failure_at: float | None = None
    unauthorized: bool = False


class BillerHealth:
    """Recent outcomes of each biller's calls; cheap to update, read on demand."""

    def __init__(
        self,
        billers: Iterable[str] = (),
        *,
        down_after: int = DOWN_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.down_after = down_after
        self.clock = clock
        self._states: dict[str, _State] = {code: _State() for code in billers}

    def biller_call(self, biller: str, operation: str, seconds: float, outcome: str) -> None:
        st = self._states.get(biller)
        if st is None:
            return  # not a configured biller: nothing to report on
        failed = outcome in FAILED_OUTCOMES
        st.recent.append(failed)
        st.last_outcome = outcome
        st.last_operation = operation
        if failed:
            st.consecutive_failures += 1
            st.last_failure = f"{operation}: {outcome}"
            st.last_failure_at = self.clock()
        else:
            st.consecutive_failures = 0
            st.unauthorized = False

    def unauthorized(self, biller: str) -> None:
        """The biller refused the hub's credentials: down until a call succeeds."""
        st = self._states.get(biller)
        if st is not None:
            st.unauthorized = True
            st.last_failure = "unauthorized: check the biller's token"
            st.last_failure_at = self.clock()

    def is_up(self, biller: str) -> bool:
        st = self._states.get(biller)
        if st is None:
            return True
        return not st.unauthorized and st.consecutive_failures < self.down_after

    def up(self) -> dict[str, bool]:
        """Code -> up, for the ``billhub_biller_up`` gauge."""
        return {code: self.is_up(code) for code in self._states}

    def report(self, biller: str) -> dict[str, Any]:
        """JSON-ready state of one biller: state, recent calls and error rate, last failure."""
        st = self._states.get(biller)
        if st is None:
            return {"state": "unknown"}
        calls = len(st.recent)
        errors = sum(st.recent)
        if st.unauthorized:
            state = "unauthorized"
        elif st.consecutive_failures >= self.down_after:
            state = "down"
        elif calls == 0:
            state = "idle"
        elif st.consecutive_failures:
            state = "failing"
        else:
            state = "ok"
        ago = None
        if st.last_failure_at is not None:
            ago = round(self.clock() - st.last_failure_at, 1)
        return {
            "state": state,
            "recent_calls": calls,
            "recent_errors": errors,
            "recent_error_rate": round(errors / calls, 3) if calls else 0.0,
            "consecutive_failures": st.consecutive_failures,
            "last_failure": st.last_failure,
            "last_failure_s_ago": ago,
        }


class JournalHealth:
    """Whether the journal can write, from its own reports; logs and counts failures.

    The journal calls :meth:`write_failed` for every batch whose writes failed
    (with a reason: ``disk_full``, ``io_error``, ``locked``, ...) and
    :meth:`write_ok` for the first write that commits afterwards. The first
    failure is logged at once, at error level; while failures go on, one line
    per ``log_interval`` says how many there were since the last line, so a
    full disk under load is a few lines a minute, not one per payment.
    """

    def __init__(
        self,
        log: Any,
        *,
        metrics: Any | None = None,
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        where: str = "",
    ) -> None:
        self.log = log
        self.metrics = metrics
        self.log_interval = log_interval
        self.clock = clock
        self.where = where
        self.failing_since: float | None = None
        self.reason: str | None = None
        self.detail = ""
        self.failures = 0
        self._unlogged = 0
        self._logged_at = 0.0

    @property
    def writable(self) -> bool:
        return self.failing_since is None

    def write_failed(self, reason: str, detail: str) -> None:
        now = self.clock()
        if self.metrics is not None:
            self.metrics.journal_write_failed(reason)
        self.failures += 1
        self._unlogged += 1
        first = self.failing_since is None
        if first:
            self.failing_since = now
        self.reason, self.detail = reason, detail
        if first or now - self._logged_at >= self.log_interval:
            self.log.error(
                "journal_write_failed",
                reason=reason,
                detail=detail,
                journal=self.where,
                failures=self._unlogged,
                failing_s=round(now - (self.failing_since or now), 1),
            )
            self._unlogged = 0
            self._logged_at = now

    def write_ok(self) -> None:
        if self.failing_since is None:
            return
        now = self.clock()
        if self.metrics is not None:
            self.metrics.journal_write_ok()
        self.log.warning(
            "journal_writes_recovered",
            journal=self.where,
            failed_for_s=round(now - self.failing_since, 1),
            failures=self.failures,
            last_reason=self.reason,
        )
        self.failing_since = None
        self.failures = self._unlogged = 0

    def report(self) -> dict[str, Any]:
        """JSON-ready: ``ok``, or ``failing`` with the reason and for how long."""
        if self.failing_since is None:
            return {"state": "ok"}
        return {
            "state": "failing",
            "reason": self.reason,
            "detail": self.detail,
            "failing_s": round(self.clock() - self.failing_since, 1),
        }
