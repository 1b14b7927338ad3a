"""The hub's link over real mutual-TLS sockets, driven by the switch simulator.

What the switch operator checks: sign-on and echo both ways, `91` before
sign-on, 256 requests in flight matched to the right answers, dead-peer
detection, framing errors closing only their own link, undecodable messages
answered `30` with the link kept, `12` for undefined MTIs, back-pressure,
connection floods, graceful shutdown.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from tests.hubharness import RunningHub, start_hub

from billhub.errors import LinkClosed
from billhub.iso8583.codec import Codec
from billhub.iso8583.framing import Framer, frame
from billhub.iso8583.message import Message
from billhub.link.responses import make_response
from billhub.simulator import messages as m


class EchoRrnHandler:
    """Answers each request `00` after a random short delay, so answers overtake each other."""

    def __init__(self, codec: Codec, max_delay: float = 0.05) -> None:
        self.rules = codec.spec.rules
        self.max_delay = max_delay
        self.seen = 0

    async def handle(self, request: Message) -> Message:
        self.seen += 1
        await asyncio.sleep(random.uniform(0, self.max_delay))
        return make_response(self.rules, request, "00")


async def read_message(reader: asyncio.StreamReader, codec: Codec, timeout: float = 5.0) -> Message:
    framer = Framer()
    async with asyncio.timeout(timeout):
        while True:
            got = framer.next_frame()
            if got is not None:
                return codec.decode(got)
            data = await reader.read(4096)
            if not data:
                raise ConnectionError("closed")
            framer.receive_data(data)


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(4096):
                pass
        return True
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False


@pytest.fixture
async def hub(pki):  # type: ignore[no-untyped-def]
    running = await start_hub(pki)
    yield running
    await running.hub.server.shutdown(1.0)


async def test_sign_on_echo_sign_off_and_sign_on_again(hub: RunningHub) -> None:
    link = await hub.connect(sign_on=False)
    assert (await link.sign_on()).fields[39] == "00"
    assert (await link.sign_on()).fields[39] == "00"  # sign-on on a signed-on link
    echo = await link.echo()
    assert (echo.mti, echo.fields[39], echo.fields[70]) == ("0810", "00", "301")
    assert (await link.sign_off()).fields[39] == "00"
    inq = await link.request(m.inquiry("100001", "0100123456", "1"))
    assert inq.fields[39] == "91"  # signed off: back to refusing financial requests
    assert (await link.sign_on()).fields[39] == "00"
    assert ("signed_on", "signed_off") in hub.recorder.states
    await link.close()


async def test_hub_sends_echo_tests_on_an_idle_link(pki) -> None:  # type: ignore[no-untyped-def]
    running = await start_hub(pki, idle_interval_s=0.2, echo_timeout_s=1.0)
    try:
        link = await running.connect()
        await asyncio.sleep(0.7)
        assert link.echoes_answered >= 2, "the hub sends 0800/301 after each idle interval"
        assert running.recorder.echo_rtts, "the hub measured the echo round trip"
        assert not link.is_closed
        await link.close()
    finally:
        await running.hub.server.shutdown(1.0)


@pytest.mark.parametrize(
    "request_msg",
    [
        m.inquiry("100001", "0100123456", "000000000001"),
        m.payment("100001", "0100123456", "000000000002", 150000, "1126"),
        m.reconciliation("100001", "1126", count=0, total=0, reversal_count=0, reversal_total=0),
    ],
    ids=["0200-inquiry", "0200-payment", "0500"],
)
async def test_financial_request_before_sign_on_is_answered_91(
    hub: RunningHub, request_msg: Message
) -> None:
    link = await hub.connect(sign_on=False)
    resp = await link.request(request_msg.copy())
    assert resp.fields[39] == "91"
    assert resp.mti == hub.hub.codec.spec.rules.response_mti(request_msg.mti)
    await link.close()


async def test_reversal_before_sign_on_is_answered_91(hub: RunningHub) -> None:
    link = await hub.connect(sign_on=False)
    pay = m.payment("100001", "0100123456", "000000000003", 150000, "1126")
    pay.fields[7], pay.fields[11] = "1126101010", "000777"
    resp = await link.request(m.reversal(pay))
    assert (resp.mti, resp.fields[39]) == ("0430", "91")
    await link.close()


async def test_256_requests_in_flight_on_one_link_all_matched(pki) -> None:  # type: ignore[no-untyped-def]
    running = await start_hub(pki)
    handler = EchoRrnHandler(running.hub.codec)
    running.hub.server.handler.financial = handler  # type: ignore[attr-defined]
    try:
        link = await running.connect()
        requests = [m.inquiry("100001", f"01{i:08d}", f"{i:012d}") for i in range(256)]
        futures = [link.send(r) for r in requests]
        assert link.link.pending == 256, "all 256 are in flight at once"
        answers = await asyncio.gather(*futures)
        for req, resp in zip(requests, answers, strict=True):
            assert resp.fields[39] == "00"
            assert resp.fields[37] == req.fields[37]
            assert resp.fields[102] == req.fields[102]
            assert resp.fields[11] == req.fields[11]
        assert handler.seen == 256
        await link.close()
    finally:
        await running.hub.server.shutdown(1.0)


async def test_silent_peer_is_detected_and_closed(pki) -> None:  # type: ignore[no-untyped-def]
    running = await start_hub(pki, idle_interval_s=0.1, echo_timeout_s=0.1, echo_max_missed=3)
    try:
        reader, writer = await running.raw()
        codec = running.hub.codec
        writer.write(codec.frame(Message("0800", {7: "1126101010", 11: "000001", 70: "001"})))
        assert (await read_message(reader, codec)).fields[39] == "00"
        # From now on the "switch" reads but never answers the hub's echo tests.
        assert await closed_within(reader, 3.0), "the hub closes a peer that stopped answering"
        assert "dead_peer" in [r for r, _ in running.recorder.closed]
        writer.close()
    finally:
        await running.hub.server.shutdown(1.0)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("length zero", b"\x00\x00"),
        ("length over 4096", b"\x10\x01" + b"0" * 64),
    ],
)
async def test_framing_error_closes_only_that_link(hub: RunningHub, name: str, data: bytes) -> None:
    good = await hub.connect()
    reader, writer = await hub.raw()
    writer.write(data)
    assert await closed_within(reader, 3.0), f"{name}: the hub closes the link"
    assert any(r == "framing_error" for r, _ in hub.recorder.closed)
    assert (await good.echo()).fields[39] == "00", "the other link keeps working"
    writer.close()
    await good.close()


async def test_frame_stopping_half_way_closes_after_read_timeout(pki) -> None:  # type: ignore[no-untyped-def]
    running = await start_hub(pki, read_timeout_s=0.3)
    try:
        good = await running.connect()
        reader, writer = await running.raw()
        body = running.hub.codec.encode(Message("0800", {7: "1126101010", 11: "000001", 70: "301"}))
        writer.write(frame(body)[:10])  # header says more is coming; it never does
        assert await closed_within(reader, 3.0)
        assert any(r == "read_timeout" for r, _ in running.recorder.closed)
        assert (await good.echo()).fields[39] == "00"
        writer.close()
        await good.close()
    finally:
        await running.hub.server.shutdown(1.0)


async def test_frame_arriving_in_pieces_within_the_timeout_is_served(hub: RunningHub) -> None:
    reader, writer = await hub.raw()
    codec = hub.hub.codec
    data = codec.frame(Message("0800", {7: "1126101010", 11: "000042", 70: "301"}))
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0.002)
    resp = await read_message(reader, codec)
    assert (resp.mti, resp.fields[11], resp.fields[39]) == ("0810", "000042", "00")
    writer.close()


def _inquiry_bytes(codec: Codec) -> bytearray:
    msg = m.inquiry("100001", "0100123456", "000000000123")
    msg.fields[7], msg.fields[11] = "1124094512", "000123"
    msg.fields[12], msg.fields[13] = "124512", "1124"
    return bytearray(codec.encode(msg))


def _garbage_bitmap(codec: Codec) -> bytes:
    b = _inquiry_bytes(codec)
    b[4 + 4] |= 0x40  # bit 34: not a field of the spec (after DE 33, so DE 32 can be read)
    return bytes(b)


def _cut_short(codec: Codec) -> bytes:
    return bytes(_inquiry_bytes(codec)[:-3])  # DE 102 shorter than its length prefix


def _letter_in_n_field(codec: Codec) -> bytes:
    b = _inquiry_bytes(codec)
    i = b.index(b"124512")  # DE 12 follows DE 11
    b[i + 2] = ord("X")
    return bytes(b)


def _mandatory_missing(codec: Codec) -> bytes:
    msg = m.inquiry("100001", "0100123456", "000000000123")
    msg.fields[7], msg.fields[11] = "1124094512", "000123"
    del msg.fields[102]
    return codec.encode(msg)


@pytest.mark.parametrize(
    "make", [_garbage_bitmap, _cut_short, _letter_in_n_field, _mandatory_missing]
)
async def test_undecodable_message_is_answered_30_and_link_kept(hub: RunningHub, make) -> None:  # type: ignore[no-untyped-def]
    reader, writer = await hub.raw()
    codec = hub.hub.codec
    writer.write(codec.frame(Message("0800", {7: "1126101010", 11: "000001", 70: "001"})))
    assert (await read_message(reader, codec)).fields[39] == "00"
    writer.write(frame(make(codec)))
    resp = await read_message(reader, codec)
    assert (resp.mti, resp.fields[39]) == ("0210", "30")
    assert resp.fields.get(7) == "1124094512", "DE 7 echoed so the switch can match"
    assert resp.fields.get(11) == "000123"
    assert resp.fields.get(32) == "600001"
    writer.write(codec.frame(Message("0800", {7: "1126101011", 11: "000002", 70: "301"})))
    assert (await read_message(reader, codec)).fields[39] == "00", "the link stays open"
    assert hub.recorder.format_errors and hub.recorder.format_errors[-1][1] is True
    writer.close()


async def test_undefined_mti_is_answered_12(hub: RunningHub) -> None:
    link = await hub.connect()
    msg = m.inquiry("100001", "0100123456", "000000000009")
    msg.mti = "0100"
    resp = await link.request(msg)
    assert (resp.mti, resp.fields[39]) == ("0110", "12")
    await link.close()


async def test_unknown_processing_code_is_answered_12(hub: RunningHub) -> None:
    link = await hub.connect()
    msg = m.inquiry("100001", "0100123456", "000000000010")
    msg.fields[3] = "990000"
    assert (await link.request(msg)).fields[39] == "12"
    await link.close()


async def test_signed_on_request_for_an_unconfigured_biller_is_92(hub: RunningHub) -> None:
    link = await hub.connect()
    resp = await link.request(m.inquiry("100001", "0100123456", "000000000011"))
    assert (resp.mti, resp.fields[39]) == ("0210", "92")
    assert ("0200", "0210", "92", "handled") in hub.recorder.exchanges
    await link.close()


async def test_cutover_rules(hub: RunningHub) -> None:
    link = await hub.connect()
    assert (await link.cutover("1126")).fields[39] == "00"
    assert (await link.cutover("1126")).fields[39] == "00", "the same date again: 00"
    assert (await link.cutover("1125")).fields[39] == "30", "an earlier date: 30"
    assert (await link.cutover("1127")).fields[39] == "00"
    await link.close()


async def test_in_flight_bound_stops_reading_instead_of_buffering(pki) -> None:  # type: ignore[no-untyped-def]
    running = await start_hub(pki, max_in_flight=256)
    gate = asyncio.Event()

    class Gate:
        async def handle(self, request: Message) -> Message:
            await gate.wait()
            return make_response(running.hub.codec.spec.rules, request, "00")

    running.hub.server.handler.financial = Gate()  # type: ignore[attr-defined]
    try:
        link = await running.connect()
        futures = [link.send(m.inquiry("100001", "0100123456", f"{i:012d}")) for i in range(400)]
        await asyncio.sleep(0.5)
        (proto,) = running.hub.server.links
        assert proto.in_flight == 256, "past the bound the hub stops taking requests"
        gate.set()
        answers = await asyncio.gather(*futures)
        assert all(a.fields[39] == "00" for a in answers), "and reads the rest afterwards"
        await link.close()
    finally:
        await running.hub.server.shutdown(1.0)


async def test_connection_flood_does_not_starve_signed_on_links(pki) -> None:  # type: ignore[no-untyped-def]
    running = await start_hub(pki, max_handshakes=2, max_links=8, handshake_timeout_s=2.0)
    try:
        link = await running.connect()
        # Connections that open TCP and never say a TLS word occupy handshake slots.
        flood = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(20)]
        for _ in range(20):
            assert (await link.echo()).fields[39] == "00"
        assert "handshake_displaced" in running.recorder.conn_refused
        assert running.hub.server.handshakes_in_progress <= 2
        for _, w in flood:
            w.close()
        await link.close()
    finally:
        await running.hub.server.shutdown(1.0)


async def test_graceful_shutdown_finishes_in_flight_and_refuses_new_work(pki) -> None:  # type: ignore[no-untyped-def]
    running = await start_hub(pki)
    running.hub.server.handler.financial = EchoRrnHandler(running.hub.codec, max_delay=0)  # type: ignore[attr-defined]
    slow = asyncio.Event()

    class Slow:
        async def handle(self, request: Message) -> Message:
            slow.set()
            await asyncio.sleep(0.5)
            return make_response(running.hub.codec.spec.rules, request, "00")

    running.hub.server.handler.financial = Slow()  # type: ignore[attr-defined]
    link = await running.connect()
    first = link.send(m.inquiry("100001", "0100123456", "000000000001"))
    await slow.wait()
    shutdown = asyncio.ensure_future(running.hub.server.shutdown(5.0))
    await asyncio.sleep(0.05)
    second = await link.request(m.inquiry("100001", "0100123456", "000000000002"))
    assert second.fields[39] == "91", "new financial work during shutdown: 91"
    assert (await first).fields[39] == "00", "work in flight finishes"
    await shutdown
    with pytest.raises(LinkClosed):
        await link.request(m.inquiry("100001", "0100123456", "000000000003"), timeout=2)
