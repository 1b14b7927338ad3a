"""The REST connector's HTTP/1.1 client: the answers it reads, and a pool that never leaks.

The sans-IO client side (httptools under it) frames a request and is fed bytes as a server
could send them (in pieces, chunked, delimited by the close); the pool is driven through :class:`RestConnector` against servers that
answer in the ways aiohttp's server does and in the ways it never does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
from aiohttp import web

from billhub.config import RestSettings
from billhub.connectors.http1 import (
    Answer,
    ClientConnection,
    CutShort,
    Dropped,
    NotHttp,
    TooLarge,
)
from billhub.connectors.rest import RestConnector
from billhub.errors import BillerUnavailable, ConfigError
from billhub.pipeline.model import PaymentOrder
from billhub.simulator.demo_data import generate_accounts
from billhub.simulator.rest_biller import Faults, RestBiller
from billhub.transport import eventloop

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
    uvloop = None

TOKEN = "tok-http1-4d2c"
TODAY = date(2026, 11, 24)
ACCOUNTS = generate_accounts("01", 10, 7, today=TODAY)
OPEN = ACCOUNTS[0]
BILLS = (
    b'{"customer_name":"x","status":"active","partial_allowed":false,"min_payment":0,'
    b'"bills":[{"bill_id":"B-1","period":"202611","due_date":"2026-12-15","amount":5}]}'
)


def asked(max_body: int = 100, method: bytes = b"GET") -> ClientConnection:
    """A connection whose request has been framed: it now reads that request's answer."""
    conn = ClientConnection()
    conn.request(method, b"/x", [(b"host", b"h")], None, max_body=max_body)
    return conn


def feed_all(parser: ClientConnection, data: bytes, step: int) -> list[Answer]:
    got = []
    for i in range(0, len(data), step):
        answer = parser.feed(data[i : i + step])
        if answer is not None:
            got.append(answer)
    return got


@pytest.mark.parametrize("step", [1, 7, 10_000])
def test_content_length_answer_in_any_pieces(step: int) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    (answer,) = feed_all(asked(), raw + b'{"a": "bc"}', step)
    assert (answer.status, answer.body, answer.keep_alive) == (200, b'{"a": "bc"}', True)


@pytest.mark.parametrize("step", [1, 5, 10_000])
def test_chunked_answer_with_extensions_and_trailers(step: int) -> None:
    raw = (
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"er\r\n'
        b'A\r\nror": "x"}\r\n'
        b"0\r\nX-Trailer: t\r\n\r\n"
    )
    (answer,) = feed_all(asked(), raw, step)
    assert (answer.status, answer.body, answer.keep_alive) == (404, b'{"error": "x"}', True)


def test_interim_answer_is_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    (answer,) = feed_all(asked(), raw, 3)
    assert (answer.status, answer.body) == (200, b"{}")


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
    ],
)
def test_connection_not_reused_when_the_server_says_so(head: bytes) -> None:
    answer = asked().feed(head + b"{}")
    assert answer is not None and not answer.keep_alive


def test_body_until_the_close() -> None:
    parser = asked()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\n{") is None
    assert parser.feed(b"}") is None
    answer = parser.eof()
    assert (answer.body, answer.keep_alive) == (b"{}", False)


def test_no_content_has_no_body() -> None:
    answer = asked().feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert answer is not None and (answer.status, answer.body) == (204, b"")


def test_bytes_after_the_answer_close_the_connection() -> None:
    parser = asked()
    answer = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP")
    assert answer is not None and not answer.keep_alive


def test_close_before_or_during_the_answer() -> None:
    with pytest.raises(Dropped):
        asked().eof()
    parser = asked()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
    with pytest.raises(CutShort):
        parser.eof()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n"
        + b"x" * 64
        + b"\r\n41\r\n"
        + b"x" * 37,
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 101,
    ],
)
def test_body_over_the_bound(raw: bytes) -> None:
    with pytest.raises(TooLarge):
        asked().feed(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 2xx OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000,
    ],
)
def test_not_http(raw: bytes) -> None:
    with pytest.raises(NotHttp) as refused:
        asked().feed(raw)
    # a fixed reason, never the bytes received
    assert str(refused.value) in {
        "not an HTTP/1.x answer",
        "bad body framing",
        "response head too large",
        "unsupported transfer-encoding",
    }


def test_the_request_as_framed() -> None:
    conn = ClientConnection()
    data = conn.request(b"PUT", b"/p/1", [(b"host", b"h")], b'{"a":1}', max_body=100)
    assert data == b'PUT /p/1 HTTP/1.1\r\nhost: h\r\ncontent-length: 7\r\n\r\n{"a":1}'


def test_a_kept_connection_reads_the_next_answer() -> None:
    conn = asked()
    first = conn.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert first is not None and first.keep_alive
    conn.request(b"GET", b"/y", [(b"host", b"h")], None, max_body=100)
    second = conn.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n[1]")
    assert second is not None and (second.status, second.body) == (404, b"[1]")


def test_close_during_the_head_or_a_chunk() -> None:
    for raw in (
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ):
        conn = asked()
        assert conn.feed(raw) is None
        with pytest.raises(CutShort):
            conn.eof()


# --- the pool, through the connector ---------------------------------------------------


def make(url: str, *, max_concurrency: int = 2, call_timeout: float = 2.0) -> RestConnector:
    return RestConnector(
        "1001",
        RestSettings(url, TOKEN),
        max_concurrency=max_concurrency,
        call_timeout=call_timeout,
    )


async def serve(handler: web.RequestHandler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def chunked() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(BILLS), 40):
            await resp.write(BILLS[i : i + 40])
        await resp.write_eof()
        return resp

    async for url in serve(handler):
        yield url


@pytest.fixture
async def closing() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=BILLS, headers={"Connection": "close"})

    async for url in serve(handler):
        yield url


async def test_chunked_answers_are_read(chunked: str) -> None:
    c = make(chunked)
    try:
        for _ in range(3):  # and the connection is reused
            assert (await c.open_bills("0100000001")).bills[0].amount == 5
    finally:
        await c.close()


async def test_a_server_that_closes_after_each_answer(closing: str) -> None:
    c = make(closing, max_concurrency=1)
    try:
        got = await asyncio.gather(*(c.open_bills("0100000001") for _ in range(5)))
    finally:
        await c.close()
    assert [g.customer_name for g in got] == ["x"] * 5


@pytest.fixture
async def biller() -> AsyncIterator[RestBiller]:
    b = RestBiller(ACCOUNTS, TOKEN)
    await b.start()
    yield b
    await b.stop()


def order() -> PaymentOrder:
    return PaymentOrder(
        payment_id="pay-1",
        account=OPEN.account,
        bill_id=None,
        amount=OPEN.total_due,
        settlement_date=TODAY,
        acquirer="600001",
        rrn="633012000123",
        channel="6013",
        paid_at=datetime(2026, 11, 24, 9, 45, 12, tzinfo=UTC),
    )


async def test_cancelled_calls_never_leak_a_connection(biller: RestBiller) -> None:
    """One connection: a call holding it and one waiting for it are both cancelled;
    the next call still gets a connection."""
    biller.set_faults(Faults(hang=True))
    c = make(biller.url, max_concurrency=1)
    try:
        holding = asyncio.create_task(c.post_payment(order()))
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(c.open_bills(OPEN.account))
        await asyncio.sleep(0.05)
        waiting.cancel()
        holding.cancel()
        for task in (waiting, holding):
            with pytest.raises(asyncio.CancelledError):
                await task
        biller.set_faults(Faults())
        async with asyncio.timeout(2):
            assert (await c.open_bills(OPEN.account)).customer_name == OPEN.customer_name
    finally:
        await c.close()


async def test_a_token_that_would_end_the_header_is_refused() -> None:

    with pytest.raises(ConfigError, match="token"):
        RestConnector(
            "1001", RestSettings("http://h", "a\r\nX: y"), max_concurrency=1, call_timeout=1
        )


async def test_not_http_is_unavailable() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(talk, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = make(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(BillerUnavailable, match="not an HTTP"):
            await c.open_bills(OPEN.account)
    finally:
        await c.close()
        server.close()
        await server.wait_closed()


@pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")
def test_the_connector_asks_a_biller_on_uvloop_as_the_hub_runs() -> None:
    """The hub serves on uvloop where installed: a payment and an inquiry over its pool."""

    async def scenario() -> tuple[str, str]:
        b = RestBiller(ACCOUNTS, TOKEN)
        await b.start()
        c = make(b.url)
        try:
            bills = await c.open_bills(OPEN.account)
            receipt = await c.post_payment(order())
            return bills.customer_name, receipt
        finally:
            await c.close()
            await b.stop()

    name, receipt = eventloop.run(scenario(), "uvloop")
    assert name == OPEN.customer_name
    assert receipt
