"""The hub's top request handler: cutovers to the business day, the rest to the pipeline.

Cutover is settlement's business (LINK-SPEC 6.1), financial requests the
pipeline's; this is the one place that tells them apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta

from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkRules
from billhub.link.observer import LinkInfo
from billhub.link.responses import make_response
from billhub.pipeline.ports import RequestHandler
from billhub.settlement.calendar import BusinessDay


class HubDispatcher:
    """Routes each request the link hands over; ``today`` is injected (UTC date)."""

    def __init__(
        self,
        rules: LinkRules,
        financial: RequestHandler,
        day: BusinessDay,
        today: Callable[[], date],
        *,
        on_cutover: Callable[[list[date]], Awaitable[None]] | None = None,
    ) -> None:
        self.rules = rules
        self.financial = financial
        self.day = day
        self.today = today
        self.on_cutover = on_cutover

    async def handle(self, request: Message, link: LinkInfo) -> Message:
        if request.mti == "0800":
            before = self.day.current
            outcome = self.day.cutover(request.fields[15], self.today())
            if outcome.new_date is not None and self.on_cutover is not None:
                await self.on_cutover(closed_dates(before, outcome.new_date))
            return make_response(self.rules, request, outcome.code)
        return await self.financial.handle(request, link)


def closed_dates(previous: date | None, new: date) -> list[date]:
    """The settlement dates a cutover to ``new`` closes: the open day(s) before it.

    With no earlier cutover known, the day before ``new`` is the one closed.
    """
    start = previous if previous is not None else new - timedelta(days=1)
    out = []
    d = start
    while d < new:
        out.append(d)
        d += timedelta(days=1)
    return out
