"""The hub's top request handler: cutovers and 0500s to settlement, the rest to the pipeline.

Cutover and reconciliation are settlement's business (LINK-SPEC 6.1, 6.5),
financial requests the pipeline's; this is the one place that tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from billhub.iso8583 import codes as rc
from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkRules
from billhub.link.observer import LinkInfo
from billhub.link.responses import make_response
from billhub.pipeline.ports import RequestHandler
from billhub.settlement.calendar import BusinessDay
from billhub.settlement.dayclose import DayCloser
from billhub.settlement.reconcile import Reconciler


class HubDispatcher:
    """Routes each request the link hands over; ``today`` is injected (UTC date)."""

    def __init__(
        self,
        rules: LinkRules,
        financial: RequestHandler,
        day: BusinessDay,
        today: Callable[[], date],
        *,
        closer: DayCloser | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.rules = rules
        self.financial = financial
        self.day = day
        self.today = today
        self.closer = closer
        self.reconciler = reconciler

    async def handle(self, request: Message, link: LinkInfo) -> Message:
        if rc.mti_class(request.mti) == rc.NETWORK:  # the link hands over only cutovers
            if self.closer is not None:
                code = await self.closer.cutover(request.fields[15])
            else:
                code = self.day.cutover(request.fields[15], self.today()).code
            return make_response(self.rules, request, code)
        if rc.mti_class(request.mti) == rc.RECONCILIATION:
            if self.reconciler is None:
                return make_response(self.rules, request, rc.MALFUNCTION)
            return await self.reconciler.handle(request)
        return await self.financial.handle(request, link)
