"""Two or three hub instances on one PostgreSQL journal, each a ``billhub serve`` process.

The switch reaches each instance over its own mutual-TLS link; a repeat, a
reversal or a cutover may arrive on any of them (LINK-SPEC 6.1, 6.3-6.5). The
biller is one demo REST biller process, whose ledger says what was posted and
how often. Whatever an instance keeps in memory (name caches, tombstones, key
locks), the switch must never get two answers for one key.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.instancesharness import BATCH, BILLER, Cluster, start_cluster
from tests.txharness import TODAY, mmdd

from billhub.errors import BillhubError
from billhub.iso8583.de48 import parse_tlv
from billhub.iso8583.message import Message
from billhub.simulator import messages as m
from billhub.simulator.demo_data import DemoAccount, generate_accounts, write_bills_file
from billhub.simulator.switch import SwitchLink

ACCOUNTS = generate_accounts("01", 400, 7, today=TODAY)
BILLS = [(a, b) for a in ACCOUNTS if a.status == "active" for b in a.bills]
TOMORROW = TODAY.fromordinal(TODAY.toordinal() + 1)


@pytest.fixture
async def cluster(tmp_path: Path, pki: Any, pg_dsn: str) -> AsyncIterator[Cluster]:
    c = await start_cluster(tmp_path, pki, pg_dsn, "--latency-ms", "2", today=TODAY.isoformat())
    try:
        yield c
    finally:
        await c.close()


def pay(i: int, *, amount: int | None = None) -> Message:
    """Payment number ``i``: one open bill of the demo data, named by its BI."""
    account, bill = BILLS[i]
    return m.payment(
        BILLER,
        account.account,
        f"{i:012d}",
        bill.amount if amount is None else amount,
        mmdd(),
        bill_id=bill.bill_id,
    )


def answer(resp: Message) -> tuple[str | None, str | None, str | None]:
    """What a repeat must get back unchanged: DE 39, 38 and 48."""
    return resp.fields.get(39), resp.fields.get(38), resp.fields.get(48)


async def wait_state(cluster: Cluster, rrn: str, state: str) -> None:
    async with asyncio.timeout(10):
        while (row := await cluster.payment(rrn)) is None or row["state"] != state:
            await asyncio.sleep(0.01)


def account_of(i: int) -> DemoAccount:
    return BILLS[i][0]


async def test_a_repeat_on_the_other_instance_gets_the_original_answer(
    cluster: Cluster,
) -> None:
    a, b = cluster.start_instance("a"), cluster.start_instance("b")
    on_a, on_b = await cluster.link(a), await cluster.link(b)

    original = pay(0)
    first = await on_a.request(original)
    assert first.fields[39] == "00"
    again = await on_b.request(m.repeat(original, "0200"))
    advice = await on_b.request(m.repeat(original, "0201"))
    assert answer(again) == answer(first) == answer(advice), "one key, one answer"
    assert parse_tlv(first.fields[48])["CN"] == account_of(0).customer_name
    (entry,) = [e for e in cluster.ledger().values() if e["rrn"] == "000000000000"]
    assert entry["post_count"] == 1 and entry["status"] == "posted"

    other = await on_b.request(m.repeat(pay(0, amount=BILLS[0][1].amount - 1), "0200"))
    assert other.fields[39] == "94", "same key, other content"
    assert answer(await on_a.request(m.repeat(original, "0201"))) == answer(first)
    assert len(cluster.ledger()) == 1, "the 94 posted nothing"

    # In flight: the biller holds the posting 1.5 s while the repeats arrive on B.
    cluster.faults(post_delay_ms=1500)
    slow = pay(1)
    pending = asyncio.ensure_future(on_a.request(slow))
    await wait_state(cluster, slow.fields[37].strip(), "posting")
    repeats = [asyncio.ensure_future(on_b.request(m.repeat(slow, mti))) for mti in ("0200", "0201")]
    slow_answer = await pending
    assert slow_answer.fields[39] == "00"
    for r in repeats:
        assert answer(await r) == answer(slow_answer), "the repeat waited for the original"
    posted = [e for e in cluster.ledger().values() if e["rrn"] == "000000000001"]
    assert [e["post_count"] for e in posted] == [1]


async def test_one_key_sent_to_both_instances_at_once_has_one_answer(cluster: Cluster) -> None:
    """The key's lock of each process cannot see the other: the journal decides."""
    a, b = cluster.start_instance("a"), cluster.start_instance("b")
    on_a, on_b = await cluster.link(a), await cluster.link(b)
    same = [pay(i) for i in range(10, 30)]
    pairs = await asyncio.gather(
        *(asyncio.gather(on_a.request(p), on_b.request(m.repeat(p, "0200"))) for p in same)
    )
    for x, y in pairs:
        assert answer(x) == answer(y)
        assert x.fields[39] == "00"
    clashing = [(pay(i), pay(i, amount=BILLS[i][1].amount - 1)) for i in range(30, 50)]
    results = await asyncio.gather(
        *(asyncio.gather(on_a.request(p), on_b.request(q)) for p, q in clashing)
    )
    for x, y in results:
        codes = sorted([x.fields[39], y.fields[39]])
        assert "94" in codes and len(set(codes)) == 2, f"one key answered {codes}"
    ledger = cluster.ledger()
    assert len(ledger) == len(same) + len(clashing) - sum(
        1 for x, y in results if "00" not in (x.fields[39], y.fields[39])
    )
    assert all(e["post_count"] == 1 for e in ledger.values())


async def test_a_reversal_on_the_other_instance(cluster: Cluster) -> None:
    a, b = cluster.start_instance("a"), cluster.start_instance("b")
    on_a, on_b = await cluster.link(a), await cluster.link(b)

    original = pay(2)
    sent = await on_a.request(original)
    assert sent.fields[39] == "00"
    original.fields[7], original.fields[11] = sent.fields[7], sent.fields[11]
    assert (await on_b.request(m.reversal(original))).fields[39] == "00"
    assert (await on_a.request(m.reversal(original, mti="0421"))).fields[39] == "00"
    assert answer(await on_a.request(m.repeat(original, "0200"))) == answer(sent)
    await cluster.wait_tasks_done()
    (entry,) = [e for e in cluster.ledger().values() if e["rrn"] == "000000000002"]
    assert entry["status"] == "cancelled" and entry["cancel_count"] == 1

    # A reversal for an original never seen, on A; the original arrives late on B.
    late = pay(3)
    late.fields[7], late.fields[11] = "1202101010", "000777"
    assert (await on_a.request(m.reversal(late))).fields[39] == "25"
    assert (await on_b.request(m.repeat(late, "0200"))).fields[39] == "25"
    assert (await on_a.request(m.repeat(late, "0201"))).fields[39] == "25"
    assert not [e for e in cluster.ledger().values() if e["rrn"] == "000000000003"]


async def test_a_cutover_on_one_instance_closes_the_day_for_all(cluster: Cluster) -> None:
    a, b, c = (cluster.start_instance(n) for n in "abc")
    links = [await cluster.link(i) for i in (a, b, c)]
    answered = await asyncio.gather(*(links[i % 3].request(pay(i)) for i in range(100, 130)))
    assert all(r.fields[39] == "00" for r in answered)
    total = sum(int(r.fields[4]) for r in answered)
    first = pay(100)

    assert (await links[1].cutover(mmdd(TOMORROW))).fields[39] == "00"
    for i, link in enumerate(links):
        late = await link.request(pay(140 + i))
        assert late.fields[39] == "90", "the closed date is closed on every instance"
        assert answer(await link.request(m.repeat(first, "0201"))) == answer(answered[0])
    for link in links:  # a 0500 on any instance sees the whole day
        recon = m.reconciliation(
            BILLER, mmdd(), count=30, total=total, reversal_count=0, reversal_total=0
        )
        assert (await link.request(recon)).fields[39] == "00"
    wrong = m.reconciliation(
        BILLER, mmdd(), count=20, total=total, reversal_count=0, reversal_total=0
    )
    assert (await links[2].request(wrong)).fields[39] == "95"


async def test_resolver_tasks_are_shared_and_never_worked_twice(cluster: Cluster) -> None:
    """Payments the biller posted but never confirmed (`91`) on both instances: the
    resolver of each takes tasks the other has not, and each is worked once."""
    a, b = cluster.start_instance("a"), cluster.start_instance("b")
    on_a, on_b = await cluster.link(a), await cluster.link(b)
    cluster.faults(drop_after_post=True)
    declined = await asyncio.gather(
        *((on_a if i % 2 else on_b).request(pay(i)) for i in range(200, 260))
    )
    assert {r.fields[39] for r in declined} == {"91"}
    cluster.faults()  # the biller answers again: status shows them posted, then cancel
    await cluster.wait_tasks_done()
    ledger = cluster.ledger()
    assert len(ledger) == 60
    for e in ledger.values():
        assert e["status"] == "cancelled", "a 91 is not kept by the biller"
        assert (e["status_calls"], e["cancel_calls"]) == (1, 1), "each task worked once"
    workers = await cluster.query("SELECT DISTINCT instance FROM payments")
    assert len(workers) == 2


async def _send_all(link: SwitchLink, requests: list[Message], answers: dict[str, Message]) -> None:
    """Send what has no answer yet (a re-sent one as a repeat) until the link dies."""
    sem = asyncio.Semaphore(32)

    async def one(req: Message) -> None:
        async with sem:
            if link.is_closed:
                return
            msg = m.repeat(req, "0200") if req.fields.get(7) else req
            try:
                resp = await link.request(msg, timeout=15)
            except BillhubError:
                return
            answers[req.fields[37]] = resp
            req.fields[7] = resp.fields[7]

    await asyncio.gather(*(one(r) for r in requests if r.fields[37] not in answers))


async def test_sigkill_of_one_instance_mid_traffic(cluster: Cluster) -> None:
    """B carries on, takes over what A left half-way and A's resolver tasks; then every
    `00` is posted exactly once and the biller holds nothing else."""
    cluster.faults(latency_ms=20)
    a, b = cluster.start_instance("a"), cluster.start_instance("b")
    on_a, on_b = await cluster.link(a), await cluster.link(b)
    for_a = [pay(i) for i in range(300, 600)]
    for_b = [pay(i) for i in range(600, 700)]
    answers: dict[str, Message] = {}
    sent_a = asyncio.ensure_future(_send_all(on_a, for_a, answers))
    sent_b = asyncio.ensure_future(_send_all(on_b, for_b, answers))
    while len(answers) < 100:
        await asyncio.sleep(0.01)
    a.kill()
    await sent_a
    before = {rrn: answer(r) for rrn, r in answers.items()}
    assert len([r for r in for_a if r.fields[37] not in answers]) > 0, "killed mid-flight"
    await sent_b
    await _send_all(on_b, for_a, answers)  # the switch re-sends on its other link
    assert len(answers) == len(for_a) + len(for_b)
    for rrn, was in before.items():
        assert answer(answers[rrn]) == was, "an answer given never changes"
    await cluster.wait_tasks_done()

    ledger = cluster.ledger()
    rows = await cluster.query(
        "SELECT rtrim(rrn) AS rrn, payment_id, state, response_code, instance FROM payments"
    )
    journal = {r["rrn"]: r for r in rows}
    approved = 0
    for rrn, resp in answers.items():
        row = journal[rrn.strip()]
        entry = ledger.get(row["payment_id"])
        if resp.fields[39] == "00":
            approved += 1
            assert row["state"] == "approved"
            assert entry is not None and entry["status"] == "posted"
            assert entry["post_count"] == 1
        else:
            assert entry is None or entry["status"] == "cancelled"
    assert approved > 0
    held = [e for e in ledger.values() if e["status"] == "posted"]
    assert len(held) == approved, "the biller holds exactly the approved payments"
    assert not [r for r in rows if r["state"] == "posting"], "nothing is left half-way"
    of_a = [r for r in rows if f"-{a.proc.pid}-" in (r["instance"] or "")]
    taken_over = [r for r in of_a if r["state"] == "uncertain"]
    print(
        f"\nanswered before the kill {len(before)}, approved {approved}, "
        f"A's payments {len(of_a)}, of them taken over by B {len(taken_over)}"
    )


def _bills_file_events(cluster: Cluster) -> list[str]:
    """The outcome of every bills file an instance took in, from the instances' logs."""
    out = []
    for inst in cluster.instances:
        for line in inst.log.read_text().splitlines():
            if '"bills_file"' in line:
                out.append(json.loads(line)["outcome"])
    return out


async def test_a_batch_biller_on_two_instances(cluster: Cluster, tmp_path: Path) -> None:
    """One bills file, two instances starting together: loaded once, the same bills on
    both; a bill paid on one is taken on the other; one payments file at cutover."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    accounts = [a for a in generate_accounts("02", 40, 12, today=TODAY) if a.status == "active"]
    write_bills_file(inbox, BATCH, accounts, day=TODAY)
    a, b = await asyncio.gather(
        *(asyncio.to_thread(cluster.start_instance, n, batch=(inbox, outbox)) for n in "ab")
    )
    assert _bills_file_events(cluster).count("loaded") == 1, "the file is loaded once"
    on_a, on_b = await cluster.link(a), await cluster.link(b)
    payable = [x for x in accounts if x.bills and not x.partial_allowed]
    for x in payable[:5]:
        ask = [m.inquiry(BATCH, x.account, f"5{i:011d}") for i in range(2)]
        seen = [await on_a.request(ask[0]), await on_b.request(ask[1])]
        assert seen[0].fields[4] == seen[1].fields[4] == f"{x.total_due:012d}"

    first, second = payable[0], payable[1]
    bill = first.bills[0]
    paid = [
        m.payment(BATCH, first.account, "600000000001", bill.amount, mmdd(), bill_id=bill.bill_id),
        m.payment(BATCH, first.account, "600000000002", bill.amount, mmdd(), bill_id=bill.bill_id),
    ]
    assert (await on_a.request(paid[0])).fields[39] == "00"
    assert (await on_b.request(paid[1])).fields[39] == "51", "the bill is taken on B too"
    on_b_paid = m.payment(BATCH, second.account, "600000000003", second.total_due, mmdd())
    assert (await on_b.request(on_b_paid)).fields[39] == "00"

    assert (await on_a.cutover(mmdd(TOMORROW))).fields[39] == "00"
    files = sorted(outbox.glob(f"payments-{BATCH}-*.csv"))
    assert [f.name for f in files] == [f"payments-{BATCH}-{TODAY:%Y%m%d}.csv"]
    rows = list(csv.reader(files[0].read_text().splitlines()))
    approved = sorted(r[6].strip() for r in rows[1:-1] if r[-1] == "approved")
    assert approved == ["600000000001", "600000000003"], "both instances' payments, once"
    assert rows[-1][:3] == ["TOTAL", "2", str(bill.amount + second.total_due)]
