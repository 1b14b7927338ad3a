"""The hub's listener: TCP accept, source allow-list, hello deadline, mutual TLS, limits.

Anyone on the network path can open TCP connections, and the switch must still get a
new link in within seconds (issue 14). So every connection goes through three gates,
each cheaper than the next and each with a bound that makes room rather than refuses:

1. **Source** (``allowed_sources``): checked at accept, before a byte is read.
2. **Hello**: the connection must send a whole TLS ClientHello within
   ``hello_timeout`` (about 2 s). Nothing is read meanwhile: the listener peeks at the
   socket, with ``SO_RCVLOWAT`` set to the bytes still missing, so a trickle of one
   byte a second costs no wake-ups.
3. **Handshake**: TLS, then the subject allow-list, within ``handshake_timeout``.

Hello and handshake together are "handshakes in progress", bounded per source address
(``max_handshakes_per_source``) and in total (``max_handshakes``). At a bound the
oldest unfinished one gives way to the new connection: first one still waiting for its
ClientHello, only then one in TLS. A switch sends its ClientHello at once, so silent or
slow connections never displace it. Links (``max_links``) work the same way one step
later: a new authenticated link displaces the oldest link that never signed on; links
that signed on are never touched, and a new link finding only those is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from billhub.errors import TlsRefused
from billhub.iso8583.codec import Codec
from billhub.link.core import State, Timers
from billhub.link.facts import ConnectionRefusal, LinkInfo, LinkSubscriber, TlsRefusal
from billhub.pipeline.ports import RequestHandler
from billhub.transport.hello import MAX_HELLO, NotTls, hello_needed
from billhub.transport.linkproto import LinkProtocol
from billhub.transport.tls import AllowList, refusal_reason

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Connections taken from the listening socket per loop turn. One: between two
#: accepts the loop handles the hellos that arrived, so a burst of newcomers cannot
#: displace a connection whose ClientHello is already on its way.
_ACCEPT_BATCH = 1


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_links: int = 16
    max_handshakes: int = 64
    max_handshakes_per_source: int = 16
    hello_timeout: float = 2.0
    handshake_timeout: float = 10.0
    max_in_flight: int = 512
    allowed_sources: Sequence[Network] | None = None
    #: ``SO_REUSEPORT`` on the listening socket: hub processes that all set it share
    #: the port, and the kernel hands each new connection to one of them (by a hash of
    #: its addresses). A process that does not set it still gets ``EADDRINUSE``.
    reuse_port: bool = False


class _Pending:
    """A connection between accept and link: waiting for its ClientHello, or in TLS."""

    __slots__ = ("in_tls", "lowat", "peer", "sock", "source", "started", "task", "timer")

    def __init__(self, sock: socket.socket, peer: str, source: str) -> None:
        self.sock = sock
        self.peer = peer
        self.source = source
        self.in_tls = False
        self.lowat = 1
        self.started = False  # the socket belongs to asyncio's transport from then on
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None


class HubServer:
    """Listens for the switch's links and serves each with a :class:`LinkProtocol`."""

    def __init__(
        self,
        codec: Codec,
        handler: RequestHandler,
        ssl_context: ssl.SSLContext,
        allow_list: AllowList,
        events: LinkSubscriber,
        *,
        timers: Timers | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.codec = codec
        self.handler = handler
        self.ssl_context = ssl_context
        self.allow_list = allow_list
        self.events = events
        self.timers = timers or Timers()
        self.limits = limits or ServerLimits()
        # Insertion-ordered: the first is the oldest (what gives way first).
        self.links: dict[LinkProtocol, None] = {}
        self._pending: dict[_Pending, None] = {}
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.create_server(
            addr, family=family, backlog=128, reuse_port=self.limits.reuse_port
        )
        sock.setblocking(False)
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._on_acceptable)
        return int(sock.getsockname()[1])

    @property
    def listening(self) -> bool:
        """Whether the link listener accepts connections (what readiness means)."""
        return self._sock is not None and self._accepting

    @property
    def handshakes_in_progress(self) -> int:
        return len(self._pending)

    # -- accept ---------------------------------------------------------------------

    def _on_acceptable(self) -> None:
        sock = self._sock
        assert sock is not None and self._loop is not None
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # gone before we took it
                continue
            except OSError:  # EMFILE and the like: stop accepting for a second, as asyncio does
                self.events(ConnectionRefusal("-", "accept_failed"))
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(1.0, self._resume_accepting)
                return
            conn.setblocking(False)
            self._accepted(conn, addr)

    def _resume_accepting(self) -> None:
        if self._sock is not None and self._accepting and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_acceptable)

    def _accepted(self, conn: socket.socket, addr: object) -> None:
        source, peer = _peer(addr)
        if not self._accepting:
            self._refuse_conn(conn, peer, "shutting_down")
            return
        allowed = self.limits.allowed_sources
        if allowed is not None and not _in(source, allowed):
            self._refuse_conn(conn, peer, "source_not_allowed")
            return
        if len(self.links) >= self.limits.max_links and not any(
            p.link.state is State.CONNECTED for p in self.links
        ):
            self._refuse_conn(conn, peer, "too_many_links")
            return
        same = [p for p in self._pending if p.source == source]
        if len(same) >= self.limits.max_handshakes_per_source:
            self._displace(same)
        elif len(self._pending) >= self.limits.max_handshakes:
            self._displace(list(self._pending))
        p = _Pending(conn, peer, source)
        self._pending[p] = None
        loop = self._loop
        assert loop is not None
        p.timer = loop.call_later(self.limits.hello_timeout, self._hello_late, p)
        self._want(p, 5)
        loop.add_reader(conn.fileno(), self._on_hello_bytes, p)
        self._examine(p, woke=False)  # the switch writes its hello at once

    def _refuse_conn(self, conn: socket.socket, peer: str, reason: str) -> None:
        self.events(ConnectionRefusal(peer, reason))
        _close(conn)

    def _displace(self, candidates: list[_Pending]) -> None:
        """Close the oldest still waiting for its hello, else the oldest in TLS.

        A candidate whose whole ClientHello is already in the socket buffer (its
        readiness not yet handled in a flood) is moved on to TLS, not displaced.
        """
        for p in candidates:
            if not p.in_tls and p in self._pending:
                self._examine(p, woke=False)
                if p in self._pending and not p.in_tls:
                    self.events(ConnectionRefusal(p.peer, "handshake_displaced"))
                    self._drop(p)
                    return
        if candidates and candidates[0] in self._pending:
            self.events(ConnectionRefusal(candidates[0].peer, "handshake_displaced"))
            self._drop(candidates[0])

    # -- hello ----------------------------------------------------------------------

    def _want(self, p: _Pending, total: int) -> None:
        """Wake up only once ``total`` bytes are in (or the peer closed)."""
        p.lowat = total
        try:
            p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, total)
        except OSError:  # pragma: no cover - platforms without SO_RCVLOWAT
            pass

    def _on_hello_bytes(self, p: _Pending) -> None:
        self._examine(p, woke=True)

    def _examine(self, p: _Pending, *, woke: bool) -> None:
        """Peek: a whole hello goes on to TLS; not TLS, or closed, is refused."""
        try:
            data = p.sock.recv(MAX_HELLO + 4096, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._refuse_tls(p, "connection_lost", f"socket error before the hello: {exc}")
            return
        if not data and not woke:
            return
        if not data:
            self._refuse_tls(p, "connection_lost", "the peer closed before its ClientHello")
            return
        try:
            need = hello_needed(data)
        except NotTls as exc:
            self._refuse_tls(p, "handshake_failed", f"the peer does not speak TLS ({exc})")
            return
        if need == 0:
            self._hello_done(p)
        elif woke and len(data) < p.lowat:  # readable with less than asked: half-closed
            self._refuse_tls(p, "connection_lost", "the peer closed mid-ClientHello")
        else:
            self._want(p, need)

    def _hello_late(self, p: _Pending) -> None:
        p.timer = None
        if p in self._pending and not p.in_tls:
            self._refuse_tls(
                p, "hello_timeout", f"no whole ClientHello in {self.limits.hello_timeout:g}s"
            )

    def _hello_done(self, p: _Pending) -> None:
        assert self._loop is not None
        self._loop.remove_reader(p.sock.fileno())
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        self._want(p, 1)
        p.in_tls = True
        task = self._loop.create_task(self._handshake(p))
        p.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: _close(p.sock) if not p.started else None)

    def _refuse_tls(self, p: _Pending, reason: str, detail: str) -> None:
        self.events(TlsRefusal(p.peer, reason, detail))
        self._drop(p)

    def _drop(self, p: _Pending) -> None:
        """Forget a pending connection and close it, in whichever phase it is."""
        self._pending.pop(p, None)
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        if p.task is not None:
            p.task.cancel()  # connect_accepted_socket closes its transport
            return
        if self._loop is not None:
            self._loop.remove_reader(p.sock.fileno())
        _close(p.sock)

    # -- TLS and the link -----------------------------------------------------------

    async def _handshake(self, p: _Pending) -> None:
        loop = asyncio.get_running_loop()
        proto = LinkProtocol(
            self.codec,
            self.handler,
            self.events,
            self.timers,
            max_in_flight=self.limits.max_in_flight,
            on_closed=self._link_closed,
        )
        peer = p.peer
        p.started = True
        try:
            try:
                tls, _ = await loop.connect_accepted_socket(
                    lambda: proto,
                    p.sock,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.limits.handshake_timeout,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                # asyncio has closed the transport, and with it the socket.
                refused = refusal_reason(exc)
                self.events(TlsRefusal(peer, refused.reason, refused.detail))
                return
            # No isinstance(tls, asyncio.Transport): uvloop's transports implement it
            # without subclassing it, and the hub would refuse every link on uvloop.
            obj = tls.get_extra_info("ssl_object")
            der = obj.getpeercert(binary_form=True) if obj is not None else None
            try:
                subject = self.allow_list.check(der)
            except TlsRefused as refused:
                self.events(TlsRefusal(peer, refused.reason, refused.detail))
                tls.abort()
                return
        finally:
            self._pending.pop(p, None)
        if not self._accepting:
            self.events(ConnectionRefusal(peer, "shutting_down"))
            tls.abort()
            return
        if len(self.links) >= self.limits.max_links and not self._make_room():
            self.events(ConnectionRefusal(peer, "too_many_links"))
            tls.abort()
            return
        self.links[proto] = None
        proto.attach(tls, LinkInfo(f"L{next(self._ids)}", peer, subject))

    def _make_room(self) -> bool:
        """Close the oldest link that never signed on; False if every link signed on."""
        for old in self.links:
            if old.link.state is State.CONNECTED:
                old.terminate("displaced", "a new authenticated link needed its slot")
                self.links.pop(old, None)
                return True
        return False

    def _link_closed(self, proto: LinkProtocol) -> None:
        self.links.pop(proto, None)

    @property
    def signed_on_links(self) -> int:
        return sum(1 for p in self.links if p.signed_on)

    # -- shutdown -------------------------------------------------------------------

    def _stop_listening(self) -> None:
        self._accepting = False
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for p in list(self._pending):
            self._drop(p)

    async def shutdown(self, grace: float) -> None:
        """LINK-SPEC 1 graceful close: stop accepting, `91` to new work, finish, close.

        Requests in flight get up to ``grace`` seconds; then links are closed
        whatever remains (their handlers' answers are lost, which the switch's
        own time-out and repeat cover).
        """
        self._stop_listening()
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
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    def abort(self) -> None:
        """Close everything at once (a second signal during shutdown)."""
        self._stop_listening()
        for p in list(self.links):
            p.abort()


def _peer(addr: object) -> tuple[str, str]:
    """The source address (for the per-source bound) and ``host:port`` (for logs)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), f"{addr[0]}:{addr[1]}"
    return str(addr), str(addr)


def _in(source: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in networks)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:  # pragma: no cover
        pass
