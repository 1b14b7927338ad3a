"""A small HTTP/1.1 client for one biller's host: a keep-alive pool over h11.

Why not aiohttp here: the hub's REST path asks a biller one or two questions per
switch message, and aiohttp's client costs about 250-300 CPU µs per call (request
and response objects, header multidicts, its stream reader, per-call tasks and
timers), more than everything else the hub does per message together. The REST
contract (BILLERS.md section 1) needs very little of HTTP: one host, four request
shapes with a JSON body, answers whose status and body are all that is read.

Why h11: the HTTP/1.1 itself (request framing, status line and header parsing,
chunked and close-delimited bodies, interim ``1xx`` answers, when a connection may
be kept) is done by h11, a sans-IO library kept by python-hyper, not by hand here.
Its price: h11 is pure Python and takes about 45 CPU µs per request and answer
(its state machine and header validation), where the hand-written parser it replaced
took under 5; ``bench/rest_client.py`` measures the whole call.

What this module owns is connector policy, which h11 leaves to its caller:

* at most ``limit`` connections, kept alive ``keepalive_s`` when idle; callers
  beyond the limit wait their turn (first come, first served);
* a request on a *reused* connection that the server closed before any byte of
  the answer (a stale keep-alive connection) is sent once more on a new
  connection; REST calls are idempotent by the contract (GET, PUT and DELETE on
  the payment id), so that costs nothing but may ask the biller twice;
* a call that is cancelled, times out or fails mid-answer closes its connection
  (its state is unknown) and frees its slot;
* a bound on the answer's body;
* no redirect is followed, no cookie kept, no proxy taken from the environment.

:class:`ClientConnection` is the sans-IO part: one connection's h11 state, a
request in, bytes out, bytes in, one answer out. Errors are :class:`HttpError`
subclasses with short fixed messages; h11's own messages are never passed on,
because they may quote the bytes received, and a request's bytes hold the
account number (in the URL) and the token.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Final, cast

import h11

__all__ = [
    "Answer",
    "ClientConnection",
    "ConnectFailed",
    "CutShort",
    "Dropped",
    "HttpError",
    "HttpPool",
    "NotHttp",
    "PoolClosed",
    "TlsFailed",
    "TooLarge",
]

_MAX_HEAD: Final = 64 * 1024

#: What h11's events take (a list: h11 is typed so).
Headers = list[tuple[bytes, bytes]]


class HttpError(Exception):
    """A transport-level failure of one call (never the server's answer itself)."""


class ConnectFailed(HttpError):
    """No connection: refused, unreachable, name not found."""


class TlsFailed(HttpError):
    """The TLS handshake failed; ``certificate`` when the server's was refused."""

    def __init__(self, message: str, *, certificate: bool) -> None:
        super().__init__(message)
        self.certificate = certificate


class Dropped(HttpError):
    """The server closed the connection before the first byte of its answer."""


class CutShort(HttpError):
    """The server closed the connection in the middle of its answer."""


class NotHttp(HttpError):
    """The answer is not HTTP/1.x as h11 reads it."""


class TooLarge(HttpError):
    """The answer's body is over the caller's bound."""


class PoolClosed(HttpError):
    """The pool was closed before or during the call."""


class BadRequest(HttpError):
    """h11 refused to frame the request (a header or target that is not HTTP/1.1)."""


class Answer:
    """One response: the status, the body, and whether the connection may be reused."""

    __slots__ = ("body", "keep_alive", "status")

    def __init__(self, status: int, body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.body = body
        self.keep_alive = keep_alive


# ------------------------------------------------------------------------ sans-IO


class ClientConnection:
    """The client side of one HTTP/1.1 connection, an adapter over ``h11.Connection``.

    :meth:`request` frames one request (the bytes to write); :meth:`feed` takes
    the bytes received in order and returns the :class:`Answer` once it is
    complete (``None`` until then), raising :class:`NotHttp` or
    :class:`TooLarge`; :meth:`eof` ends a body delimited by the connection's
    close, or raises :class:`CutShort` / :class:`Dropped`. h11 skips interim
    ``1xx`` answers and decides ``keep_alive`` (HTTP/1.0, ``Connection: close``,
    a close-delimited body); bytes after the answer (the client never pipelines)
    make it not reusable too, reported by :attr:`extra`. After a reusable answer
    the next :meth:`request` starts h11's next cycle on the same connection.
    """

    __slots__ = ("_chunks", "_done", "_h11", "_max_body", "_size", "_status", "extra", "started")

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self._max_body = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._status = 0
        self._done = False
        self.started = False  # any byte of the current answer received
        self.extra = False

    def request(
        self, method: bytes, target: bytes, headers: Headers, body: bytes | None, *, max_body: int
    ) -> bytes:
        """The bytes of one whole request; its answer is then read by :meth:`feed`."""
        conn = self._h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        if body is not None:
            headers = [*headers, (b"content-length", b"%d" % len(body))]
        try:
            data = conn.send(h11.Request(method=method, target=target, headers=headers))
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            raise BadRequest("request not valid HTTP/1.1") from None
        self._max_body = max_body
        self._chunks = []
        self._size = 0
        self._status = 0
        self._done = False
        self.started = False
        self.extra = False
        return data

    def feed(self, data: bytes) -> Answer | None:
        if not data:
            return None
        self.started = True
        if self._done:
            self.extra = True
            return None
        self._h11.receive_data(data)
        return self._events()

    def eof(self) -> Answer:
        """The connection closed: the answer if its body ran to the close."""
        if not self.started:
            raise Dropped("connection dropped before the answer")
        if not self._done:
            self._h11.receive_data(b"")
            try:
                answer = self._events()
            except NotHttp:
                answer = None
            if answer is not None:
                answer.keep_alive = False  # the connection is closed, whatever h11 says
                return answer
        raise CutShort("answer cut short")

    def _events(self) -> Answer | None:
        conn = self._h11
        try:
            while True:
                event = conn.next_event()
                kind = type(event)
                if kind is h11.Data:
                    self._add(cast(h11.Data, event).data)
                elif kind is h11.Response:
                    self._head(cast(h11.Response, event))
                elif kind is h11.EndOfMessage:
                    return self._end()
                elif kind is not h11.InformationalResponse:  # NEED_DATA, ConnectionClosed
                    return None
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise NotHttp("response head too large") from None
            if self._status:
                raise NotHttp("bad body framing") from None
            raise NotHttp("not an HTTP/1.x answer") from None

    def _head(self, response: h11.Response) -> None:
        self._status = response.status_code
        for name, value in response.headers:
            # h11 has checked it is digits, and one value if repeated
            if name == b"content-length" and int(value) > self._max_body:
                raise TooLarge("answer too large")

    def _add(self, data: bytes) -> None:
        if data:
            self._size += len(data)
            if self._size > self._max_body:
                raise TooLarge("answer too large")
            self._chunks.append(data)

    def _end(self) -> Answer:
        conn = self._h11
        self._done = True
        chunks = self._chunks
        body = bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)
        self.extra = bool(conn.trailing_data[0])
        reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
        return Answer(self._status, body, reusable and not self.extra)


# ------------------------------------------------------------------------ connections


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one request at a time, its answer into a future."""

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.http = ClientConnection()
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's transports implement asyncio.Transport
        # without subclassing it, and every call would fail on the hub's loop.
        self.transport = cast(asyncio.Transport, transport)

    def send(
        self, method: bytes, target: bytes, headers: Headers, body: bytes | None, max_body: int
    ) -> asyncio.Future[Answer]:
        assert self.transport is not None
        data = self.http.request(method, target, headers, body, max_body=max_body)
        fut: asyncio.Future[Answer] = self._pool.loop.create_future()
        self.waiter = fut
        self.transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            answer = self.http.feed(data)
        except HttpError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if answer is not None:
            self.waiter = None
            waiter.set_result(answer)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if isinstance(exc, ssl.SSLError) and not self.http.started:
                # e.g. a server that refuses our client certificate after the handshake
                waiter.set_exception(TlsFailed("tls: refused by the server", certificate=False))
            else:
                try:
                    waiter.set_result(self.http.eof())
                except HttpError as err:
                    waiter.set_exception(err)
        self._pool._lost(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


class HttpPool:
    """At most ``limit`` kept-alive connections to one ``host:port``, plain or TLS."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        keepalive_s: float,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._limit = limit
        self._keepalive = keepalive_s
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._opening = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | None = None,
        *,
        max_body: int,
    ) -> Answer:
        """Send one request (h11 frames it, adding ``Content-Length`` for a body)
        and read its answer.

        Raises :class:`HttpError` subclasses; a cancellation closes the connection
        it interrupted.
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn, reused = await self._acquire()
            try:
                answer = await conn.send(method, target, headers, body, max_body)
            except Dropped:
                self._discard(conn)
                if reused and attempt == 0:
                    continue  # a stale keep-alive connection: once more, on a new one
                raise
            except BaseException:
                self._discard(conn)
                raise
            if answer.keep_alive and not self._closed:
                self._release(conn)
            else:
                self._discard(conn)
            return answer
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close every connection; calls in flight and waiting fail with :class:`PoolClosed`
        or :class:`Dropped`; later calls fail with :class:`PoolClosed`. Idempotent."""
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(PoolClosed("connector closed"))
        await asyncio.sleep(0)  # let connection_lost run

    # -- slots -------------------------------------------------------------------------

    async def _acquire(self) -> tuple[_Connection, bool]:
        woken = False
        while True:
            if self._closed:
                raise PoolClosed("connector closed")
            # Newcomers queue behind callers already waiting (first come, first served).
            if woken or not self._queue:
                idle = self._idle
                while idle:
                    conn = idle.pop()
                    if conn.closed:
                        continue
                    if self.loop.time() - conn.idle_since > self._keepalive:
                        self._discard(conn)
                        continue
                    return conn, True
                if len(self._all) + self._opening < self._limit:
                    return await self._open(), False
            fut: asyncio.Future[None] = self.loop.create_future()
            if woken:
                self._queue.appendleft(fut)  # its turn came and went to a newcomer
            else:
                self._queue.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake()  # the turn it was given goes to the next in line
                raise
            woken = True

    async def _open(self) -> _Connection:
        self._opening += 1
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            )
        except BaseException as exc:
            self._opening -= 1
            self._wake()  # a failed open frees its slot for whoever waits
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise TlsFailed("tls: server certificate refused", certificate=True) from None
            if isinstance(exc, ssl.SSLError):
                raise TlsFailed("tls: handshake failed", certificate=False) from None
            if isinstance(exc, OSError):
                reason = exc.strerror or type(exc).__name__
                raise ConnectFailed(f"connect failed: {reason}") from None
            raise
        self._opening -= 1
        if self._closed:
            conn.close()
            raise PoolClosed("connector closed")
        self._all.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        self._wake()

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        if conn in self._all:
            self._all.discard(conn)
            self._wake()

    def _lost(self, conn: _Connection) -> None:
        """A connection closed (by either side): its slot is free."""
        if conn in self._all:
            self._all.discard(conn)
            self._wake()

    def _wake(self) -> None:
        """Give the next waiter its turn (it takes an idle connection or opens one)."""
        queue = self._queue
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)
                return
