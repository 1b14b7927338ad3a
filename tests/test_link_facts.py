"""Link facts as an operator reads them: one log line per fact, and a bus that survives.

The log lines are pinned field by field (names, values, order, level): dashboards and
alert rules grep them. Masking is the codec's (``account`` shows first 2, last 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from billhub.errors import DecodeError
from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec
from billhub.link.facts import (
    ConnectionRefusal,
    EchoRoundTrip,
    Exchanged,
    FormatErrorSeen,
    HandlerFailed,
    LinkClosed,
    LinkEvent,
    LinkInfo,
    LinkOpened,
    LinkStateChanged,
    TlsRefusal,
    Unmatched,
)
from billhub.observability import logs
from billhub.observability.bus import LinkEventBus
from billhub.observability.logs import LogObserver
from billhub.observability.metrics import Metrics

INFO = LinkInfo("L1", "127.0.0.1:1", "CN=switch-1")
PAYMENT = Message(
    "0200",
    {
        3: "500000",
        4: "000000010000",
        7: "1126120000",
        11: "000001",
        32: "600001",
        37: "000000000001",
        100: "100001",
        102: "0212345678",
    },
)
ANSWER = Message("0210", {11: "000001", 39: "00"})
ECHO = Message("0800", {7: "1126120000", 11: "000002", 70: "301"})
ECHO_ANSWER = Message("0810", {39: "00", 70: "301"})

Line = tuple[str, str, dict[str, Any]]


class Lines:
    """Stands for the structlog logger: keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[Line] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **kw: self.lines.append((level, event, kw))


@pytest.fixture
def level() -> Iterator[Callable[[int], None]]:
    saved = logs._state["level"]
    yield lambda lvl: logs._state.update(level=lvl)
    logs._state["level"] = saved


def observer() -> tuple[LogObserver, Lines]:
    o = LogObserver(refusal_interval=10.0)
    lines = Lines()
    o.log = o.refusals.log = lines
    return o, lines


def test_each_link_fact_is_one_log_line_with_its_fields(level: Callable[[int], None]) -> None:
    level(logging.INFO)
    o, lines = observer()
    o(LinkOpened(INFO))
    o(LinkStateChanged(INFO, "connected", "signed_on"))
    o(Exchanged(INFO, PAYMENT, ANSWER, 0.0123456, "handled"))
    o(Exchanged(INFO, None, Message("0210", {39: "30"}), 0.0, "format_error"))
    o(Exchanged(INFO, ECHO, ECHO_ANSWER, 0.0, "echo"))  # debug only: nothing at info
    o(FormatErrorSeen(INFO, DecodeError("DE 4", 20, "n 12"), True))
    o(Unmatched(INFO, ANSWER))
    o(EchoRoundTrip(INFO, 0.0042))
    o(HandlerFailed(INFO, PAYMENT, RuntimeError("secret detail")))
    o(LinkClosed(INFO, "dead_peer", "3 echo tests unanswered"))
    payment_fields = {
        "mti": "0200",
        "stan": "000001",
        "rrn": "000000000001",
        "processing_code": "500000",
        "biller": "100001",
        "acquirer": "600001",
        "account": "02****5678",
        "amount": 10000,
    }
    assert lines.lines == [
        ("info", "link_opened", {"link": "L1", "peer": "127.0.0.1:1", "subject": "CN=switch-1"}),
        ("info", "link_state", {"link": "L1", "old": "connected", "new": "signed_on"}),
        (
            "info",
            "message",
            {
                "link": "L1",
                "latency_ms": 12.346,
                "reason": "handled",
                **payment_fields,
                "response_mti": "0210",
                "response_code": "00",
            },
        ),
        (
            "info",
            "message",
            {
                "link": "L1",
                "latency_ms": 0.0,
                "reason": "format_error",
                "mti": None,
                "response_mti": "0210",
                "response_code": "30",
            },
        ),
        (
            "warning",
            "format_error",
            {
                "link": "L1",
                "field": "DE 4",
                "offset": 20,
                "expected": "n 12",
                "mti": None,
                "stan": None,
                "answered": True,
            },
        ),
        (
            "warning",
            "unmatched_response",
            {"link": "L1", "mti": "0210", "stan": "000001", "response_code": "00"},
        ),
        ("debug", "echo_rtt", {"link": "L1", "rtt_ms": 4.2}),
        ("error", "handler_failed", {"link": "L1", "error": "RuntimeError", **payment_fields}),
        (
            "warning",
            "link_closed",
            {
                "link": "L1",
                "peer": "127.0.0.1:1",
                "reason": "dead_peer",
                "detail": "3 echo tests unanswered",
            },
        ),
    ]


def test_echo_exchanges_are_logged_at_debug(level: Callable[[int], None]) -> None:
    level(logging.DEBUG)
    o, lines = observer()
    o(Exchanged(INFO, ECHO, ECHO_ANSWER, 0.0, "echo"))
    assert lines.lines == [
        (
            "debug",
            "message",
            {
                "link": "L1",
                "latency_ms": 0.0,
                "reason": "echo",
                "mti": "0800",
                "stan": "000002",
                "network_code": "301",
                "response_mti": "0810",
                "response_code": "00",
            },
        )
    ]


async def test_refusals_and_unsigned_closes_are_summarised() -> None:
    o, lines = observer()
    o(TlsRefusal("1.2.3.4:5", "subject_not_allowed", "CN=intruder"))
    o(TlsRefusal("1.2.3.4:6", "subject_not_allowed", "CN=other"))
    o(ConnectionRefusal("1.2.3.4:7", "too_many_links"))
    o(LinkClosed(INFO, "displaced", "a new authenticated link needed its slot"))
    assert lines.lines == [], "nothing until the interval ends"
    o.refusals.flush()
    assert lines.lines == [
        (
            "warning",
            "tls_refused",
            {
                "interval_s": 10.0,
                "reason": "subject_not_allowed",
                "count": 2,
                "last_peer": "1.2.3.4:6",
                "last_detail": "CN=other",
            },
        ),
        (
            "warning",
            "connection_refused",
            {
                "interval_s": 10.0,
                "reason": "too_many_links",
                "count": 1,
                "last_peer": "1.2.3.4:7",
            },
        ),
        (
            "warning",
            "links_closed_unsigned",
            {
                "interval_s": 10.0,
                "reason": "displaced",
                "count": 1,
                "last_peer": "127.0.0.1:1",
                "last_detail": "a new authenticated link needed its slot",
            },
        ),
    ]


def test_a_subscriber_that_raises_breaks_neither_the_others_nor_the_link() -> None:
    mx = Metrics(billers=["100001"], rules=load_spec(None).rules, process_metrics=False)
    lines = Lines()

    class Broken:
        def __call__(self, event: LinkEvent) -> None:
            raise RuntimeError("a subscriber's bug, with 0212345678 in its text")

    bus = LinkEventBus(Broken(), mx.link_event)
    bus.log = lines
    for _ in range(3):
        bus(Exchanged(INFO, PAYMENT, ANSWER, 0.01, "handled"))  # must not raise
    bus(LinkOpened(INFO))
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(mx.render().decode())
        for s in f.samples
        if not s.labels or s.labels.get("response_code") == "00"
    }
    assert samples["billhub_messages_sent_total"] == 3, "the next subscriber heard every fact"
    assert samples["billhub_links_opened_total"] == 1
    # One line per (subscriber, fact), naming both and the error's type, never its text.
    assert [(lv, e, kw["subscriber"], kw["fact"], kw["error"]) for lv, e, kw in lines.lines] == [
        ("error", "link_subscriber_failed", "Broken", "Exchanged", "RuntimeError"),
        ("error", "link_subscriber_failed", "Broken", "LinkOpened", "RuntimeError"),
    ]
    assert "0212345678" not in repr(lines.lines)
    assert bus.failures == {("Broken", "Exchanged"): 3, ("Broken", "LinkOpened"): 1}


def test_a_subscriber_handles_only_the_facts_it_cares_about() -> None:
    rtts: list[float] = []

    def echo_watch(event: LinkEvent) -> None:
        match event:
            case EchoRoundTrip(rtt=rtt):
                rtts.append(rtt)

    bus = LinkEventBus(echo_watch)
    bus(LinkOpened(INFO))
    bus(EchoRoundTrip(INFO, 0.004))
    bus(LinkClosed(INFO, "dead_peer", ""))
    assert rtts == [0.004]
    assert bus.failures == {}
