"""The hub's top request handler: cutovers to the business day, the rest to the pipeline.

Cutover is settlement's business (LINK-SPEC 6.1), financial requests the
pipeline's; this is the one place that tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

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
    ) -> None:
        self.rules = rules
        self.financial = financial
        self.day = day
        self.today = today
        # What the shell logs for answers from here: the financial handler's word.
        self.reason: str = getattr(financial, "reason", "handled")

    async def handle(self, request: Message, link: LinkInfo) -> Message:
        if request.mti == "0800":
            outcome = self.day.cutover(request.fields[15], self.today())
            return make_response(self.rules, request, outcome.code)
        return await self.financial.handle(request, link)
