"""Transactions end to end: the switch simulator, the hub, a REST and a batch biller.

Every check is what the switch operator or a biller would look at: the response
code and fields on the wire, the biller's own ledger (how many times a payment
was really posted), the journal, the payments file.
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
from tests.txharness import BATCH, REST, TODAY, World, find, mmdd, settle, start_world, tlv

from billhub.iso8583.de48 import parse_bills
from billhub.pipeline.model import PaymentState, Resolution
from billhub.simulator import messages as m
from billhub.simulator.rest_biller import Faults


@pytest.fixture
async def world(tmp_path: Path, pki) -> World:  # type: ignore[no-untyped-def]
    w = await start_world(tmp_path, pki)
    yield w  # type: ignore[misc]
    await w.close()


# -- inquiry ---------------------------------------------------------------------------


@pytest.mark.parametrize("biller", [REST, BATCH])
async def test_an_approved_payment_carries_the_name_with_no_inquiry_first(
    world: World, biller: str
) -> None:
    # LINK-SPEC 6.3: CN on every approved payment, whether or not this hub saw an
    # inquiry for the account (on several instances, the inquiry may go elsewhere).
    accounts = world.rest_accounts if biller == REST else world.batch_accounts
    acct = find(accounts, partial=False)
    link = await world.link()
    resp = await link.request(world.pay(biller, acct))
    assert resp.fields[39] == "00"
    assert tlv(resp)["CN"] == acct.customer_name
    assert tlv(resp)["RN"]


@pytest.mark.parametrize("biller", [REST, BATCH])
async def test_inquiry_lists_open_bills_and_total(world: World, biller: str) -> None:
    accounts = world.rest_accounts if biller == REST else world.batch_accounts
    acct = find(accounts, min_bills=2, max_bills=12)
    link = await world.link()
    resp = await link.request(m.inquiry(biller, acct.account, world.next_rrn()))
    assert resp.fields[39] == "00"
    assert int(resp.fields[4]) == acct.total_due
    sub = tlv(resp)
    assert sub["CN"] == acct.customer_name
    bills = parse_bills(sub["BL"])
    assert [b.bill_id for b in bills] == [b.bill_id for b in acct.bills]
    assert sum(b.amount for b in bills) == acct.total_due
    assert sub["PA"] == ("Y" if acct.partial_allowed and biller == REST else "N")


async def test_inquiry_lists_at_most_12_bills_but_totals_all(world: World) -> None:
    acct = find(world.rest_accounts, min_bills=13)
    link = await world.link()
    resp = await link.request(m.inquiry(REST, acct.account, world.next_rrn()))
    bills = parse_bills(tlv(resp)["BL"])
    assert len(bills) == 12
    assert [b.bill_id for b in bills] == [b.bill_id for b in acct.bills[:12]]
    assert int(resp.fields[4]) == acct.total_due > sum(b.amount for b in bills)


async def test_partial_payment_account_carries_minimum(world: World) -> None:
    acct = find(world.rest_accounts, partial=True)
    link = await world.link()
    sub = tlv(await link.request(m.inquiry(REST, acct.account, world.next_rrn())))
    assert sub["PA"] == "Y" and int(sub["MN"]) == acct.min_payment


@pytest.mark.parametrize("biller", [REST, BATCH])
async def test_inquiry_refusals(world: World, biller: str) -> None:
    accounts = world.rest_accounts if biller == REST else world.batch_accounts
    link = await world.link()
    blocked = find(accounts, status="blocked")
    resp = await link.request(m.inquiry(biller, blocked.account, world.next_rrn()))
    assert resp.fields[39] == "58"
    resp = await link.request(m.inquiry(biller, "0999999999", world.next_rrn()))
    assert resp.fields[39] == "14"
    paid_up = find(accounts, due=False)
    resp = await link.request(m.inquiry(biller, paid_up.account, world.next_rrn()))
    assert resp.fields[39] == "51" and tlv(resp)["CN"] == paid_up.customer_name


async def test_unknown_biller_and_bad_currency(world: World) -> None:
    link = await world.link()
    assert (await link.request(m.inquiry("999999", "0100000000", world.next_rrn()))).fields[
        39
    ] == "92"
    acct = find(world.rest_accounts)
    pay = world.pay("999999", acct)
    assert (await link.request(pay)).fields[39] == "92"
    bad = m.inquiry(REST, acct.account, world.next_rrn())
    bad.fields[49] = "840"
    assert (await link.request(bad)).fields[39] == "30"


# -- payment -----------------------------------------------------------------------------


async def test_rest_payment_approved_once_with_receipt(world: World) -> None:
    acct = find(world.rest_accounts, partial=False)
    link = await world.link()
    await link.request(m.inquiry(REST, acct.account, world.next_rrn()))
    pay = world.pay(REST, acct)
    resp = await link.request(pay)
    assert resp.fields[39] == "00"
    assert len(resp.fields[38]) == 6
    sub = tlv(resp)
    assert sub["CN"] == acct.customer_name
    record = await world.payment_record(pay)
    assert record is not None and record.state is PaymentState.APPROVED
    (entry,) = world.ledger(record.payment_id)
    assert entry["receipt"] == sub["RN"] and entry["post_count"] == 1
    assert entry["amount"] == acct.total_due and entry["status"] == "posted"
    again = await link.request(m.inquiry(REST, acct.account, world.next_rrn()))
    assert again.fields[39] == "51", "paid in full: nothing due any more"


@pytest.mark.parametrize("biller", [REST, BATCH])
async def test_payment_amount_and_account_rules(world: World, biller: str) -> None:
    accounts = world.rest_accounts if biller == REST else world.batch_accounts
    link = await world.link()
    acct = find(accounts, partial=False, min_bills=2)
    assert (await link.request(world.pay(biller, acct, acct.total_due - 1))).fields[39] == "13"
    assert (await link.request(world.pay(biller, acct, acct.total_due + 1))).fields[39] == "13"
    assert (await link.request(world.pay(biller, acct, 0))).fields[39] == "13"
    first = acct.bills[0]
    named = await link.request(world.pay(biller, acct, first.amount, bill_id=first.bill_id))
    assert named.fields[39] == "00", "a named bill is paid alone"
    again = await link.request(world.pay(biller, acct, first.amount, bill_id=first.bill_id))
    assert again.fields[39] == "51", "that bill is no longer open"
    blocked = find(accounts, status="blocked")
    assert (await link.request(world.pay(biller, blocked))).fields[39] == "58"
    unknown = m.payment(biller, "0999999999", world.next_rrn(), 1000, mmdd())
    assert (await link.request(unknown)).fields[39] == "14"
    paid_up = find(accounts, due=False)
    assert (await link.request(world.pay(biller, paid_up, 1000))).fields[39] == "51"


async def test_partial_payment_rules(world: World) -> None:
    acct = find(world.rest_accounts, partial=True)
    link = await world.link()
    low = min(acct.min_payment, acct.total_due) - 1
    assert (await link.request(world.pay(REST, acct, low))).fields[39] == "13"
    ok = await link.request(world.pay(REST, acct, acct.min_payment))
    assert ok.fields[39] == "00"


async def test_batch_payment_marks_bills_paid_in_the_hub_store(world: World) -> None:
    acct = find(world.batch_accounts, partial=False, min_bills=2, max_bills=12)
    link = await world.link()
    first = acct.bills[0]
    resp = await link.request(world.pay(BATCH, acct, first.amount, bill_id=first.bill_id))
    assert resp.fields[39] == "00" and tlv(resp)["RN"]
    inq = await link.request(m.inquiry(BATCH, acct.account, world.next_rrn()))
    assert [b.bill_id for b in parse_bills(tlv(inq)["BL"])] == [b.bill_id for b in acct.bills[1:]]
    assert int(inq.fields[4]) == acct.total_due - first.amount


# -- repeats ------------------------------------------------------------------------------


async def test_repeats_get_the_original_answer_and_post_once(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    world = await start_world(tmp_path, pki, faults=Faults(latency_ms=300), budget=2.0)
    try:
        acct = find(world.rest_accounts, partial=False)
        one, two = await world.link(), await world.link()
        pay = world.pay(REST, acct)
        original = one.send(pay)
        await asyncio.sleep(0.05)
        # While the original is still with the biller: 0200 again, 0201, and one on link 2.
        in_flight = [
            one.send(m.repeat(pay, "0200")),
            one.send(m.repeat(pay)),
            two.send(m.repeat(pay)),
        ]
        first = await original
        later = [await one.request(m.repeat(pay)), await two.request(m.repeat(pay, "0200"))]
        answers = [first, *(await asyncio.gather(*in_flight)), *later]
        assert len(answers) == 6 and first.fields[39] == "00"
        for a in answers:
            assert a.mti == "0210"
            assert (a.fields[39], a.fields[38], a.fields[48]) == (
                first.fields[39],
                first.fields[38],
                first.fields[48],
            )
        record = await world.payment_record(pay)
        assert record is not None
        (entry,) = world.ledger(record.payment_id)
        assert entry["post_count"] == 1, "exactly one posting at the biller"
        assert len(world.ledger()) == 1
    finally:
        await world.close()


async def test_same_key_different_content_is_94_and_original_untouched(world: World) -> None:
    acct = find(world.rest_accounts, partial=False, min_bills=2)
    link = await world.link()
    pay = world.pay(REST, acct)
    assert (await link.request(pay)).fields[39] == "00"
    other = m.repeat(pay)
    other.fields[4] = f"{acct.total_due - 100:012d}"
    assert (await link.request(other)).fields[39] == "94"
    record = await world.payment_record(pay)
    assert record is not None and record.amount == acct.total_due
    assert record.state is PaymentState.APPROVED
    assert (await link.request(m.repeat(pay))).fields[39] == "00"


async def test_a_declined_key_stays_declined(world: World) -> None:
    acct = find(world.rest_accounts, partial=False)
    link = await world.link()
    bad = world.pay(REST, acct, acct.total_due + 5)
    assert (await link.request(bad)).fields[39] == "13"
    assert (await link.request(m.repeat(bad))).fields[39] == "13"
    assert world.ledger() == []


# -- reversals ------------------------------------------------------------------------------


async def test_reversal_and_its_repeat(world: World) -> None:
    acct = find(world.rest_accounts, partial=False)
    link = await world.link()
    pay = world.pay(REST, acct)
    assert (await link.request(pay)).fields[39] == "00"
    wrong = m.reversal(pay, amount=acct.total_due - 1)
    assert (await link.request(wrong)).fields[39] == "13", "full reversals only"
    rev = m.reversal(pay)
    resp = await link.request(rev)
    assert (resp.mti, resp.fields[39]) == ("0430", "00")
    assert (await link.request(m.reversal(pay, mti="0421"))).fields[39] == "00"
    await settle(world)
    record = await world.payment_record(pay)
    assert record is not None and record.reversed
    (entry,) = world.ledger(record.payment_id)
    assert entry["status"] == "cancelled" and entry["post_count"] == 1
    # The payment's own repeat still gets its original answer.
    assert (await link.request(m.repeat(pay))).fields[39] == "00"


async def test_reversal_of_a_declined_payment_is_25(world: World) -> None:
    acct = find(world.rest_accounts, partial=False)
    link = await world.link()
    pay = world.pay(REST, acct, acct.total_due + 1)
    assert (await link.request(pay)).fields[39] == "13"
    assert (await link.request(m.reversal(pay, amount=acct.total_due + 1))).fields[39] == "25"
    assert (await link.request(m.repeat(pay))).fields[39] == "13"


@pytest.mark.parametrize("biller", [REST, BATCH])
async def test_reversal_before_original_then_late_original_is_25(world: World, biller: str) -> None:
    accounts = world.rest_accounts if biller == REST else world.batch_accounts
    acct = find(accounts, partial=False)
    link = await world.link()
    pay = world.pay(biller, acct)
    pay.fields[7], pay.fields[11] = "1126101010", "000999"
    assert (await link.request(m.reversal(pay))).fields[39] == "25"
    late = m.repeat(pay, "0200")
    assert (await link.request(late)).fields[39] == "25"
    if biller == REST:
        assert world.ledger() == [], "nothing reached the biller"
    inq = await link.request(m.inquiry(biller, acct.account, world.next_rrn()))
    assert int(inq.fields[4]) == acct.total_due, "the bills are still open"


async def test_batch_reversal_reopens_the_bill(world: World) -> None:
    acct = find(world.batch_accounts, partial=False, max_bills=12)
    link = await world.link()
    pay = world.pay(BATCH, acct)
    assert (await link.request(pay)).fields[39] == "00"
    assert (await link.request(m.inquiry(BATCH, acct.account, world.next_rrn()))).fields[39] == "51"
    assert (await link.request(m.reversal(pay))).fields[39] == "00"
    inq = await link.request(m.inquiry(BATCH, acct.account, world.next_rrn()))
    assert inq.fields[39] == "00" and int(inq.fields[4]) == acct.total_due


# -- billers that misbehave --------------------------------------------------------------------


async def _uncertain(world: World, faults: Faults) -> tuple[str, object]:
    world.rest.set_faults(faults)
    acct = find(world.rest_accounts, partial=False)
    link = await world.link()
    pay = world.pay(REST, acct)
    resp = await link.request(pay)
    record = await world.payment_record(pay)
    assert record is not None
    return resp.fields[39], record


async def test_biller_posting_after_the_budget_is_91_then_cancelled(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    world = await start_world(tmp_path, pki, budget=0.3, quiet=2.0)
    try:
        code, record = await _uncertain(world, Faults(post_delay_ms=800))
        assert code == "91"
        assert record.state is PaymentState.UNCERTAIN  # type: ignore[attr-defined]
        world.rest.set_faults(Faults())
        await settle(world)
        (entry,) = world.ledger(record.payment_id)  # type: ignore[attr-defined]
        assert entry["status"] == "cancelled", "the biller keeps nothing for a 91"
        done = await world.payment_record_by_id(record.payment_id)  # type: ignore[attr-defined]
        assert done.resolution is Resolution.CANCELLED
    finally:
        await world.close()


async def test_biller_that_never_posts_is_91_and_resolved_never_posted(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    world = await start_world(tmp_path, pki, budget=0.3, quiet=0.5)
    try:
        code, record = await _uncertain(world, Faults(hang=True))
        assert code == "91"
        world.rest.set_faults(Faults())
        await settle(world)
        assert world.ledger(record.payment_id) == []  # type: ignore[attr-defined]
        done = await world.payment_record_by_id(record.payment_id)  # type: ignore[attr-defined]
        assert done.resolution is Resolution.NEVER_POSTED
    finally:
        await world.close()


async def test_biller_returning_503_is_91_and_retried_until_it_answers(world: World) -> None:
    code, record = await _uncertain(world, Faults(fail_status=503))
    assert code == "91"
    await asyncio.sleep(0.4)
    assert await world.hub.journal.open_tasks(), "still open while the biller is down"  # type: ignore[union-attr]
    world.rest.set_faults(Faults())
    await settle(world)
    assert world.ledger(record.payment_id) == []  # type: ignore[attr-defined]


async def test_biller_that_posts_and_drops_the_connection(world: World) -> None:
    code, record = await _uncertain(world, Faults(drop_after_post=True))
    assert code == "91"
    world.rest.set_faults(Faults())
    await settle(world)
    (entry,) = world.ledger(record.payment_id)  # type: ignore[attr-defined]
    assert entry["status"] == "cancelled"


async def test_a_slow_biller_does_not_starve_the_others(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    world = await start_world(
        tmp_path, pki, budget=0.5, rest_concurrency=2, faults=Faults(latency_ms=2000)
    )
    try:
        link = await world.link()
        slow = [
            link.send(m.inquiry(REST, a.account, world.next_rrn()))
            for a in world.rest_accounts[:20]
        ]
        await asyncio.sleep(0.05)
        acct = find(world.batch_accounts).account
        fast = await link.request(m.inquiry(BATCH, acct, world.next_rrn()))
        assert fast.fields[39] == "00"
        assert not any(f.done() for f in slow), (
            "the batch biller answered while every request to the stuck REST biller waited"
        )
        codes = {r.fields[39] for r in await asyncio.gather(*slow)}
        assert codes == {"91"}, "the slow biller's requests run out of their own budget"
    finally:
        await world.close()


# -- files ---------------------------------------------------------------------------------------


async def test_bills_file_with_one_bad_row_is_rejected_whole(world: World) -> None:
    good = world.inbox / "loaded"
    bad = world.inbox / f"bills-{BATCH}-{TODAY:%Y%m%d}-2.csv"
    acct = world.batch_accounts[0]
    bad.write_text(
        "account,customer_name,bill_id,period,due_date,amount,status\n"
        f"{acct.account},{acct.customer_name},ZZ-NEW-1,202612,2027-01-15,125000,open\n"
        f"{acct.account},{acct.customer_name},ZZ-NEW-2,202612,2027-01-15,12.5,open\n",
        "utf-8",
    )
    results = await world.hub.load_bills_files()
    assert len(results) == 1
    rejected = world.inbox / "rejected" / bad.name
    assert rejected.exists() and not bad.exists()
    reason = (world.inbox / "rejected" / (bad.name + ".reason")).read_text("utf-8")
    assert "3" in reason and "amount" in reason, reason
    link = await world.link()
    inq = await link.request(m.inquiry(BATCH, acct.account, world.next_rrn()))
    ids = [b.bill_id for b in parse_bills(tlv(inq).get("BL", ""))] if inq.fields[39] == "00" else []
    assert "ZZ-NEW-1" not in ids, "nothing of a rejected file is loaded"
    assert good.exists()


async def test_payments_file_at_cutover_matches_the_journal(world: World) -> None:
    link = await world.link()
    payable = [a for a in world.batch_accounts if a.status == "active" and a.total_due > 0][:5]
    sent = []
    for a in payable:
        pay = world.pay(BATCH, a)
        assert (await link.request(pay)).fields[39] == "00"
        sent.append((pay, a.total_due))
    assert (await link.request(m.reversal(sent[0][0]))).fields[39] == "00"
    tomorrow = TODAY.fromordinal(TODAY.toordinal() + 1)
    assert (await link.cutover(mmdd(tomorrow))).fields[39] == "00"
    path = world.outbox / f"payments-{BATCH}-{TODAY:%Y%m%d}.csv"
    rows = list(csv.reader(path.read_text("utf-8").splitlines()))
    assert rows[0] == [
        "payment_id",
        "settlement_date",
        "account",
        "bill_id",
        "amount",
        "acquirer",
        "rrn",
        "channel",
        "receipt",
        "status",
    ]
    approved = [r for r in rows[1:-1] if r[-1] == "approved"]
    reversed_ = [r for r in rows[1:-1] if r[-1] == "reversed"]
    total = sum(amount for _, amount in sent)
    assert rows[-1] == ["TOTAL", "5", str(total), "1", str(sent[0][1])]
    assert sorted(int(r[4]) for r in approved) == sorted(amount for _, amount in sent)
    assert [int(r[4]) for r in reversed_] == [sent[0][1]]
    journal = world.hub.journal
    assert journal is not None
    held = await journal.approved_payments(BATCH, TODAY)
    assert {p.payment_id for p in held} == {r[0] for r in approved}
