"""A small HTTP/1.1 client for one biller's host: a keep-alive pool, answers read by llhttp.

Why not aiohttp here: the hub's REST path asks a biller one or two questions per
switch message, and aiohttp's client costs about 250-300 CPU µs per call (request
and response objects, header multidicts, its stream reader, per-call tasks and
timers), more than everything else the hub does per message together. The REST
contract (BILLERS.md section 1) needs very little of HTTP: one host, four request
shapes with a JSON body, answers whose status and body are all that is read.

Why httptools: the answers (status line and headers, chunked and close-delimited
bodies, interim ``1xx`` answers, when a connection may be kept) are parsed by
llhttp, Node.js's HTTP parser in C, through httptools (MagicStack, uvloop's
authors), not by hand here; about 2 CPU µs an answer, where h11 (pure Python)
takes about 45. The request, one line and the connector's own headers, is
framed here.

What this module owns is connector policy, which the parser leaves to its caller:

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

:class:`ClientConnection` is the sans-IO part: a request in, bytes out, bytes
in, one answer out. Errors are :class:`HttpError`
subclasses with short fixed messages, never the parser's, which may quote the
bytes received (a request's bytes hold the account number and the token).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Final, cast

import httptools

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
    """The answer is not HTTP/1.x as llhttp reads it."""


class TooLarge(HttpError):
    """The answer's body is over the caller's bound."""


class PoolClosed(HttpError):
    """The pool was closed before or during the call."""


class Answer:
    """One response: the status, the body, and whether the connection may be reused."""

    __slots__ = ("body", "keep_alive", "status")

    def __init__(self, status: int, body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.body = body
        self.keep_alive = keep_alive


# ------------------------------------------------------------------------ sans-IO


class ClientConnection:
    """The client side of one HTTP/1.1 connection: request bytes out, an answer in.

    :meth:`request` frames one request (the bytes to write; the headers are the
    caller's, checked by it); :meth:`feed` takes the bytes received in order and
    returns the :class:`Answer` once it is complete (``None`` until then), raising
    :class:`NotHttp` or :class:`TooLarge`; :meth:`eof` ends a body delimited by
    the connection's close, or raises :class:`CutShort` / :class:`Dropped`. The
    answer is read by httptools (llhttp): interim ``1xx`` answers are skipped, and
    llhttp decides ``keep_alive`` (HTTP/1.0, ``Connection: close``); bytes after the
    answer (the client never pipelines) make it not reusable, reported by
    :attr:`extra`.
    """

    __slots__ = (
        "_chunks",
        "_done",
        "_framed",
        "_head_size",
        "_keep",
        "_max_body",
        "_parser",
        "_refused",
        "_size",
        "_status",
        "extra",
        "started",
    )

    def __init__(self) -> None:
        self._parser: httptools.HttpResponseParser | None = None
        self._max_body = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._status = 0
        self._keep = False
        self._framed = False  # a Content-Length or chunked: the body does not end at the close
        self._done = False
        self._refused: HttpError | None = None
        self.started = False  # any byte of the current answer received
        self.extra = False

    def request(
        self, method: bytes, target: bytes, headers: Headers, body: bytes | None, *, max_body: int
    ) -> bytes:
        """The bytes of one whole request; its answer is then read by :meth:`feed`."""
        head = b"%s %s HTTP/1.1\r\n" % (method, target)
        head += b"".join([b"%s: %s\r\n" % pair for pair in headers])
        if body is None:
            data = head + b"\r\n"
        else:
            data = head + b"content-length: %d\r\n\r\n" % len(body) + body
        self._parser = httptools.HttpResponseParser(self)
        self._max_body = max_body
        self._chunks = []
        self._size = self._head_size = self._status = 0
        self._keep = self._framed = self._done = False
        self._refused = None
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
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refused is not None:
                raise self._refused from None
            if not self._done:
                raise NotHttp(
                    "bad body framing" if self._status else "not an HTTP/1.x answer"
                ) from None
            self.extra = True  # bytes after the answer that are not HTTP either
        if not self._done:
            return None
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return Answer(self._status, body, self._keep and not self.extra)

    def eof(self) -> Answer:
        """The connection closed: the answer if its body ran to the close."""
        if not self.started:
            raise Dropped("connection dropped before the answer")
        if self._status and not self._framed and not self._done:
            self._done = True
            return Answer(self._status, b"".join(self._chunks), False)
        raise CutShort("answer cut short")

    # -- httptools' callbacks (an exception in one fails its feed_data) ------------------

    def _refuse(self, error: HttpError) -> None:
        self._refused = error
        raise error

    def on_message_begin(self) -> None:
        if self._done:
            self.extra = True  # a second answer begins: the connection is out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > _MAX_HEAD:
            self._refuse(NotHttp("response head too large"))
        key = name.lower()
        if key == b"content-length":
            self._framed = True
            if value.isdigit() and int(value) > self._max_body:
                self._refuse(TooLarge("answer too large"))
        elif key == b"transfer-encoding":
            self._framed = True
            if not value.lower().rstrip().endswith(b"chunked"):  # llhttp would read to the close
                self._refuse(NotHttp("unsupported transfer-encoding"))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        self._keep = self._parser.should_keep_alive()
        self._head_size = 0

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._refuse(TooLarge("answer too large"))
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._done:
            self.extra = True  # a second answer: the connection is out of step
        elif 100 <= self._status < 200:  # an interim answer: the real one follows
            self._status = 0
            self._framed = False
        else:
            self._done = True


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
        """Send one request (framed with ``Content-Length`` for a body)
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
