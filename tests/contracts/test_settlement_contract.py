"""The settlement store contract (:class:`~billhub.settlement.ports.SettlementStore`),
run over every journal with one (``SETTLEMENT_KINDS`` in ``tests/contracts/kinds.py``).

Clearing's figures come from here: DE 74-87 of a 0510 are :meth:`day_totals`, a
cutover is recorded once whichever instance receives it, a settlement file is
imported once, and the report reads the day's payments, reversals, findings and
what is still uncertain. Money comes back as ``int`` on every engine.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from tests.journal_records import (
    BILLER,
    SDATE,
    T0,
    approve,
    approved_in_journal,
    key,
    payment,
    reversal,
    task_for,
)

from billhub.journal.factory import JournalSet
from billhub.pipeline.model import PaymentState, Resolution
from billhub.settlement.model import (
    Finding,
    FindingKind,
    ImportOutcome,
    Reconciliation,
    Totals,
)
from billhub.settlement.ports import CutoverRecord

NEXT = SDATE + timedelta(days=1)


async def a_day(stores: JournalSet) -> dict[str, Any]:
    """Three approved payments (one reversed), a declined one, an uncertain one,
    a reversal answered 25, and one payment of another biller and one of the next day."""
    j = stores.journal
    big = 2**62  # far past what a float holds exactly
    p1 = await approved_in_journal(j, "000000000001", amount=125_000)
    p2 = await approved_in_journal(j, "000000000002", amount=big)
    p3 = await approved_in_journal(j, "000000000003", amount=80_000)
    declined, _ = await j.insert_payment(payment("000000000004", amount=5_000))
    declined.state, declined.response_code, declined.answered_at = PaymentState.DECLINED, "13", T0
    await j.finish_payment(declined)
    unsure, _ = await j.insert_payment(payment("000000000005", amount=7_000))
    unsure.state, unsure.response_code, unsure.answered_at = PaymentState.UNCERTAIN, "91", T0
    await j.finish_payment(unsure, task=task_for(unsure.payment_id))
    await j.insert_reversal(
        reversal("000000000003", payment_id=p3.payment_id, response_code="00", amount=80_000)
    )
    await j.insert_reversal(
        reversal("000000000004", payment_id=declined.payment_id, response_code="25", amount=5_000)
    )
    other = await approved_in_journal(j, "000000000006", biller="OTHER", amount=1)
    tomorrow = replace(payment("000000000007"), settlement_date=NEXT)
    await j.insert_payment(tomorrow)
    await j.finish_payment(approve(tomorrow))
    return {"p": [p1, p2, p3], "big": big, "unsure": unsure, "other": other, "next": tomorrow}


async def test_day_totals_count_approved_payments_and_00_reversals(stores: JournalSet) -> None:
    day = await a_day(stores)
    totals = await stores.settlement.day_totals(BILLER, SDATE)
    assert totals == Totals(3, 125_000 + day["big"] + 80_000, 1, 80_000)
    assert all(type(v) is int for v in (totals.count, totals.amount, totals.reversal_amount))
    assert await stores.settlement.day_totals("OTHER", SDATE) == Totals(1, 1, 0, 0)
    assert await stores.settlement.day_totals(BILLER, NEXT) == Totals(1, 125_000, 0, 0)
    assert await stores.settlement.day_totals(BILLER, SDATE - timedelta(days=1)) == Totals()


async def test_the_days_records_and_what_is_still_uncertain(stores: JournalSet) -> None:
    day = await a_day(stores)
    s = stores.settlement
    on_day = await s.payments_on(SDATE)
    assert [p.key.rrn for p in on_day] == [f"00000000000{i}" for i in range(1, 7)]
    assert [p.amount for p in on_day][:2] == [125_000, day["big"]]
    assert [(r.key.rrn, r.response_code) for r in await s.reversals_on(SDATE)] == [
        ("000000000003", "00"),
        ("000000000004", "25"),
    ]
    assert [p.payment_id for p in await s.payments_on(NEXT)] == [day["next"].payment_id]
    assert await s.reversals_on(NEXT) == []
    assert [p.payment_id for p in await s.open_uncertain()] == [day["unsure"].payment_id]
    resolved = day["unsure"]
    resolved.resolution = Resolution.NEVER_POSTED
    (task,) = await stores.journal.open_tasks()
    await stores.journal.complete_task(task, outcome="never_posted", payment=resolved)
    assert await s.open_uncertain() == []
    assert await s.dates_with_activity(NEXT + timedelta(days=1)) == [SDATE, NEXT]
    assert await s.dates_with_activity(NEXT) == [SDATE]
    assert await s.dates_with_activity(SDATE) == []


async def test_a_cutover_is_recorded_once_and_closes_the_dates_before_it(
    stores: JournalSet, sql_place: Any
) -> None:
    s = stores.settlement
    assert await s.latest_cutover() is None
    await stores.journal.insert_payment(payment("000000000010"))  # in flight on SDATE
    first = CutoverRecord(NEXT, SDATE, [SDATE], "closing", T0)
    assert await s.begin_cutover(first) is True
    again = CutoverRecord(NEXT, SDATE, [SDATE, NEXT], "closing", T0 + timedelta(hours=1))
    assert await s.begin_cutover(again) is False  # another instance's, or before a crash
    assert await s.latest_cutover() == first
    assert await s.posting_before(NEXT) == 1
    assert await s.posting_before(SDATE) == 0
    await s.finish_cutover(NEXT, T0 + timedelta(minutes=2))
    assert await s.latest_cutover() == replace(
        first, state="closed", closed_at=T0 + timedelta(minutes=2)
    )
    later = CutoverRecord(NEXT + timedelta(days=1), NEXT, [NEXT], "closing", T0)
    assert await s.begin_cutover(later) is True
    assert await s.latest_cutover() == later
    # Another journal on the same database sees it (every instance answers 90 after).
    other = sql_place.new_set()
    await other.open()
    try:
        assert await other.settlement.latest_cutover() == later
    finally:
        await other.close()


async def test_reconciliations_and_their_findings(stores: JournalSet) -> None:
    s = stores.settlement
    rec = Reconciliation(
        BILLER, SDATE, Totals(3, 300, 1, 100), Totals(3, 300, 0, 0), "95", T0 + timedelta(hours=3)
    )
    finding = Finding(
        FindingKind.RECONCILIATION, SDATE, BILLER, "reversals differ", "0/0", "1/100", source="0500"
    )
    await s.record_reconciliation(rec, [finding], T0 + timedelta(hours=3))
    second = replace(rec, response_code="00", answered_at=T0 + timedelta(hours=4))
    await s.record_reconciliation(second, [], T0 + timedelta(hours=4))
    assert await s.reconciliations(SDATE) == [rec, second]
    assert await s.reconciliations(NEXT) == []
    assert await s.first_reconciled_at(BILLER, SDATE) == T0 + timedelta(hours=3)
    assert await s.first_reconciled_at("OTHER", SDATE) is None
    assert await s.findings(SDATE) == [finding]
    assert await s.findings(NEXT) == []


async def test_a_settlement_file_is_imported_once(stores: JournalSet) -> None:
    s = stores.settlement
    sha = hashlib.sha256(b"settle-20250314.csv bytes").hexdigest()
    finding = Finding(
        FindingKind.SWITCH_ONLY,
        SDATE,
        BILLER,
        "in the switch's file only",
        switch="125000",
        acquirer="600001",
        rrn="000000000099",
        source="file:settle-20250314.csv#2",
    )
    outcome = ImportOutcome("settle-20250314.csv", sha, False, 3, 2, [finding])
    assert await s.imported(sha) is False
    assert await s.record_import(outcome, T0) is True
    assert await s.imported(sha) is True
    assert await s.record_import(outcome, T0 + timedelta(hours=1)) is False
    assert await s.findings(SDATE) == [finding], "the second import wrote no findings"


async def test_a_payments_file_is_recorded_again_without_a_second_row(
    stores: JournalSet,
) -> None:
    s = stores.settlement
    await s.record_payments_file(BILLER, SDATE, "/out/payments-1.csv", T0)
    await s.record_payments_file(BILLER, SDATE, "/out/payments-1.csv", T0 + timedelta(hours=1))
    await s.record_payments_file("OTHER", SDATE, "/out/payments-2.csv", T0)
    # What a user checks: the journal still opens and its day is intact.
    assert await s.day_totals(BILLER, SDATE) == Totals()
    assert await stores.journal.get_payment(key("000000000001")) is None


async def test_dates_of_reversals_alone_count_as_activity(stores: JournalSet) -> None:
    earlier = date(2025, 3, 10)
    lone = replace(
        reversal("000000000020", payment_id=None, response_code="25", booked_on=None),
        settlement_date=earlier,
    )
    await stores.journal.insert_reversal(lone)
    assert await stores.settlement.dates_with_activity(SDATE) == [earlier]
