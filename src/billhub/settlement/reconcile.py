"""0500/0510 reconciliation per biller and settlement date (LINK-SPEC 6.5).

The hub answers with its own totals from the journal and `00` when they agree
with the switch's, `95` when they do not; every disagreement is recorded as a
finding with both sides' figures, never silently corrected. A repeated 0500 is
compared and answered again (and recorded again: it is a new fact).

With several hub instances, the cutover may have been taken by another one:
a date that looks open here is looked up again (``refresh``) before the 0500 is
answered `12`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from datetime import datetime

from billhub.iso8583 import codes as rc
from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkRules
from billhub.link.responses import make_response
from billhub.settlement.calendar import BusinessDay
from billhub.settlement.model import Reconciliation
from billhub.settlement.ports import SettlementStore
from billhub.settlement.totals import compare, put_totals, totals_of


class Reconciler:
    def __init__(
        self,
        rules: LinkRules,
        store: SettlementStore,
        *,
        billers: Collection[str],
        day: BusinessDay,
        now: Callable[[], datetime],
        on_finding: Callable[[str], None] = lambda _: None,
        refresh: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.rules = rules
        self.store = store
        self.billers = billers
        self.day = day
        self.now = now
        self.on_finding = on_finding
        self.refresh = refresh

    async def handle(self, request: Message) -> Message:
        biller = request.fields.get(100, "")
        if biller not in self.billers:
            return make_response(self.rules, request, rc.UNKNOWN_BILLER)
        d = self.day.settlement_date(request.fields.get(15, ""))
        if d is None:
            return make_response(self.rules, request, rc.FORMAT_ERROR)
        current = self.day.current
        if (current is None or d >= current) and self.refresh is not None:
            await self.refresh()  # another instance may have closed it
            current = self.day.current
        if current is None or d >= current:
            return make_response(self.rules, request, rc.INVALID_TRANSACTION)  # not closed yet
        switch = totals_of(request)
        hub = await self.store.day_totals(biller, d)
        findings = compare(biller, d, switch, request.fields[97], hub)
        code = rc.RECONCILE_ERROR if findings else rc.APPROVED
        now = self.now()
        await self.store.record_reconciliation(
            Reconciliation(biller, d, switch, hub, code, now), findings, now
        )
        for _ in findings:
            self.on_finding(biller)
        resp = make_response(self.rules, request, code)
        put_totals(resp, hub)
        return resp
