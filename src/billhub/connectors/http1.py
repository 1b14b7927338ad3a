"""A small HTTP/1.1 client for one biller's host: a keep-alive pool and a response parser.

Why not aiohttp here: the hub's REST path asks a biller one or two questions per
switch message, and aiohttp's client costs about 250-300 CPU µs per call (request
and response objects, header multidicts, its stream reader, per-call tasks and
timers), more than everything else the hub does per message together. The REST
contract (BILLERS.md section 1) needs very little of HTTP: one host, four request
shapes with a JSON body, answers whose status and body are all that is read. This
module does only that, with a request head assembled from bytes made once.

What it keeps of aiohttp's behaviour, because the connector's contract relies on it:

* at most ``limit`` connections, kept alive ``keepalive_s`` when idle; callers
  beyond the limit wait their turn (first come, first served);
* a request on a *reused* connection that the server closed before any byte of
  the answer (a stale keep-alive connection) is sent once more on a new
  connection; REST calls are idempotent by the contract (GET, PUT and DELETE on
  the payment id), so that costs nothing but may ask the biller twice;
* a call that is cancelled, times out or fails mid-answer closes its connection
  (its state is unknown) and frees its slot;
* no redirect is followed, no cookie kept, no proxy taken from the environment.

The parser (:class:`ResponseParser`) is sans-IO: bytes in, one answer out.
Errors are :class:`HttpError` subclasses with short fixed messages; they never
carry a URL, a header or a body (the URL holds the account number, a header the
token).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Final, cast

__all__ = [
    "Answer",
    "ConnectFailed",
    "CutShort",
    "Dropped",
    "HttpError",
    "HttpPool",
    "NotHttp",
    "PoolClosed",
    "ResponseParser",
    "TlsFailed",
    "TooLarge",
]

_MAX_HEAD: Final = 64 * 1024
_CRLF: Final = b"\r\n"


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
    """The answer is not HTTP/1.x as this parser reads it."""


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


# ------------------------------------------------------------------------ the parser

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class ResponseParser:
    """Reads one HTTP/1.x response from bytes fed in order (sans-IO).

    :meth:`feed` returns the :class:`Answer` once it is complete (``None`` until
    then) and raises :class:`NotHttp` or :class:`TooLarge`; :meth:`eof` ends a
    body delimited by the connection's close, or raises :class:`CutShort`. An
    interim ``1xx`` answer is skipped. Bytes after the answer are an error (the
    client never pipelines), reported by :attr:`extra`.
    """

    __slots__ = (
        "_buf",
        "_chunks",
        "_close",
        "_max_body",
        "_no_body",
        "_remaining",
        "_size",
        "_state",
        "_status",
        "extra",
        "started",
    )

    def __init__(self, max_body: int, *, no_body: bool = False) -> None:
        self._max_body = max_body
        self._no_body = no_body  # the answer to a HEAD request
        self._buf = b""
        self._state = _HEAD
        self._status = 0
        self._close = False
        self._remaining = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self.started = False  # any byte received
        self.extra = False

    def feed(self, data: bytes) -> Answer | None:
        if data:
            self.started = True
        if self._state == _DONE:
            self.extra = self.extra or bool(data)
            return None
        buf = self._buf + data if self._buf else data
        self._buf = b""
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise NotHttp("response head too large")
                    self._buf = buf
                    return None
                head, buf = buf[:end], buf[end + 4 :]
                self._head(head)
            elif state == _LENGTH:
                take = buf[: self._remaining]
                buf = buf[len(take) :]
                self._add(take)
                self._remaining -= len(take)
                if self._remaining:
                    return None
                return self._done(buf)
            elif state == _UNTIL_CLOSE:
                self._add(buf)
                return None
            elif state in (_CHUNK_SIZE, _TRAILER, _CHUNK_END):
                end = buf.find(_CRLF)
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise NotHttp("chunk line too long")
                    self._buf = buf
                    return None
                line, buf = buf[:end], buf[end + 2 :]
                if state == _CHUNK_END:
                    if line:
                        raise NotHttp("chunk not followed by CRLF")
                    self._state = _CHUNK_SIZE
                elif state == _TRAILER:
                    if not line:
                        return self._done(buf)
                else:
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_text, 16)
                    except ValueError:
                        raise NotHttp("bad chunk size") from None
                    if size < 0 or not size_text.isalnum():
                        raise NotHttp("bad chunk size")
                    if self._size + size > self._max_body:
                        raise TooLarge("answer too large")
                    if size == 0:
                        self._state = _TRAILER
                    else:
                        self._remaining = size
                        self._state = _CHUNK_DATA
            else:  # _CHUNK_DATA
                take = buf[: self._remaining]
                buf = buf[len(take) :]
                self._add(take)
                self._remaining -= len(take)
                if self._remaining:
                    return None
                self._state = _CHUNK_END

    def eof(self) -> Answer:
        """The connection closed: the answer if its body ran to the close."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            return Answer(self._status, b"".join(self._chunks), False)
        if self.started:
            raise CutShort("answer cut short")
        raise Dropped("connection dropped before the answer")

    def _head(self, head: bytes) -> None:
        lines = head.split(_CRLF)
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
            raise NotHttp("not an HTTP/1.x answer")
        try:
            status = int(status_line[9:12])
        except ValueError:
            raise NotHttp("bad status line") from None
        if status_line[8:9] != b" " or not 100 <= status <= 999:
            raise NotHttp("bad status line")
        close = status_line[7:8] == b"0"  # HTTP/1.0: closed unless it says keep-alive
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise NotHttp("bad header line")
            key = name.strip().lower()
            if key == b"content-length":
                try:
                    n = int(value.strip())
                except ValueError:
                    raise NotHttp("bad content-length") from None
                if n < 0 or (length is not None and length != n):
                    raise NotHttp("bad content-length")
                length = n
            elif key == b"transfer-encoding":
                codings = [c.strip() for c in value.lower().split(b",")]
                if codings[-1] != b"chunked":
                    raise NotHttp("unsupported transfer-encoding")
                chunked = True
            elif key == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens:
                    close = False
        if 100 <= status < 200:  # an interim answer: the real one follows
            self._state = _HEAD
            return
        self._status = status
        self._close = close
        if self._no_body or status in (204, 304):
            self._remaining = 0
            self._state = _LENGTH
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            if length > self._max_body:
                raise TooLarge("answer too large")
            self._remaining = length
            self._state = _LENGTH
        else:
            self._close = True
            self._state = _UNTIL_CLOSE

    def _add(self, data: bytes) -> None:
        if data:
            self._size += len(data)
            if self._size > self._max_body:
                raise TooLarge("answer too large")
            self._chunks.append(data)

    def _done(self, rest: bytes) -> Answer:
        self._state = _DONE
        self.extra = bool(rest)
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        return Answer(self._status, body, not self._close and not self.extra)


# ------------------------------------------------------------------------ connections


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one request at a time, its answer into a future."""

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's transports implement asyncio.Transport
        # without subclassing it, and every call would fail on the hub's loop.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, data: bytes, max_body: int) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.parser = ResponseParser(max_body)
        fut: asyncio.Future[Answer] = self._pool.loop.create_future()
        self.waiter = fut
        self.transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        parser, waiter = self.parser, self.waiter
        if parser is None or waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            answer = parser.feed(data)
        except HttpError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if answer is not None:
            self.parser = self.waiter = None
            waiter.set_result(answer)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser, waiter = self.parser, self.waiter
        self.parser = self.waiter = None
        if waiter is not None and not waiter.done():
            if parser is None:
                waiter.set_exception(Dropped("connection dropped before the answer"))
            elif isinstance(exc, ssl.SSLError) and not parser.started:
                # e.g. a server that refuses our client certificate after the handshake
                waiter.set_exception(TlsFailed("tls: refused by the server", certificate=False))
            else:
                try:
                    waiter.set_result(parser.eof())
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

    async def request(self, data: bytes, *, max_body: int) -> Answer:
        """Send one whole request (head and body) and read its answer.

        Raises :class:`HttpError` subclasses; a cancellation closes the connection
        it interrupted.
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn, reused = await self._acquire()
            try:
                answer = await conn.send(data, max_body)
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
