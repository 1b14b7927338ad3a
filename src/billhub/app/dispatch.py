"""The hub's top request handler: cutovers and 0500s to settlement, the rest to the pipeline.

Cutover and reconciliation are settlement's business (LINK-SPEC 6.1, 6.5),
financial requests the pipeline's; this is the one place that tells them apart.
"""

from __future__ import annotations

from billhub.iso8583 import codes as rc
from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkRules
from billhub.link.responses import make_response
from billhub.pipeline.ports import RequestHandler
from billhub.settlement.dayclose import DayCloser
from billhub.settlement.reconcile import Reconciler


class HubDispatcher:
    """Routes each request the link hands over.

    ``financial`` is the pipeline (the link tests put their own handler there).
    """

    def __init__(
        self,
        rules: LinkRules,
        financial: RequestHandler,
        closer: DayCloser,
        reconciler: Reconciler,
    ) -> None:
        self.rules = rules
        self.financial = financial
        self.closer = closer
        self.reconciler = reconciler

    async def handle(self, request: Message) -> Message:
        cls = rc.mti_class(request.mti)
        if cls == rc.NETWORK:  # the link hands over only cutovers
            code = await self.closer.cutover(request.fields[15])
            return make_response(self.rules, request, code)
        if cls == rc.RECONCILIATION:
            return await self.reconciler.handle(request)
        return await self.financial.handle(request)
