"""Cutover: closing settlement dates (LINK-SPEC 6.1), durably and redone after a crash.

A cutover to a later date is recorded ``closing`` first, which is also what
makes new payments of the closed dates get `90`; then it waits until every
payment of those dates already in flight is answered and recorded, asks every
biller to close those days (:meth:`~billhub.pipeline.ports.Biller.close_day`:
the batch billers write their payments files), records ``closed``, and only
then is `00` answered. A crash anywhere in between leaves ``closing`` in the
journal; at start-up :meth:`DayCloser.restore` redoes the rest (the files are
written again to the same bytes, nothing is counted twice).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, timedelta

from billhub.iso8583 import codes as rc
from billhub.pipeline.model import DayFile
from billhub.pipeline.ports import Biller, PaymentsLedger
from billhub.settlement.calendar import BusinessDay
from billhub.settlement.ports import CutoverRecord, SettlementStore


class DayCloser:
    def __init__(
        self,
        store: SettlementStore,
        day: BusinessDay,
        *,
        billers: Sequence[Biller],
        ledger: PaymentsLedger,
        drained: Callable[[date], Awaitable[None]],
        exclusive: Callable[[], AbstractAsyncContextManager[None]],
        now: Callable[[], datetime],
        pause: Callable[[float], Awaitable[None]],
        on_file: Callable[[DayFile], None] = lambda _: None,
        takeover_after: float = 60.0,
    ) -> None:
        self.store = store
        self.day = day
        self.billers = billers
        self.ledger = ledger
        self.drained = drained
        self.exclusive = exclusive
        self.now = now
        self.pause = pause
        self.on_file = on_file
        self.takeover_after = takeover_after

    async def restore(self) -> CutoverRecord | None:
        """At start-up: the open day from the journal, and finish a cutover left closing."""
        last = await self.refresh()
        if last is not None and last.state != "closed":
            await self._close(last)
        return last

    async def refresh(self) -> CutoverRecord | None:
        """Learn the open day from the journal: another hub instance may have moved it."""
        last = await self.store.latest_cutover()
        if last is not None and (self.day.current is None or last.new_date > self.day.current):
            self.day.current = last.new_date
        return last

    async def cutover(self, mmdd: str) -> str:
        """The response code of a cutover to ``mmdd``; returns once it is done."""
        async with self.exclusive():
            await self.refresh()
            before = self.day.current
            outcome = self.day.cutover(mmdd)  # moves the open day when later
            if outcome.new_date is None:
                return outcome.code  # 30 for an earlier date, 00 for the same one
            new = outcome.new_date
            record = CutoverRecord(
                new, before, await self._closed_dates(before, new), "closing", self.now()
            )
            try:
                created = await self.store.begin_cutover(record)
            except Exception:
                self.day.current = before
                raise
            if not created:  # another instance took the same cutover a moment ago
                return await self._await_other(new)
            await self.drained(new)
            await self._close(record)
            return rc.APPROVED

    async def _await_other(self, new: date) -> str:
        """Answer a cutover another instance is closing once it is closed; close it here
        if that instance does not finish within ``takeover_after`` (it died)."""
        waited = 0.0
        while waited < self.takeover_after:
            last = await self.store.latest_cutover()
            if last is not None and last.new_date == new and last.state == "closed":
                return rc.APPROVED
            await self.pause(0.1)
            waited += 0.1
        last = await self.store.latest_cutover()
        if last is not None and last.new_date == new and last.state != "closed":
            await self.drained(new)
            await self._close(last)
        return rc.APPROVED

    async def _closed_dates(self, before: date | None, new: date) -> list[date]:
        if before is not None:
            start = before
        else:
            active = await self.store.dates_with_activity(new)
            start = min([*active, new - timedelta(days=1)])
        out, d = [], start
        while d < new:
            out.append(d)
            d += timedelta(days=1)
        return out

    async def _close(self, record: CutoverRecord) -> None:
        for biller in self.billers:
            for f in await biller.close_day(record.closed_dates, self.ledger):
                self.on_file(f)
                await self.store.record_payments_file(
                    f.biller, f.settlement_date, str(f.path), self.now()
                )
        await self.store.finish_cutover(record.new_date, self.now())
