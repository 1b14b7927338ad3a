"""What the network shell asks of the application: answer one request.

A handler receives each request that the link did not answer itself (0200,
0420, 0500 and cutover 0800 on a signed-on link) and returns its response.
It must not raise: the shell turns an exception into `96` and logs it, but a
handler that raises has lost track of a request.
"""

from __future__ import annotations

from typing import Protocol

from billhub.iso8583.message import Message
from billhub.link.observer import LinkInfo


class RequestHandler(Protocol):
    async def handle(self, request: Message, link: LinkInfo) -> Message: ...
