"""The switch's side of a link, as a library: connect over mTLS, sign on, send, match.

A real program over real sockets: it uses the same sans-IO :class:`Link` as the
hub, in the switch role, so matching (MTI class + DE 7 + DE 11 + DE 32) and the
hub's echo tests are handled exactly as the contract says. Tests, the demo and
the benchmarks drive the hub through it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

from billhub.errors import BillhubError, LinkClosed
from billhub.iso8583 import codes as rc
from billhub.iso8583.codec import Codec
from billhub.iso8583.message import Message
from billhub.link.core import Link, Role, Timers
from billhub.link.events import (
    AnsweredByLink,
    LinkTerminated,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
)
from billhub.link.responses import make_response
from billhub.transport.linkproto import StanCounter, transmission_time


class SwitchLink(asyncio.Protocol):
    """One link opened by the simulated switch."""

    def __init__(self, codec: Codec, timers: Timers | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.codec = codec
        self.link = Link(
            codec,
            Role.SWITCH,
            self._loop.time(),
            timers=timers or Timers(),
            next_stan=StanCounter(),
            transmission_time=transmission_time,
        )
        self._transport: asyncio.Transport | None = None
        self._waiters: dict[int, asyncio.Future[Message]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self.answered_by_link: list[AnsweredByLink] = []
        self.echoes_answered = 0

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        codec: Codec,
        *,
        timers: Timers | None = None,
        server_hostname: str | None = "localhost",
        timeout: float = 10.0,
    ) -> SwitchLink:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: cls(codec, timers),
                host,
                port,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context else None,
            ),
            timeout,
        )
        return proto

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.link.receive_data(data, self._loop.time())
        self._after()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close("connection lost")
        self._after()
        if self._timer is not None:
            self._timer.cancel()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(LinkClosed("connection lost"))
        self._waiters.clear()
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc else "closed by peer")

    # -- requests ------------------------------------------------------------------

    def send(self, msg: Message, timeout: float = 30.0) -> asyncio.Future[Message]:
        """Send a request (DE 7 and DE 11 filled in when absent); the future gets its answer."""
        if 7 not in msg.fields:
            msg.fields[7] = transmission_time()
        if 11 not in msg.fields:
            msg.fields[11] = self.link._next_stan()
        fut: asyncio.Future[Message] = self._loop.create_future()
        token = self.link.send_request(msg, self._loop.time(), timeout)
        self._waiters[token] = fut
        self._after()
        return fut

    async def request(self, msg: Message, timeout: float = 30.0) -> Message:
        return await self.send(msg, timeout)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are: for tests of framing and format errors."""
        assert self._transport is not None
        self._transport.write(data)

    async def network(self, code: str, settlement_date: str | None = None) -> Message:
        return await self.request(self.link.network_request(code, settlement_date))

    async def sign_on(self) -> Message:
        return await self.network(rc.SIGN_ON)

    async def sign_off(self) -> Message:
        return await self.network(rc.SIGN_OFF)

    async def echo(self) -> Message:
        return await self.network(rc.ECHO)

    async def cutover(self, mmdd: str) -> Message:
        return await self.network(rc.CUTOVER, mmdd)

    async def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            if self._transport is not None:
                self._transport.abort()

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    # -- plumbing --------------------------------------------------------------------

    def _after(self) -> None:
        link = self.link
        while (ev := link.next_event()) is not None:
            if isinstance(ev, ResponseReceived):
                fut = self._waiters.pop(ev.token, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev.response)
            elif isinstance(ev, RequestFailed):
                fut = self._waiters.pop(ev.token, None)
                if fut is not None and not fut.done():
                    fut.set_exception(ev.error)
            elif isinstance(ev, RequestReceived):
                # The hub sends the switch nothing but echo tests (answered by the link).
                link.send_response(
                    ev.request, make_response(link.rules, ev.request, rc.INVALID_TRANSACTION)
                )
            elif isinstance(ev, AnsweredByLink):
                self.answered_by_link.append(ev)
                if ev.reason == "echo":
                    self.echoes_answered += 1
            elif isinstance(ev, LinkTerminated) and self._transport is not None:
                self._transport.abort()
        data = link.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
        self._arm()

    def _arm(self) -> None:
        at = self.link.get_timer()
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.link.handle_timer(self._loop.time())
        self._after()


class SwitchError(BillhubError):
    """The simulator could not do what it was asked (for the CLI's one-line errors)."""
