"""The hub's listener: TCP accept, mutual TLS, allow-list, limits, graceful shutdown.

Handshakes are done here rather than by ``create_server(ssl=...)`` so that every
refusal is ours to classify, log and count, and so that a flood of connections
is capped twice: at most ``max_handshakes`` handshakes in progress and at most
``max_links`` established links; anything over is closed at once, before any
TLS work, so that signed-on links keep the CPU.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from dataclasses import dataclass

from billhub.errors import TlsRefused
from billhub.iso8583.codec import Codec
from billhub.link.core import Timers
from billhub.link.observer import LinkInfo, LinkObserver
from billhub.pipeline.ports import RequestHandler
from billhub.transport.linkproto import LinkProtocol
from billhub.transport.tls import AllowList, refusal_reason


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_links: int = 16
    max_handshakes: int = 8
    handshake_timeout: float = 10.0
    max_in_flight: int = 512


class _Accept(asyncio.Protocol):
    """A raw TCP connection until its TLS handshake is done."""

    def __init__(self, server: HubServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # no byte is read before start_tls wraps the socket
        self.server._accepted(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        pass


class HubServer:
    """Listens for the switch's links and serves each with a :class:`LinkProtocol`."""

    def __init__(
        self,
        codec: Codec,
        handler: RequestHandler,
        ssl_context: ssl.SSLContext,
        allow_list: AllowList,
        observer: LinkObserver,
        *,
        timers: Timers | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.codec = codec
        self.handler = handler
        self.ssl_context = ssl_context
        self.allow_list = allow_list
        self.observer = observer
        self.timers = timers or Timers()
        self.limits = limits or ServerLimits()
        self.links: set[LinkProtocol] = set()
        self._handshakes = 0
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Accept(self), host, port, reuse_address=True, backlog=128
        )
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    @property
    def listening(self) -> bool:
        """Whether the link listener accepts connections (what readiness means)."""
        return self._server is not None and self._server.is_serving() and self._accepting

    @property
    def handshakes_in_progress(self) -> int:
        return self._handshakes

    def _accepted(self, transport: asyncio.Transport) -> None:
        peer = _peer(transport)
        if not self._accepting:
            self.observer.connection_refused(peer, "shutting_down")
            transport.abort()
            return
        if len(self.links) + self._handshakes >= self.limits.max_links:
            self.observer.connection_refused(peer, "too_many_links")
            transport.abort()
            return
        if self._handshakes >= self.limits.max_handshakes:
            self.observer.connection_refused(peer, "too_many_handshakes")
            transport.abort()
            return
        self._handshakes += 1
        task = asyncio.get_running_loop().create_task(self._handshake(transport, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, raw: asyncio.Transport, peer: str) -> None:
        loop = asyncio.get_running_loop()
        proto = LinkProtocol(
            self.codec,
            self.handler,
            self.observer,
            self.timers,
            max_in_flight=self.limits.max_in_flight,
            on_closed=self._link_closed,
        )
        try:
            try:
                tls = await loop.start_tls(
                    raw,
                    proto,
                    self.ssl_context,
                    server_side=True,
                    ssl_handshake_timeout=self.limits.handshake_timeout,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                refused = refusal_reason(exc)
                self.observer.tls_refused(peer, refused.reason, refused.detail)
                raw.abort()
                return
            if tls is None:  # pragma: no cover - start_tls returns None only when closing
                raw.abort()
                return
            assert isinstance(tls, asyncio.Transport)
            obj = tls.get_extra_info("ssl_object")
            der = obj.getpeercert(binary_form=True) if obj is not None else None
            try:
                subject = self.allow_list.check(der)
            except TlsRefused as refused:
                self.observer.tls_refused(peer, refused.reason, refused.detail)
                tls.abort()
                return
        finally:
            self._handshakes -= 1
        if not self._accepting:
            self.observer.connection_refused(peer, "shutting_down")
            tls.abort()
            return
        self.links.add(proto)
        proto.attach(tls, LinkInfo(f"L{next(self._ids)}", peer, subject))

    def _link_closed(self, proto: LinkProtocol) -> None:
        self.links.discard(proto)

    @property
    def signed_on_links(self) -> int:
        return sum(1 for p in self.links if p.signed_on)

    async def shutdown(self, grace: float) -> None:
        """LINK-SPEC 1 graceful close: stop accepting, `91` to new work, finish, close.

        Requests in flight get up to ``grace`` seconds; then links are closed
        whatever remains (their handlers' answers are lost, which the switch's
        own time-out and repeat cover).
        """
        self._accepting = False
        if self._server is not None:
            self._server.close()
        for p in list(self.links):
            p.drain()
        waits = [asyncio.ensure_future(p.idle.wait()) for p in self.links]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace)
            for w in pending:
                w.cancel()
        for p in list(self.links):
            p.close()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    def abort(self) -> None:
        """Close everything at once (a second signal during shutdown)."""
        self._accepting = False
        if self._server is not None:
            self._server.close()
        for p in list(self.links):
            p.abort()


def _peer(transport: asyncio.BaseTransport) -> str:
    addr = transport.get_extra_info("peername")
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)
