"""The link state machine, as a hub and a switch wired together in memory.

After h11's ``ConnectionPair``: two sans-IO :class:`Link` objects, the bytes one
wants to send moved by hand into the other, and a fake clock stepped by hand,
so that sign-on, multiplexing, format errors and every timer of LINK-SPEC 1
and 6.1 are checked without a socket or a sleep.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billhub.errors import LinkClosed, LocalProtocolError, RequestTimeout
from billhub.iso8583 import codes as rc
from billhub.iso8583.codec import Codec
from billhub.iso8583.framing import frame
from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec
from billhub.link.core import Link, Role, State, Timers
from billhub.link.events import (
    AnsweredByLink,
    EchoAnswered,
    Event,
    FormatError,
    LinkTerminated,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    StateChanged,
    UnmatchedResponse,
)
from billhub.link.responses import make_response, match_key

SPEC = load_spec()
CODEC = Codec(SPEC)
RULES = SPEC.rules
DE7 = "1124094512"


def stans(start: int) -> Callable[[], str]:
    counter = itertools.count(start)
    return lambda: f"{next(counter) % 1_000_000:06d}"


class ConnectionPair:
    """A hub and a switch link joined by an in-memory pipe, with one fake clock."""

    def __init__(self, timers: Timers | None = None, now: float = 0.0) -> None:
        self.now = now
        self.switch_stan = stans(1)
        self.hub = Link(
            CODEC,
            Role.HUB,
            now,
            timers=timers,
            next_stan=stans(500_000),
            transmission_time=lambda: DE7,
        )
        self.switch = Link(
            CODEC,
            Role.SWITCH,
            now,
            timers=timers,
            next_stan=self.switch_stan,
            transmission_time=lambda: DE7,
        )

    def peer(self, link: Link) -> Link:
        return self.switch if link is self.hub else self.hub

    def deliver(self, src: Link) -> bytes:
        """Move what ``src`` wants to send into its peer; return those bytes."""
        data = src.data_to_send()
        if data:
            self.peer(src).receive_data(data, self.now)
        return data

    def pump(self) -> None:
        """Exchange bytes until both sides are quiet."""
        while self.deliver(self.switch) or self.deliver(self.hub):
            pass

    def step(self, to: float) -> None:
        """Advance the clock and fire both links' timers."""
        self.now = to
        self.hub.handle_timer(to)
        self.switch.handle_timer(to)

    def sign_on(self) -> None:
        self.switch.send_request(self.switch.network_request("001"), self.now)
        self.pump()
        events(self.hub)
        events(self.switch)
        assert self.hub.state is State.SIGNED_ON

    def inquiry(self, **overrides: str) -> Message:
        fields = {
            3: "310000",
            4: "000000000000",
            7: DE7,
            11: self.switch_stan(),
            12: "124512",
            13: "1124",
            18: "6013",
            32: "600001",
            33: "700001",
            37: "000000000123",
            49: "760",
            100: "100001",
            102: "0100123456",
        }
        fields.update({int(k[2:]): v for k, v in overrides.items()})
        return Message("0200", fields)

    def reversal(self) -> Message:
        return Message(
            "0420",
            {
                4: "000000050000",
                7: DE7,
                11: self.switch_stan(),
                15: "1124",
                32: "600001",
                33: "700001",
                37: "000000000123",
                49: "760",
                90: "0200000123" + DE7 + "00000600001" + "00000700001",
                100: "100001",
            },
        )

    def reconciliation(self) -> Message:
        return Message(
            "0500",
            {
                7: DE7,
                11: self.switch_stan(),
                15: "1124",
                33: "700001",
                74: "0000000001",
                75: "0000000000",
                86: "0000000000050000",
                87: "0000000000000000",
                97: "C0000000000050000",
                100: "100001",
            },
        )


def events(link: Link) -> list[Event]:
    out = []
    while (e := link.next_event()) is not None:
        out.append(e)
    return out


def of(kind: type, evs: list[Event]) -> list:  # type: ignore[type-arg]
    return [e for e in evs if isinstance(e, kind)]


def decoded(data: bytes) -> list[Message]:
    """The messages in a byte string of frames."""
    out = []
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        out.append(CODEC.decode(data[pos + 2 : pos + 2 + n]))
        pos += 2 + n
    return out


# -- sign-on, sign-off, echo (LINK-SPEC 6.1) -------------------------------------------


def test_a_new_link_is_connected_not_signed_on() -> None:
    pair = ConnectionPair()
    assert pair.hub.state is State.CONNECTED
    assert not pair.hub.signed_on
    assert pair.hub.data_to_send() == b""
    assert pair.hub.next_event() is None


def test_sign_on_is_answered_00_and_signs_the_link_on() -> None:
    pair = ConnectionPair()
    req = pair.switch.network_request("001")
    token = pair.switch.send_request(req, pair.now)
    pair.pump()

    hub_events = events(pair.hub)
    assert StateChanged("connected", "signed_on") in hub_events
    (answered,) = of(AnsweredByLink, hub_events)
    assert answered.reason == "sign_on"
    assert answered.response.mti == "0810"
    assert answered.response[39] == "00"
    assert pair.hub.state is State.SIGNED_ON
    assert pair.hub.in_flight == 0  # the application never saw it

    sw = events(pair.switch)
    (resp,) = of(ResponseReceived, sw)
    assert resp.token == token
    assert resp.request is req
    assert resp.response.mti == "0810"
    assert resp.response[39] == "00"
    assert resp.response[70] == "001"
    assert resp.response[11] == req[11]
    assert resp.response[7] == req[7]
    assert pair.switch.state is State.SIGNED_ON


def test_sign_off_then_sign_on_again_then_sign_on_while_signed_on() -> None:
    pair = ConnectionPair()
    pair.sign_on()

    pair.switch.send_request(pair.switch.network_request("002"), pair.now)
    pair.pump()
    hub_events = events(pair.hub)
    assert StateChanged("signed_on", "signed_off") in hub_events
    assert pair.hub.state is State.SIGNED_OFF
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.response[39] == "00"
    assert pair.switch.state is State.SIGNED_OFF

    pair.switch.send_request(pair.switch.network_request("001"), pair.now)
    pair.pump()
    assert StateChanged("signed_off", "signed_on") in events(pair.hub)
    assert pair.hub.signed_on
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.response[39] == "00"

    pair.switch.send_request(pair.switch.network_request("001"), pair.now)
    pair.pump()
    hub_events = events(pair.hub)
    assert of(StateChanged, hub_events) == []
    assert pair.hub.signed_on
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.response[39] == "00"


def test_echo_test_from_the_switch_is_answered_00() -> None:
    pair = ConnectionPair()
    token = pair.switch.send_request(pair.switch.network_request("301"), pair.now)
    pair.pump()
    (answered,) = of(AnsweredByLink, events(pair.hub))
    assert answered.reason == "echo"
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.token == token
    assert (resp.response.mti, resp.response[39], resp.response[70]) == ("0810", "00", "301")
    assert pair.hub.state is State.CONNECTED  # an echo does not sign on


def test_echo_test_from_the_hub_is_answered_00() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    token = pair.hub.send_request(pair.hub.network_request("301"), pair.now)
    pair.pump()
    (answered,) = of(AnsweredByLink, events(pair.switch))
    assert answered.reason == "echo"
    (resp,) = of(ResponseReceived, events(pair.hub))
    assert resp.token == token
    assert (resp.response.mti, resp.response[39], resp.response[70]) == ("0810", "00", "301")


def test_sign_on_from_the_hub_is_not_the_hubs_to_send() -> None:
    pair = ConnectionPair()
    pair.hub.send_request(pair.hub.network_request("001"), pair.now)
    pair.pump()
    (resp,) = of(ResponseReceived, events(pair.hub))
    assert resp.response[39] == "12"
    assert pair.switch.state is State.CONNECTED


# -- requests before sign-on -------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "response_mti"),
    [
        (ConnectionPair.inquiry, "0210"),
        (ConnectionPair.reversal, "0430"),
        (ConnectionPair.reconciliation, "0510"),
    ],
)
def test_financial_requests_before_sign_on_get_91_from_the_link(
    build: Callable[[ConnectionPair], Message], response_mti: str
) -> None:
    pair = ConnectionPair()
    req = build(pair)
    CODEC.check_mandatory(req)  # complete: the 91 is for the state, not the content
    token = pair.switch.send_request(req, pair.now)
    pair.pump()

    hub_events = events(pair.hub)
    assert of(RequestReceived, hub_events) == []
    (answered,) = of(AnsweredByLink, hub_events)
    assert answered.reason == "not_signed_on"
    assert answered.request == req
    assert pair.hub.in_flight == 0

    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.token == token
    assert resp.response.mti == response_mti
    assert resp.response[39] == "91"
    assert resp.response[11] == req[11]


def test_requests_after_sign_off_get_91_again() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    pair.switch.send_request(pair.switch.network_request("002"), pair.now)
    pair.pump()
    events(pair.hub), events(pair.switch)

    pair.switch.send_request(pair.inquiry(), pair.now)
    pair.pump()
    assert of(RequestReceived, events(pair.hub)) == []
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.response[39] == "91"


def test_requests_in_flight_finish_after_sign_off() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    token = pair.switch.send_request(pair.inquiry(), pair.now)
    pair.pump()
    (received,) = of(RequestReceived, events(pair.hub))
    pair.switch.send_request(pair.switch.network_request("002"), pair.now)
    pair.pump()
    events(pair.switch)
    pair.hub.send_response(received.request, make_response(RULES, received.request, "00"))
    pair.pump()
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.token == token
    assert resp.response[39] == "00"


def test_cutover_before_sign_on_reaches_the_application() -> None:
    pair = ConnectionPair()
    pair.switch.send_request(pair.switch.network_request("201", "1125"), pair.now)
    pair.pump()
    (received,) = of(RequestReceived, events(pair.hub))
    assert received.request[70] == "201"
    assert received.request[15] == "1125"
    assert pair.hub.in_flight == 1


# -- multiplexing ------------------------------------------------------------------------


def test_256_requests_answered_in_reverse_order_are_matched() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    sent: dict[int, Message] = {}
    for _ in range(256):
        req = pair.inquiry()
        sent[pair.switch.send_request(req, pair.now)] = req
    assert pair.switch.pending == 256
    pair.deliver(pair.switch)

    received = of(RequestReceived, events(pair.hub))
    assert len(received) == 256
    assert [r.request for r in received] == list(sent.values())
    assert pair.hub.in_flight == 256

    # the hub answers the last first, each with an amount due of its own
    for i, r in enumerate(reversed(received)):
        resp = make_response(RULES, r.request, "00")
        resp[4] = f"{int(r.request[11]) * 100:012d}"
        pair.hub.send_response(r.request, resp)
        assert pair.hub.in_flight == 255 - i
    assert pair.hub.in_flight == 0
    pair.deliver(pair.hub)

    got = of(ResponseReceived, events(pair.switch))
    assert len(got) == 256
    assert [g.token for g in got] == sorted(sent, reverse=True)
    for g in got:
        req = sent[g.token]
        assert g.request is req
        assert g.response.mti == "0210"
        assert g.response[11] == req[11]
        assert g.response[4] == f"{int(req[11]) * 100:012d}"
        assert g.response[39] == "00"
    assert pair.switch.pending == 0


def test_same_stan_different_acquirer_are_different_requests() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    a = pair.inquiry(de11="000777", de32="600001")
    b = pair.inquiry(de11="000777", de32="600002")
    ta = pair.switch.send_request(a, pair.now)
    tb = pair.switch.send_request(b, pair.now)
    pair.pump()
    ra, rb = (r.request for r in of(RequestReceived, events(pair.hub)))
    pair.hub.send_response(rb, make_response(RULES, rb, "14"))
    pair.hub.send_response(ra, make_response(RULES, ra, "00"))
    pair.pump()
    by_token = {g.token: g.response[39] for g in of(ResponseReceived, events(pair.switch))}
    assert by_token == {ta: "00", tb: "14"}


def test_a_second_request_with_the_same_key_in_flight_is_refused() -> None:
    pair = ConnectionPair()
    req = pair.inquiry()
    pair.switch.send_request(req, pair.now)
    with pytest.raises(LocalProtocolError):
        pair.switch.send_request(req.copy(), pair.now)
    assert pair.switch.pending == 1


def test_response_matching_no_request_is_unmatched() -> None:
    pair = ConnectionPair()
    stray = Message("0210", {7: DE7, 11: "424242", 39: "00"})
    pair.switch.receive_data(CODEC.frame(stray), pair.now)
    (unmatched,) = of(UnmatchedResponse, events(pair.switch))
    assert unmatched.response == stray
    assert pair.switch.data_to_send() == b""


# -- undefined, unknown and undecodable (LINK-SPEC 1) ------------------------------------


def test_undefined_mti_0100_gets_0110_with_12() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    req = Message("0100", {7: DE7, 11: pair.switch_stan(), 32: "600001"})
    token = pair.switch.send_request(req, pair.now)
    pair.pump()
    hub_events = events(pair.hub)
    assert of(RequestReceived, hub_events) == []
    (answered,) = of(AnsweredByLink, hub_events)
    assert answered.reason == "undefined_mti"
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.token == token
    assert resp.response.mti == "0110"
    assert resp.response[39] == "12"
    assert (resp.response[7], resp.response[11], resp.response[32]) == (
        req[7],
        req[11],
        req[32],
    )


def test_unknown_processing_code_gets_12() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    token = pair.switch.send_request(pair.inquiry(de3="400000"), pair.now)
    pair.pump()
    assert of(RequestReceived, events(pair.hub)) == []
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.token == token
    assert (resp.response.mti, resp.response[39], resp.response[3]) == ("0210", "12", "400000")


def test_unknown_network_code_gets_12() -> None:
    pair = ConnectionPair()
    pair.switch.send_request(pair.switch.network_request("999"), pair.now)
    pair.pump()
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert (resp.response.mti, resp.response[39]) == ("0810", "12")


def test_undecodable_request_gets_30_echoing_de7_and_de32_and_the_link_stays() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    body = CODEC.encode(pair.inquiry(de11="999999"))
    assert body.count(b"999999") == 1
    bad = body.replace(b"999999", b"00A123")
    pair.hub.receive_data(frame(bad), pair.now)

    hub_events = events(pair.hub)
    assert of(RequestReceived, hub_events) == []
    (fmt,) = of(FormatError, hub_events)
    assert fmt.answered
    assert fmt.error.field == "DE 11"
    (answered,) = of(AnsweredByLink, hub_events)
    assert answered.reason == "format_error"
    (resp,) = decoded(pair.hub.data_to_send())
    assert resp.mti == "0210"
    assert resp[39] == "30"
    assert resp[7] == DE7
    assert resp[32] == "600001"
    assert 11 not in resp  # it could not be read
    assert not pair.hub.closed
    assert pair.hub.state is State.SIGNED_ON

    # the link goes on: the next request reaches the application
    pair.switch.send_request(pair.inquiry(), pair.now)
    pair.pump()
    assert len(of(RequestReceived, events(pair.hub))) == 1


def test_undecodable_repeat_is_answered_with_the_response_mti() -> None:
    pair = ConnectionPair()
    body = CODEC.encode(Message("0421", {**pair.reversal().fields, 11: "999999"}))
    pair.hub.receive_data(frame(body.replace(b"999999", b"99999X")), pair.now)
    (resp,) = decoded(pair.hub.data_to_send())
    assert (resp.mti, resp[39], resp[7], resp[32]) == ("0430", "30", DE7, "600001")


def test_mandatory_field_missing_gets_30_with_the_echo() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    req = pair.inquiry()
    del req[102]
    token = pair.switch.send_request(req, pair.now)
    pair.pump()
    hub_events = events(pair.hub)
    assert of(RequestReceived, hub_events) == []
    (fmt,) = of(FormatError, hub_events)
    assert fmt.answered
    assert fmt.error.field == "DE 102"
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert resp.token == token
    assert resp.response[39] == "30"
    for n in (3, 7, 11, 32, 33, 37, 49, 100):
        assert resp.response[n] == req[n]
    assert 4 not in resp.response  # an inquiry response does not echo DE 4
    assert not pair.hub.closed


def test_mandatory_field_missing_before_sign_on_is_still_30() -> None:
    pair = ConnectionPair()
    req = pair.reversal()
    del req[90]
    pair.switch.send_request(req, pair.now)
    pair.pump()
    (resp,) = of(ResponseReceived, events(pair.switch))
    assert (resp.response.mti, resp.response[39]) == ("0430", "30")


@pytest.mark.parametrize("mti", [b"0210", b"0810", b"0100", b"0110"])
def test_undecodable_non_request_is_reported_and_dropped(mti: bytes) -> None:
    pair = ConnectionPair()
    pair.sign_on()
    garbage = mti + b"\x40" + bytes(7) + b"garbage"  # bit 2: no such field
    pair.hub.receive_data(frame(garbage), pair.now)
    hub_events = events(pair.hub)
    (fmt,) = of(FormatError, hub_events)
    assert not fmt.answered
    assert fmt.error.mti == mti.decode()
    assert of(AnsweredByLink, hub_events) == []
    assert pair.hub.data_to_send() == b""
    assert not pair.hub.closed


def test_undecodable_frame_without_mti_is_dropped() -> None:
    pair = ConnectionPair()
    pair.hub.receive_data(frame(b"\xff\xfe"), pair.now)
    (fmt,) = of(FormatError, events(pair.hub))
    assert not fmt.answered
    assert fmt.error.field == "MTI"
    assert pair.hub.data_to_send() == b""


# -- framing errors and the read timeout -------------------------------------------------


@pytest.mark.parametrize("header", [b"\x00\x00", b"\x10\x01", b"\xff\xff"])
def test_framing_error_terminates_the_link(header: bytes) -> None:
    pair = ConnectionPair()
    pair.sign_on()
    pending = pair.hub.send_request(pair.hub.network_request("301"), pair.now)
    pair.hub.data_to_send()
    pair.hub.receive_data(header + b"0800", pair.now)
    hub_events = events(pair.hub)
    (term,) = of(LinkTerminated, hub_events)
    assert term.reason == "framing_error"
    assert StateChanged("signed_on", "closed") in hub_events
    (failed,) = of(RequestFailed, hub_events)
    assert failed.token == pending
    assert isinstance(failed.error, LinkClosed)
    assert pair.hub.state is State.CLOSED
    assert pair.hub.get_timer() is None
    # nothing more is read
    pair.hub.receive_data(CODEC.frame(pair.inquiry()), pair.now)
    assert events(pair.hub) == []
    assert pair.hub.data_to_send() == b""


def test_frames_before_a_framing_error_in_the_same_chunk_are_processed() -> None:
    pair = ConnectionPair()
    data = CODEC.frame(pair.switch.network_request("001")) + b"\x00\x00"
    pair.hub.receive_data(data, pair.now)
    hub_events = events(pair.hub)
    assert [type(e) for e in hub_events] == [
        StateChanged,
        AnsweredByLink,
        LinkTerminated,
        StateChanged,
    ]
    assert pair.hub.closed


def test_read_timeout_on_half_a_frame() -> None:
    pair = ConnectionPair()
    data = CODEC.frame(pair.inquiry())
    pair.hub.receive_data(data[: len(data) // 2], 0.0)
    assert pair.hub.get_timer() == 5.0
    pair.hub.handle_timer(4.999)
    assert events(pair.hub) == []
    pair.hub.handle_timer(5.0)
    hub_events = events(pair.hub)
    (term,) = of(LinkTerminated, hub_events)
    assert term.reason == "read_timeout"
    assert pair.hub.closed
    pair.hub.receive_data(data[len(data) // 2 :], 5.1)
    assert events(pair.hub) == []


def test_read_timeout_counts_from_the_first_byte_of_the_frame() -> None:
    # more bytes of the same frame do not restart the read timeout (clock starts at 0)
    pair = ConnectionPair()
    data = CODEC.frame(pair.inquiry())
    pair.hub.receive_data(data[:1], 0.0)
    pair.hub.receive_data(data[1:20], 3.0)
    pair.hub.receive_data(data[20:40], 4.5)
    assert pair.hub.get_timer() == 5.0
    pair.hub.handle_timer(5.0)
    (term,) = of(LinkTerminated, events(pair.hub))
    assert term.reason == "read_timeout"


def test_read_timeout_counts_from_the_first_byte_not_from_the_link_start() -> None:
    pair = ConnectionPair(now=100.0)
    data = CODEC.frame(pair.inquiry())
    pair.hub.receive_data(data[:10], 101.0)
    pair.hub.receive_data(data[10:20], 105.5)
    pair.hub.handle_timer(105.9)
    assert events(pair.hub) == []
    pair.hub.handle_timer(106.0)
    (term,) = of(LinkTerminated, events(pair.hub))
    assert term.reason == "read_timeout"


def test_a_frame_in_pieces_within_the_read_timeout_is_fine() -> None:
    pair = ConnectionPair()
    data = CODEC.frame(pair.switch.network_request("001"))
    for i, byte in enumerate(data):
        now = i * 4.9 / (len(data) - 1)
        pair.hub.handle_timer(now)
        pair.hub.receive_data(bytes([byte]), now)
    assert pair.hub.state is State.SIGNED_ON
    pair.hub.handle_timer(20.0)
    assert of(LinkTerminated, events(pair.hub)) == []
    assert not pair.hub.closed


def test_the_next_frame_gets_its_own_read_timeout() -> None:
    pair = ConnectionPair(now=100.0)
    first = CODEC.frame(pair.switch.network_request("301"))
    second = CODEC.frame(pair.switch.network_request("301"))
    pair.hub.receive_data(first[:10], 100.0)
    pair.hub.receive_data(first[10:] + second[:3], 104.0)  # the second frame starts at 104
    pair.hub.handle_timer(105.5)
    assert of(LinkTerminated, events(pair.hub)) == []
    assert pair.hub.get_timer() == 109.0
    pair.hub.receive_data(second[3:], 108.9)
    assert len(decoded(pair.hub.data_to_send())) == 2  # both echo tests answered
    pair.hub.handle_timer(109.5)
    assert not pair.hub.closed


def test_read_timeout_after_the_next_frame_stalls() -> None:
    pair = ConnectionPair(now=100.0)
    first = CODEC.frame(pair.switch.network_request("301"))
    second = CODEC.frame(pair.switch.network_request("301"))
    pair.hub.receive_data(first[:10], 100.0)
    pair.hub.receive_data(first[10:] + second[:3], 104.0)
    pair.hub.handle_timer(108.9)
    assert not pair.hub.closed
    pair.hub.handle_timer(109.0)
    (term,) = of(LinkTerminated, events(pair.hub))
    assert term.reason == "read_timeout"


# -- keep-alive (LINK-SPEC 1) ------------------------------------------------------------


def echoes_in(data: bytes) -> list[Message]:
    msgs = decoded(data)
    assert all(m.mti == "0800" and m[70] == "301" for m in msgs)
    return msgs


# Keep-alive on its own: the sign-on deadline (tested below) pushed out of the way.
KEEPALIVE_ONLY = Timers(sign_on_timeout=1e9)


def test_hub_link_not_signed_on_in_time_is_closed() -> None:
    pair = ConnectionPair(Timers(sign_on_timeout=10.0))
    assert pair.hub.get_timer() == 10.0
    pair.hub.handle_timer(9.9)
    assert not pair.hub.closed
    pair.hub.handle_timer(10.0)
    assert pair.hub.closed
    terminated = [e for e in events(pair.hub) if isinstance(e, LinkTerminated)]
    assert [e.reason for e in terminated] == ["sign_on_timeout"]


def test_sign_on_deadline_counts_from_when_the_link_opened_and_ends_at_sign_on() -> None:
    pair = ConnectionPair(Timers(sign_on_timeout=10.0))
    pair.hub.opened(5.0)  # the handshake took 5 s: the deadline counts from here
    assert pair.hub.get_timer() == 15.0
    pair.hub.handle_timer(14.0)
    pair.switch.send_request(pair.switch.network_request("001"), 14.0)
    pair.deliver(pair.switch)
    assert pair.hub.signed_on
    pair.hub.handle_timer(15.0)
    pair.hub.handle_timer(40.0)
    assert not pair.hub.closed, "a signed-on link has no sign-on deadline"


def test_idle_link_sends_an_echo_test_when_get_timer_says() -> None:
    pair = ConnectionPair(KEEPALIVE_ONLY)
    assert pair.hub.get_timer() == 30.0
    pair.hub.handle_timer(29.9)
    assert pair.hub.data_to_send() == b""
    pair.hub.handle_timer(30.0)
    (echo,) = echoes_in(pair.hub.data_to_send())
    CODEC.check_mandatory(echo)
    assert pair.hub.get_timer() == 40.0  # the echo timeout


def test_silent_peer_is_dead_after_three_unanswered_echo_tests() -> None:
    pair = ConnectionPair(KEEPALIVE_ONLY)
    sent = []
    t = 0.0
    while not pair.hub.closed:
        deadline = pair.hub.get_timer()
        assert deadline is not None
        t = deadline
        pair.hub.handle_timer(t)
        sent += echoes_in(pair.hub.data_to_send())
        assert t <= 60.0
    assert t == 60.0  # idle 30 s + 3 x echo timeout 10 s
    assert len(sent) == 3
    assert len({m[11] for m in sent}) == 3  # each with its own STAN
    hub_events = events(pair.hub)
    (term,) = of(LinkTerminated, hub_events)
    assert term.reason == "dead_peer"
    assert of(RequestFailed, hub_events) == []  # keep-alives are the link's own business
    assert pair.hub.state is State.CLOSED


def test_silent_peer_with_other_timers() -> None:
    timers = Timers(idle_interval=5.0, echo_timeout=2.0, echo_max_missed=2)
    pair = ConnectionPair(timers=timers)
    pair.hub.handle_timer(5.0)
    pair.hub.handle_timer(7.0)
    assert not pair.hub.closed
    assert len(echoes_in(pair.hub.data_to_send())) == 2
    pair.hub.handle_timer(8.9)
    assert not pair.hub.closed
    pair.hub.handle_timer(9.0)
    assert of(LinkTerminated, events(pair.hub))[0].reason == "dead_peer"


def test_any_frame_received_resets_the_missed_count() -> None:
    pair = ConnectionPair(KEEPALIVE_ONLY)
    pair.hub.handle_timer(30.0)  # echo 1
    pair.hub.handle_timer(40.0)  # echo 1 missed, echo 2
    pair.hub.handle_timer(50.0)  # echo 2 missed, echo 3
    assert len(echoes_in(pair.hub.data_to_send())) == 3
    # the switch speaks (a request of its own), so the peer is alive
    pair.now = 55.0
    pair.switch.send_request(pair.switch.network_request("301"), pair.now)
    pair.deliver(pair.switch)
    pair.hub.data_to_send()
    events(pair.hub)
    pair.hub.handle_timer(60.0)  # echo 3's own deadline: it is dropped, nothing is sent
    assert pair.hub.data_to_send() == b""
    assert not pair.hub.closed
    assert pair.hub.get_timer() == 85.0  # idle again from the last frame
    for t in (85.0, 95.0, 105.0):
        pair.hub.handle_timer(t)
        assert not pair.hub.closed
    pair.hub.handle_timer(115.0)
    assert of(LinkTerminated, events(pair.hub))[0].reason == "dead_peer"


def test_answered_echo_gives_its_round_trip_time() -> None:
    pair = ConnectionPair(KEEPALIVE_ONLY)
    pair.step(30.0)  # both sides idle: both send an echo test
    pair.deliver(pair.hub)  # the switch answers the hub's at once
    pair.now = 30.25
    pair.deliver(pair.switch)  # the hub gets the answer and the switch's echo test
    hub_events = events(pair.hub)
    (echoed,) = of(EchoAnswered, hub_events)
    assert echoed.rtt == pytest.approx(0.25)
    assert of(ResponseReceived, hub_events) == []
    assert pair.hub.get_timer() == pytest.approx(60.25)
    pair.hub.handle_timer(60.0)
    assert pair.hub.data_to_send()[2:6] == b"0810"  # only its answer to the switch's echo


def test_activity_postpones_the_echo_test() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    pair.now = 20.0
    pair.switch.send_request(pair.inquiry(), pair.now)
    pair.deliver(pair.switch)
    assert pair.hub.get_timer() == 50.0
    pair.hub.handle_timer(30.0)
    assert pair.hub.data_to_send() == b""


# -- request time-out and close ----------------------------------------------------------


def test_unanswered_request_fails_with_request_timeout() -> None:
    pair = ConnectionPair(timers=Timers(idle_interval=100.0))
    pair.sign_on()
    req = pair.inquiry()
    token = pair.switch.send_request(req, 1.0)
    pair.deliver(pair.switch)
    assert len(of(RequestReceived, events(pair.hub))) == 1
    assert pair.switch.get_timer() == 31.0  # request_timeout 30 s from sending
    pair.switch.handle_timer(30.999)
    assert of(RequestFailed, events(pair.switch)) == []
    pair.switch.handle_timer(31.0)
    (failed,) = of(RequestFailed, events(pair.switch))
    assert failed.token == token
    assert failed.request is req
    assert isinstance(failed.error, RequestTimeout)
    assert pair.switch.pending == 0


def test_request_timeout_per_request_and_a_late_answer_is_unmatched() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    token = pair.switch.send_request(pair.inquiry(), 0.0, timeout=5.0)
    pair.deliver(pair.switch)
    (received,) = of(RequestReceived, events(pair.hub))
    assert pair.switch.get_timer() == 5.0
    pair.switch.handle_timer(5.0)
    (failed,) = of(RequestFailed, events(pair.switch))
    assert failed.token == token
    pair.hub.send_response(received.request, make_response(RULES, received.request, "00"))
    pair.now = 6.0
    pair.deliver(pair.hub)
    assert [type(e) for e in events(pair.switch)] == [UnmatchedResponse]


def test_close_fails_every_pending_request_with_link_closed() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    tokens = {pair.switch.send_request(pair.inquiry(), pair.now) for _ in range(3)}
    pair.switch.close()
    sw = events(pair.switch)
    failed = of(RequestFailed, sw)
    assert {f.token for f in failed} == tokens
    assert all(isinstance(f.error, LinkClosed) for f in failed)
    assert StateChanged("signed_on", "closed") in sw
    assert pair.switch.pending == 0
    assert pair.switch.get_timer() is None
    with pytest.raises(LinkClosed):
        pair.switch.send_request(pair.inquiry(), pair.now)
    pair.switch.close()  # idempotent
    assert events(pair.switch) == []
    pair.switch.handle_timer(1000.0)
    assert events(pair.switch) == []


# -- answering through the link ----------------------------------------------------------


@pytest.mark.parametrize(
    "spoil",
    [
        {39: "XYZ"},  # an 2
        {2: "4111111111111111"},  # not in the spec
        {4: "-5"},
        {48: "م" * 600},
    ],
)
def test_response_that_cannot_be_encoded_becomes_96(spoil: dict[int, str]) -> None:
    pair = ConnectionPair()
    pair.sign_on()
    req = pair.inquiry()
    token = pair.switch.send_request(req, pair.now)
    pair.pump()
    (received,) = of(RequestReceived, events(pair.hub))
    resp = make_response(RULES, received.request, "00")
    resp.fields.update(spoil)
    pair.hub.send_response(received.request, resp)
    assert pair.hub.in_flight == 0
    pair.pump()
    (got,) = of(ResponseReceived, events(pair.switch))
    assert got.token == token
    assert got.response[39] == "96"
    assert got.response == make_response(RULES, req, "96")


def test_send_response_on_a_closed_link_sends_nothing() -> None:
    pair = ConnectionPair()
    pair.sign_on()
    pair.switch.send_request(pair.inquiry(), pair.now)
    pair.pump()
    (received,) = of(RequestReceived, events(pair.hub))
    pair.hub.close()
    pair.hub.send_response(received.request, make_response(RULES, received.request, "00"))
    assert pair.hub.data_to_send() == b""
    assert pair.hub.in_flight == 0


# -- make_response and match_key (LINK-SPEC 1) -------------------------------------------

ECHO_FIELDS = (3, 7, 11, 15, 32, 33, 37, 41, 49, 70, 90, 100, 102)

SAMPLE = {
    3: "500000",
    4: "000000012345",
    7: DE7,
    11: "000123",
    12: "124512",
    13: "1124",
    15: "1124",
    18: "6013",
    32: "600001",
    33: "700001",
    37: "000000000123",
    41: "TERM0001",
    48: "BI005B-001",
    49: "760",
    70: "301",
    90: "0200000123" + DE7 + "00000600001" + "00000700001",
    100: "100001",
    102: "0100123456",
}


def test_the_echo_rule_is_the_contracts() -> None:
    assert tuple(RULES.echo) == ECHO_FIELDS
    assert RULES.echo_amount_except == {"310000"}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["0200", "0201", "0420", "0421", "0500", "0800"]),
    st.sets(st.sampled_from(sorted(SAMPLE))),
    st.sampled_from(["310000", "500000", None]),
    st.sampled_from(["00", "12", "30", "91", "96"]),
)
def test_make_response_echoes_exactly_the_echo_fields(
    mti: str, present: set[int], de3: str | None, code: str
) -> None:
    fields = {n: SAMPLE[n] for n in present}
    if de3 is None:
        fields.pop(3, None)
    else:
        fields[3] = de3
    req = Message(mti, fields)
    resp = make_response(RULES, req, code)
    assert resp.mti == {"02": "0210", "04": "0430", "05": "0510", "08": "0810"}[mti[:2]]
    assert resp[39] == code
    for n in ECHO_FIELDS:
        assert resp.get(n) == req.get(n)
    if 4 in req and req.get(3) != "310000":
        assert resp[4] == req[4]
    else:
        assert 4 not in resp
    assert set(resp) <= {*ECHO_FIELDS, 4, 39}
    assert req.fields == fields  # the request is left alone
    assert match_key(RULES, resp) == match_key(RULES, req)


@pytest.mark.parametrize(
    ("mti", "response"),
    [
        ("0200", "0210"),
        ("0201", "0210"),
        ("0420", "0430"),
        ("0421", "0430"),
        ("0500", "0510"),
        ("0800", "0810"),
        ("0100", "0110"),
        ("0120", "0130"),
        ("0600", "0610"),
        ("0290", "0210"),
        ("0490", "0430"),
        ("0590", "0510"),
        ("0890", "0810"),
        ("0291", "0210"),
        ("0240", "0210"),
        ("0180", "0110"),
        ("0690", "0610"),
    ],
)
def test_response_mtis(mti: str, response: str) -> None:
    assert make_response(RULES, Message(mti), "00").mti == response


@given(st.from_regex(r"\A[0-9]{4}\Z"))
def test_no_mti_is_ever_answered_with_a_request_mti(mti: str) -> None:
    assert rc.is_response(make_response(RULES, Message(mti), "12").mti)


def test_inquiry_response_does_not_echo_the_amount_payment_does() -> None:
    inquiry = Message("0200", {3: "310000", 4: "000000000000"})
    payment = Message("0200", {3: "500000", 4: "000000012345"})
    assert 4 not in make_response(RULES, inquiry, "00")
    assert make_response(RULES, payment, "00")[4] == "000000012345"
    reversal = Message("0420", {4: "000000012345"})
    assert make_response(RULES, reversal, "00")[4] == "000000012345"


def test_match_key_is_mti_class_de7_de11_and_de32() -> None:
    req = Message("0200", {7: DE7, 11: "000123", 32: "600001", 37: "RRN"})
    assert match_key(RULES, req) == ("02", DE7, "000123", "600001")
    assert match_key(RULES, Message("0210", {7: DE7, 11: "000123", 32: "600001"})) == (
        match_key(RULES, req)
    )
    assert match_key(RULES, Message("0430", {7: DE7, 11: "000123", 32: "600001"})) != (
        match_key(RULES, req)
    )
    assert match_key(RULES, Message("0210", {7: DE7, 11: "000123", 32: "600002"})) != (
        match_key(RULES, req)
    )
    assert match_key(RULES, Message("0800", {7: DE7, 11: "000123"})) == ("08", DE7, "000123", "")


# -- whatever the peer sends, the link answers with events, never an exception -----------


_INQUIRY = CODEC.encode(ConnectionPair().inquiry())


def _spoilt_inquiry(flip: tuple[int, int]) -> bytes:
    """A valid inquiry with one byte changed, framed."""
    where, xor = flip
    body = bytearray(_INQUIRY)
    body[where % len(body)] ^= xor
    return frame(bytes(body))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.binary(min_size=1, max_size=120).map(frame),  # well-framed garbage
            st.tuples(st.integers(0, 200), st.integers(1, 255)).map(_spoilt_inquiry),
            st.sampled_from(["0200", "0201", "0420", "0500", "0800", "0210", "0100"]).flatmap(
                lambda mti: st.binary(min_size=8, max_size=100).map(
                    lambda b: frame(mti.encode() + b)
                )
            ),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_any_bytes_from_the_peer_become_events(chunks: list[bytes], signed_on: bool) -> None:
    pair = ConnectionPair()
    if signed_on:
        pair.sign_on()
    hub = pair.hub
    for i, chunk in enumerate(chunks):
        hub.receive_data(chunk, float(i))
        hub.handle_timer(float(i) + 0.5)
    evs = events(hub)
    answered = [e for e in evs if isinstance(e, AnsweredByLink)]
    out = decoded(hub.data_to_send())  # everything the link sent decodes
    assert len(out) == len(answered)
    for msg in out:
        assert msg.mti[2] in "13"  # only responses
        assert 39 in msg
    for e in of(FormatError, evs):
        assert e.answered == RULES.is_request(e.error.mti or "")
    if of(LinkTerminated, evs):
        assert hub.closed
    assert hub.in_flight == len(of(RequestReceived, evs))
