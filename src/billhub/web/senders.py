"""Code senders (:class:`~billhub.requests.ports.CodeSender`): an SMS gateway, or a file.

The HTTP gateway is called as ``POST {url}`` with a bearer token and the JSON body
``{"to": "0944123456", "text": "..."}``; any 2xx is sent. The development sender
appends one line per message to a file (the demo prints where), so codes can be
read without a telephone network.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from billhub.errors import BillhubError


class SendFailed(BillhubError):
    """The gateway did not take the message."""


class FileCodeSender:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, phone: str, text: str) -> None:
        line = f"{datetime.now(UTC).isoformat(timespec='seconds')}\t{phone}\t{text}\n"

        def write() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)

        await asyncio.to_thread(write)


class HttpSmsSender:
    def __init__(self, url: str, token: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, phone: str, text: str) -> None:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(
                    self.url,
                    json={"to": phone, "text": text},
                    headers={"Authorization": f"Bearer {self._token}"},
                ) as resp,
            ):
                if resp.status // 100 != 2:
                    raise SendFailed(f"SMS gateway answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendFailed(f"SMS gateway unreachable: {type(exc).__name__}") from None
