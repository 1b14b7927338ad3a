"""Billers' health from their recent calls: what ``/readyz``, ``/status`` and a gauge say.

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
