"""Issue 14 over real sockets: floods that must never lock a new switch link out.

Each flood runs for a few seconds beside the hub on loopback (so every connection comes
from one source address, the hardest case for the per-source bound). Throughout it, a
new switch link (the simulator, with the switch's certificate) connects, signs on and
gets an inquiry answered, every try, each within the issue's bound of 3 s. The hub's
log is counted too: refusals make one summary line per reason per interval, not one
line each.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.hubharness import Recorder, RunningHub, base_config

from billhub.app.hub import build_hub
from billhub.config import parse_config
from billhub.iso8583 import codes as rc
from billhub.iso8583.message import Message
from billhub.observability.logs import LogObserver
from billhub.simulator import messages as m
from billhub.simulator.switch import SwitchLink

FLOOD_S = 5.0  # each flood; the suite must stay small
SIGN_ON_BOUND_S = 3.0  # the functional bound for a new link
SUMMARY_S = 1.0  # refusal summary interval in these tests


@dataclass
class Lines:
    """The log sink: every line the hub's log observer writes (the edge, not under test)."""

    lines: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    observer: LogObserver | None = None

    def _add(self, level: str) -> Callable[..., None]:
        def write(event: str, **kw: Any) -> None:
            self.lines.append((level, event, kw))

        return write

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level in ("debug", "info", "warning", "error"):
            return self._add(level)
        raise AttributeError(level)


async def start(pki: Any, **link: Any) -> tuple[RunningHub, Lines]:
    journal = Path(tempfile.mkdtemp(prefix="billhub-flood-")) / "journal.db"
    config = parse_config(base_config(pki, journal, **link), base_dir=Path("."), env={})
    recorder = Recorder()
    log_observer = LogObserver(refusal_interval=SUMMARY_S)
    lines = Lines(observer=log_observer)
    log_observer.log = lines
    log_observer.refusals.log = lines
    hub = build_hub(config, subscribers=[recorder, log_observer])
    port = await hub.start()
    return RunningHub(hub, port, recorder, pki), lines


async def new_link_gets_in(running: RunningHub) -> float:
    """Connect, sign on, one inquiry answered; returns how long it took."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with asyncio.timeout(SIGN_ON_BOUND_S):
        link = await SwitchLink.connect(
            "127.0.0.1", running.port, running.context(), running.hub.codec
        )
        try:
            assert (await link.sign_on()).fields[39] == rc.APPROVED
            inquiry = m.inquiry("100001", "0100123456", "FLOOD0000001")
            answer = await link.request(inquiry)
            assert answer.mti == "0210" and answer.fields[37] == "FLOOD0000001"
        finally:
            await link.close()
    return loop.time() - t0


async def during(
    running: RunningHub, flood: Callable[[], Awaitable[None]], workers: int
) -> list[float]:
    """Run ``workers`` copies of ``flood`` for FLOOD_S; a new link tries every 0.5 s."""
    tasks = [asyncio.create_task(flood()) for _ in range(workers)]
    loop = asyncio.get_running_loop()
    took: list[float] = []
    try:
        await asyncio.sleep(1.0)  # let the flood fill every slot first
        end = loop.time() + FLOOD_S
        while loop.time() < end:
            took.append(await new_link_gets_in(running))
            await asyncio.sleep(0.5)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return took


async def until_closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(4096):
            pass


def client_hello(running: RunningHub) -> bytes:
    """The bytes of a real ClientHello, as the switch's TLS library writes them."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = running.context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def refusal_lines(lines: Lines) -> list[tuple[str, dict[str, Any]]]:
    names = ("tls_refused", "connection_refused", "links_closed_unsigned")
    return [(e, kw) for _, e, kw in lines.lines if e in names]


def assert_summarised(lines: Lines, refused: int) -> None:
    """Far fewer lines than refusals: one per reason per interval, counts adding up."""
    assert lines.observer is not None
    lines.observer.refusals.flush()  # as the hub does at shutdown
    summary = refusal_lines(lines)
    reasons = {(e, kw["reason"]) for e, kw in summary}
    intervals = (1.0 + FLOOD_S + 3 * SIGN_ON_BOUND_S) / SUMMARY_S + 2
    assert len(summary) <= len(reasons) * intervals
    assert sum(kw["count"] for _, kw in summary) == refused


async def test_raw_tcp_that_never_starts_tls_and_reconnects(pki) -> None:  # type: ignore[no-untyped-def]
    running, lines = await start(pki, max_handshakes=8, max_handshakes_per_source=8)

    async def flood() -> None:
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
                await until_closed(reader)
                writer.close()

    try:
        took = await during(running, flood, 66)
        assert len(took) >= 5
        rec = running.recorder
        assert "handshake_displaced" in rec.conn_refused
        assert running.hub.server.handshakes_in_progress <= 8
        assert len(rec.opened) == len(took), "only the switch's links opened"
    finally:
        await running.hub.stop(1.0)
    assert_summarised(lines, len(rec.refused) + len(rec.conn_refused))


async def test_stalled_partial_client_hellos(pki) -> None:  # type: ignore[no-untyped-def]
    running, lines = await start(pki, max_handshakes=8, max_handshakes_per_source=8)
    hello = client_hello(running)

    async def flood() -> None:
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
                writer.write(hello[: len(hello) // 2])  # and never the rest
                await until_closed(reader)
                writer.close()

    try:
        took = await during(running, flood, 8)
        assert len(took) >= 5
        assert ("hello_timeout", "no whole ClientHello in 2s") in running.recorder.refused
        assert len(running.recorder.opened) == len(took), "only the switch's links opened"
    finally:
        await running.hub.stop(1.0)
    rec = running.recorder
    assert_summarised(lines, len(rec.refused) + len(rec.conn_refused))


async def test_one_byte_a_second(pki) -> None:  # type: ignore[no-untyped-def]
    running, lines = await start(pki)
    hello = client_hello(running)

    async def flood() -> None:
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
                closed = asyncio.create_task(until_closed(reader))
                for b in hello:
                    if closed.done():
                        break
                    writer.write(bytes([b]))
                    await asyncio.sleep(1.0)
                await closed
                writer.close()

    try:
        took = await during(running, flood, 100)
        assert len(took) >= 5
        rec = running.recorder
        assert "handshake_displaced" in rec.conn_refused, "100 tricklers > 16 per source"
        assert len(rec.opened) == len(took), "only the switch's links opened"
    finally:
        await running.hub.stop(1.0)
    assert_summarised(lines, len(rec.refused) + len(rec.conn_refused))


async def test_authenticated_links_that_never_sign_on(pki) -> None:  # type: ignore[no-untyped-def]
    running, lines = await start(pki, max_links=16, sign_on_timeout_s=30.0)

    async def flood() -> None:
        while True:
            with contextlib.suppress(OSError, ssl.SSLError):
                reader, writer = await running.raw()
                await until_closed(reader)  # never a sign-on
                writer.close()
            await asyncio.sleep(0.05)

    try:
        took = await during(running, flood, 16)
        assert len(took) >= 5
        closes = [reason for reason, _ in running.recorder.closed]
        assert "displaced" in closes, "never-signed-on links gave their slots"
    finally:
        await running.hub.stop(1.0)
    rec = running.recorder
    unsigned = sum(1 for reason, _ in rec.closed if reason in ("displaced", "sign_on_timeout"))
    assert_summarised(lines, len(rec.refused) + len(rec.conn_refused) + unsigned)


async def test_links_that_never_sign_on_are_closed_at_the_deadline(pki) -> None:  # type: ignore[no-untyped-def]
    running, _ = await start(pki, sign_on_timeout_s=1.0)
    try:
        reader, writer = await running.raw()
        async with asyncio.timeout(5.0):
            await until_closed(reader)
        writer.close()
        assert ("sign_on_timeout", "no sign-on within 1s") in running.recorder.closed
    finally:
        await running.hub.stop(1.0)


async def test_signed_on_links_are_never_displaced(pki) -> None:  # type: ignore[no-untyped-def]
    running, _ = await start(pki, max_links=2)
    try:
        first = await running.connect()
        second = await running.connect()
        with contextlib.suppress(ConnectionError, ssl.SSLError):  # a third: refused
            reader, writer = await running.raw()
            async with asyncio.timeout(5.0):
                await until_closed(reader)
            writer.close()
        assert "too_many_links" in running.recorder.conn_refused
        assert (await first.echo()).fields[39] == rc.APPROVED
        assert (await second.echo()).fields[39] == rc.APPROVED
        await first.close()
        await second.close()
    finally:
        await running.hub.stop(1.0)


async def test_source_not_allowed_is_closed_before_tls(pki) -> None:  # type: ignore[no-untyped-def]
    running, _ = await start(pki, allowed_sources=["192.0.2.0/24"])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        async with asyncio.timeout(5.0):
            await until_closed(reader)
        writer.close()
        assert running.recorder.conn_refused == ["source_not_allowed"]
        assert running.recorder.refused == [], "refused before any TLS"
    finally:
        await running.hub.stop(1.0)
    allowed, _ = await start(pki, allowed_sources=["127.0.0.0/8", "::1"])
    try:
        await new_link_gets_in(allowed)
    finally:
        await allowed.hub.stop(1.0)


@pytest.mark.parametrize("mti", ["0290", "0490", "0590", "0890"])
async def test_mtis_with_no_response_get_no_request_mti_back(pki, mti: str) -> None:  # type: ignore[no-untyped-def]
    running, _ = await start(pki)
    try:
        link = await running.connect()
        fields = {3: "310000", 70: "001"} if mti != "0890" else {70: "001"}
        answer = await link.request(Message(mti, dict(fields)), timeout=5.0)
        assert rc.is_response(answer.mti)
        assert answer.mti == {"02": "0210", "04": "0430", "05": "0510", "08": "0810"}[mti[:2]]
        assert answer.fields[39] == rc.INVALID_TRANSACTION
        assert (await link.echo()).fields[39] == rc.APPROVED, "the link stays up"
        await link.close()
    finally:
        await running.hub.stop(1.0)
