"""Metrics, health and status as an operator's Prometheus and terminal see them.

A whole hub (txharness: real TLS link, SQLite journal, a REST and a batch biller)
with its admin port on loopback; the switch simulator sends known traffic, then
``/metrics`` is scraped and parsed with Prometheus' own text parser and every
counter must equal what was sent.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.hubharness import base_config
from tests.txharness import BATCH, REST, TODAY, World, find, mmdd, start_world

from billhub.app.hub import build_hub
from billhub.config import parse_config
from billhub.errors import BillhubError, DecodeError
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
    TlsRefusal,
    Unmatched,
)
from billhub.observability.bus import LinkEventBus
from billhub.observability.health import BillerHealth
from billhub.observability.metrics import METRICS, FanoutPipelineObserver, Metrics
from billhub.observability.watch import BillerInfo, HubWatch
from billhub.simulator import messages as m
from billhub.simulator.rest_biller import Faults
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import REFUSAL_REASONS, client_context

Sample = tuple[str, dict[str, str], float]


def parse(text: str) -> list[Sample]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``; 0 if none."""
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def has(samples: list[Sample], name: str, **labels: str) -> bool:
    return any(
        n == name and all(lab.get(k) == x for k, x in labels.items()) for n, lab, _ in samples
    )


async def get(world: World, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{world.hub.admin_port}{path}"
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def scrape(world: World) -> list[Sample]:
    status, ctype, text = await get(world, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    return parse(text)


@pytest.fixture
async def world(tmp_path: Path, pki) -> World:  # type: ignore[no-untyped-def]
    w = await start_world(tmp_path, pki, admin=True)
    yield w  # type: ignore[misc]
    await w.close()


# -- counters equal the traffic ---------------------------------------------------------------


async def test_scraped_counters_equal_the_traffic_sent(world: World) -> None:
    link = await world.link()
    sent_values: set[str] = set()  # accounts and RRNs: never a label value
    inquiries_ok, inquiries_unknown, payments = 7, 2, 4
    rest_accts = [a for a in world.rest_accounts if a.status == "active" and a.total_due > 0]
    for acct in rest_accts[:inquiries_ok]:
        rrn = world.next_rrn()
        sent_values |= {acct.account, rrn}
        assert (await link.request(m.inquiry(REST, acct.account, rrn))).fields[39] == "00"
    for i in range(inquiries_unknown):
        resp = await link.request(m.inquiry(REST, f"099999999{i}", world.next_rrn()))
        assert resp.fields[39] == "14"
    batch_accts = [a for a in world.batch_accounts if a.status == "active" and a.total_due > 0]
    paid = []
    for acct in batch_accts[:payments]:
        pay = world.pay(BATCH, acct)
        sent_values |= {acct.account, pay.fields[37].strip()}
        assert (await link.request(pay)).fields[39] == "00"
        paid.append(pay)
    assert (await link.request(m.reversal(paid[0]))).fields[39] == "00"
    stranger = world.pay("999999", find(world.rest_accounts))
    assert (await link.request(stranger)).fields[39] == "92"
    assert (await link.echo()).fields[39] == "00"

    s = await scrape(world)
    recv, sent = "billhub_messages_received_total", "billhub_messages_sent_total"
    assert value(s, recv, mti="0200", processing_code="310000", biller=REST) == 9
    assert (
        value(s, sent, mti="0210", processing_code="310000", biller=REST, response_code="00") == 7
    )
    assert (
        value(s, sent, mti="0210", processing_code="310000", biller=REST, response_code="14") == 2
    )
    assert value(s, recv, mti="0200", processing_code="500000", biller=BATCH) == payments
    assert (
        value(s, sent, mti="0210", processing_code="500000", biller=BATCH, response_code="00")
        == payments
    )
    assert value(s, recv, mti="0420", biller=BATCH) == 1
    assert value(s, sent, mti="0430", biller=BATCH, response_code="00") == 1
    # An unconfigured DE 100 is one bounded label, not a new series per value.
    assert value(s, recv, mti="0200", processing_code="500000", biller="unknown") == 1
    assert value(s, sent, mti="0210", biller="unknown", response_code="92") == 1
    assert value(s, recv, mti="0800") == 2  # sign-on and echo
    assert value(s, sent, mti="0810", response_code="00") == 2
    # Every request answered is one latency observation, per kind and biller.
    hist = "billhub_request_duration_seconds_count"
    assert value(s, hist, kind="inquiry", biller=REST) == 9
    assert value(s, hist, kind="payment", biller=BATCH) == payments
    assert value(s, hist, kind="reversal", biller=BATCH) == 1
    assert value(s, hist, kind="sign_on") == 1 and value(s, hist, kind="echo") == 1
    assert value(s, hist) == value(s, sent)
    le_inf = value(s, "billhub_request_duration_seconds_bucket", kind="inquiry", le="+Inf")
    assert le_inf == 9
    # Biller calls: the REST biller answered every inquiry (unknown accounts are refusals).
    calls = "billhub_biller_calls_total"
    assert value(s, calls, biller=REST, operation="open_bills", outcome="ok") == 7
    assert value(s, calls, biller=REST, operation="open_bills", outcome="rejected") == 2
    assert value(s, calls, biller=BATCH, operation="post_payment", outcome="ok") == payments
    assert value(s, calls, outcome="timeout") == 0 and value(s, calls, outcome="unavailable") == 0
    dur = "billhub_biller_call_duration_seconds_count"
    assert value(s, dur, biller=REST, operation="open_bills") == 9
    # Scrape-time gauges.
    assert value(s, "billhub_links_connected") == 1
    assert value(s, "billhub_links_signed_on") == 1
    assert has(
        s, "billhub_link_requests_in_flight", link="L1", subject="CN=switch-1,O=National Switch"
    )
    assert value(s, "billhub_biller_up", biller=REST) == 1
    assert value(s, "billhub_resolver_backlog_tasks") == 0
    assert value(s, "billhub_resolver_oldest_task_age_seconds") == 0
    # The journal committed the payments and the reversal (reads share commits too).
    commits = value(s, "billhub_journal_commit_group_size_count")
    assert commits >= 1
    assert value(s, "billhub_journal_commit_duration_seconds_count") == commits
    assert value(s, "billhub_journal_commit_group_size_sum") >= 2 * payments + 1
    # Bills file loaded at start-up, rejections at zero.
    assert value(s, "billhub_bills_files_total", biller=BATCH, outcome="loaded") == 1
    assert has(s, "billhub_bills_files_total", biller=BATCH, outcome="rejected")
    assert value(s, "billhub_bills_files_total", outcome="rejected") == 0
    assert value(s, "billhub_bills_file_rows_total", biller=BATCH) > 0
    # Every TLS refusal reason is exposed from start-up, at zero.
    for reason in REFUSAL_REASONS:
        assert has(s, "billhub_tls_refusals_total", reason=reason), reason
    assert value(s, "billhub_tls_refusals_total") == 0
    # No account number, RRN or STAN ever becomes a label value.
    leaked = {v for _, labels, _ in s for v in labels.values()} & sent_values
    assert not leaked


async def test_reconciliation_findings_counter_exists_at_zero_and_counts(world: World) -> None:
    s = await scrape(world)
    assert has(s, "billhub_reconciliation_findings_total", biller=REST)
    assert value(s, "billhub_reconciliation_findings_total") == 0
    assert world.hub.obs is not None
    world.hub.obs.reconciliation_finding(BATCH)
    world.hub.obs.reconciliation_finding(BATCH)
    s = await scrape(world)
    assert value(s, "billhub_reconciliation_findings_total", biller=BATCH) == 2
    assert value(s, "billhub_reconciliation_findings_total", biller=REST) == 0


async def test_a_disagreeing_0500_counts_reconciliation_findings(world: World) -> None:
    link = await world.link()
    acct = find(world.batch_accounts)
    assert (await link.request(world.pay(BATCH, acct))).fields[39] == "00"
    assert (await link.cutover(mmdd(TODAY + timedelta(days=1)))).fields[39] == "00"
    agree = m.reconciliation(
        BATCH, mmdd(), count=1, total=acct.total_due, reversal_count=0, reversal_total=0
    )
    assert (await link.request(agree)).fields[39] == "00"
    assert value(await scrape(world), "billhub_reconciliation_findings_total") == 0
    wrong = m.reconciliation(
        BATCH, mmdd(), count=2, total=acct.total_due + 5, reversal_count=0, reversal_total=0
    )
    assert (await link.request(wrong)).fields[39] == "95"
    s = await scrape(world)
    assert value(s, "billhub_reconciliation_findings_total", biller=BATCH) >= 1
    assert value(s, "billhub_reconciliation_findings_total", biller=REST) == 0
    recv = "billhub_messages_received_total"
    assert value(s, recv, mti="0500", biller=BATCH) == 2
    assert value(s, "billhub_messages_sent_total", mti="0510", response_code="95") == 1
    assert value(s, "billhub_request_duration_seconds_count", kind="reconciliation") == 2
    assert value(s, "billhub_request_duration_seconds_count", kind="cutover") == 1


async def test_tls_refusal_is_counted_by_reason(world: World) -> None:
    ctx = client_context(world.pki.rogue_cert, world.pki.rogue_key, world.pki.hub_ca_cert)
    with pytest.raises((BillhubError, OSError)):  # refused: closed at once
        link = await SwitchLink.connect("127.0.0.1", world.port, ctx, world.hub.codec)
        await link.sign_on()
    async with asyncio.timeout(5):
        while value(await scrape(world), "billhub_tls_refusals_total", reason="unknown_ca") < 1:
            await asyncio.sleep(0.05)
    s = await scrape(world)
    assert value(s, "billhub_tls_refusals_total") == 1


# -- health, readiness, status ---------------------------------------------------------------


async def test_readyz_means_can_take_a_link_and_record_payments(world: World) -> None:
    status, _, body = await get(world, "/healthz")
    assert status == 200
    # An idle hub is ready (a load balancer must send it the switch's first link);
    # "no signed-on link" is a warning in the body, and a metric and an alert.
    status, _, body = await get(world, "/readyz")
    assert status == 200, body
    assert '"no signed-on link from the switch"' in body and '"journal": "ok"' in body
    await world.link()
    status, _, body = await get(world, "/readyz")
    assert status == 200, body
    assert "no signed-on link" not in body
    # A hub whose journal does not answer cannot record payments: not ready.
    await world.hub.stores.close()
    status, _, body = await get(world, "/readyz")
    assert status == 503, body
    assert '"journal": "error"' in body
    # A hub whose listener stopped cannot take a link: not ready.
    world.hub.server.abort()
    status, _, body = await get(world, "/readyz")
    assert status == 503 and "link listener is not accepting" in body


async def test_failing_rest_biller_is_down_in_metrics_status_and_readyz(world: World) -> None:
    link = await world.link()
    world.rest.set_faults(Faults(fail_status=503))
    acct = find(world.rest_accounts)
    for _ in range(3):
        resp = await link.request(m.inquiry(REST, acct.account, world.next_rrn()))
        assert resp.fields[39] == "91"
    s = await scrape(world)
    assert value(s, "billhub_biller_up", biller=REST) == 0
    assert value(s, "billhub_biller_up", biller=BATCH) == 1
    assert value(s, "billhub_biller_calls_total", biller=REST, outcome="unavailable") == 3
    status, _, body = await get(world, "/readyz")
    assert status == 200, "one biller down is a warning, the hub still serves the others"
    assert f"biller {REST}: down" in body
    _, _, body = await get(world, "/status")
    data = json.loads(body)
    rest = next(b for b in data["billers"] if b["code"] == REST)
    assert rest["state"] == "down" and rest["recent_error_rate"] == 1.0
    assert rest["last_failure"] == "open_bills: unavailable"
    # One answer brings it back.
    world.rest.set_faults(Faults())
    assert (await link.request(m.inquiry(REST, acct.account, world.next_rrn()))).fields[39] == "00"
    assert value(await scrape(world), "billhub_biller_up", biller=REST) == 1


async def test_metrics_off_serves_health_and_status_but_no_metrics(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    config = parse_config(
        base_config(pki, tmp_path / "journal.db", metrics=False),
        base_dir=tmp_path,
        env={},
    )
    hub = build_hub(config)
    await hub.start()
    try:
        assert hub.obs is not None and hub.obs.metrics is None
        base = f"http://127.0.0.1:{hub.admin_port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/metrics") as r:
                assert r.status == 404 and "metrics = false" in await r.text()
            async with s.get(f"{base}/status") as r:
                assert r.status == 200 and (await r.json())["links"] == []
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 200
    finally:
        await hub.stop(1.0)


# -- the Metrics object alone ---------------------------------------------------------------------


def _metrics() -> Metrics:
    return Metrics(
        billers=["100001"],
        rules=load_spec(None).rules,
        refusal_reasons=REFUSAL_REASONS,
        process_metrics=False,
    )


def _request(mti: str, **fields: str) -> Message:
    return Message(mti, {int(k[2:]): v for k, v in fields.items()})


INFO = LinkInfo("L1", "127.0.0.1:1", "CN=switch-1")


def test_label_values_are_bounded_to_what_the_hub_knows() -> None:
    mx = _metrics()
    for i in range(50):  # fifty stray biller codes and processing codes: still one series each
        req = _request("0200", de3=f"{990000 + i}", de100=f"{900000 + i}")
        mx.link_event(Exchanged(INFO, req, _request("0210", de39="12"), 0.001, "handled"))
    mx.link_event(
        Exchanged(INFO, _request("0299"), _request("0299", de39="12"), 0.0, "undefined_mti")
    )
    mx.link_event(Exchanged(INFO, None, _request("0210", de39="30"), 0.0, "format_error"))
    s = parse(mx.render().decode())
    received = [lab for n, lab, _ in s if n == "billhub_messages_received_total"]
    assert received == [
        {"mti": "0200", "processing_code": "other", "biller": "unknown"},
        {"mti": "other", "processing_code": "", "biller": ""},
    ]
    assert value(s, "billhub_messages_received_total") == 51
    assert value(s, "billhub_messages_sent_total") == 52  # the undecodable frame's 30 too
    assert value(s, "billhub_messages_sent_total", response_code="30") == 1
    assert {lab["kind"] for n, lab, _ in s if n == "billhub_request_duration_seconds_count"} == {
        "other",
    }


def test_link_events_are_counted() -> None:
    mx = _metrics()
    mx.link_event(LinkOpened(INFO))
    mx.link_event(LinkClosed(INFO, "framing_error", "bad length"))
    mx.link_event(LinkClosed(INFO, "dead_peer", "3 echo tests unanswered"))
    mx.link_event(TlsRefusal("1.2.3.4:5", "subject_not_allowed", "CN=intruder"))
    mx.link_event(ConnectionRefusal("1.2.3.4:5", "too_many_links"))
    mx.link_event(FormatErrorSeen(INFO, DecodeError("DE 4", 20, "n 12"), True))
    mx.link_event(Unmatched(INFO, _request("0210")))
    mx.link_event(EchoRoundTrip(INFO, 0.004))
    mx.link_event(HandlerFailed(INFO, _request("0200"), RuntimeError()))
    mx.biller_call("100001", "post_payment", 0.2, "ok")
    mx.biller_call("100001", "payment_status", 0.0, "timeout")  # the resolver's failed try
    mx.journal_commit(3, 0.002)
    mx.bills_file("100001", "rejected")
    s = parse(mx.render().decode())
    assert value(s, "billhub_links_opened_total") == 1
    assert value(s, "billhub_links_closed_total", reason="framing_error") == 1
    assert value(s, "billhub_framing_errors_total") == 1
    assert value(s, "billhub_tls_refusals_total", reason="subject_not_allowed") == 1
    assert value(s, "billhub_connections_refused_total", reason="too_many_links") == 1
    assert value(s, "billhub_format_errors_total", answered="true") == 1
    assert value(s, "billhub_unmatched_responses_total") == 1
    assert value(s, "billhub_echo_rtt_seconds_bucket", le="0.005") == 1
    assert value(s, "billhub_handler_failures_total") == 1
    assert value(s, "billhub_biller_calls_total", outcome="timeout") == 1
    # A failed try reported without its time is counted but not observed as a latency.
    assert value(s, "billhub_biller_call_duration_seconds_count") == 1
    assert value(s, "billhub_journal_commit_group_size_sum") == 3
    assert value(s, "billhub_bills_files_total", outcome="rejected") == 1


def test_every_exported_metric_is_in_the_contract_table() -> None:
    mx = _metrics()
    families = {f.name: f for f in text_string_to_metric_families(mx.render().decode())}
    for name, (kind, _, _) in METRICS.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        assert base in families, name
        assert families[base].type == kind, name
    assert {n for n in families if n.startswith("billhub_")} == {
        n.removesuffix("_total") if METRICS[n][0] == "counter" else n for n in METRICS
    }


def test_fanouts_pass_every_report_on() -> None:
    seen: list[str] = []

    class Spy:
        def __call__(self, event: LinkEvent) -> None:
            seen.append(type(event).__name__)

        def __getattr__(self, name: str) -> Any:
            return lambda *a: seen.append(name)

    bus = LinkEventBus(Spy(), Spy())
    bus(LinkOpened(INFO))
    bus(Exchanged(INFO, None, _request("0810"), 0.0, "echo"))
    bus(EchoRoundTrip(INFO, 0.003))
    FanoutPipelineObserver(Spy(), Spy()).biller_call("1", "open_bills", 0.1, "ok")  # type: ignore[arg-type]
    assert (
        seen == ["LinkOpened"] * 2 + ["Exchanged"] * 2 + ["EchoRoundTrip"] * 2 + ["biller_call"] * 2
    )


def test_biller_health_states() -> None:
    now = [100.0]
    h = BillerHealth(["100001", "100002"], down_after=3, clock=lambda: now[0])
    assert h.report("100001")["state"] == "idle" and h.is_up("100001")
    h.biller_call("100001", "open_bills", 0.1, "rejected")  # an answer: the biller is up
    assert h.report("100001")["state"] == "ok"
    for _ in range(2):
        h.biller_call("100001", "open_bills", 1.0, "timeout")
    assert h.report("100001")["state"] == "failing" and h.is_up("100001")
    h.biller_call("100001", "post_payment", 1.0, "unavailable")
    now[0] = 112.0
    r = h.report("100001")
    assert r["state"] == "down" and not h.is_up("100001")
    assert r["recent_calls"] == 4 and r["recent_error_rate"] == 0.75
    assert r["last_failure"] == "post_payment: unavailable" and r["last_failure_s_ago"] == 12.0
    h.unauthorized("100002")
    assert h.up() == {"100001": False, "100002": False}
    h.biller_call("100002", "open_bills", 0.1, "ok")
    h.biller_call("100001", "open_bills", 0.1, "ok")
    assert h.up() == {"100001": True, "100002": True}
    h.biller_call("999999", "open_bills", 0.1, "timeout")  # not configured: ignored
    assert h.report("999999") == {"state": "unknown"}


async def test_watch_readiness_names_a_stuck_journal_and_all_billers_down() -> None:
    class Link:
        info = INFO
        in_flight = 0
        signed_on = True

    async def stuck() -> tuple[int, None]:
        await asyncio.sleep(10)
        return 0, None

    health = BillerHealth(["100001"])
    watch = HubWatch(
        links=lambda: [Link()],
        billers=[BillerInfo("100001", "Damascus", "rest")],
        health=health,
        backlog=stuck,
        business_day=lambda: date(2026, 1, 1),
        journal_timeout=0.05,
    )
    ready, body = await watch.readiness()
    assert not ready and body["journal"] == "timeout"
    assert body["problems"] == ["journal: no answer within 0.05 s"]
    health.unauthorized("100001")
    ready, body = await watch.readiness()
    # Billers down are warnings: the hub still takes links and records payments.
    assert body["problems"] == ["journal: no answer within 0.05 s"]
    assert body["warnings"] == ["biller 100001: unauthorized", "every biller is down"]
    status = await watch.status()
    assert status["resolver"] == {"error": "TimeoutError"}
    assert status["billers"][0]["state"] == "unauthorized"
