"""The financial handler until routing exists: every request honestly answered `96`.

A placeholder that says what it is: the hub is up and its link works, but no
biller is wired yet, so nothing is approved and nothing is silently dropped.
"""

from __future__ import annotations

from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkRules
from billhub.link.observer import LinkInfo
from billhub.link.responses import make_response


class UnroutedHandler:
    """Answers every request `96` (system malfunction: not routed)."""

    reason = "not_routed"

    def __init__(self, rules: LinkRules) -> None:
        self.rules = rules

    async def handle(self, request: Message, link: LinkInfo) -> Message:
        return make_response(self.rules, request, "96")
