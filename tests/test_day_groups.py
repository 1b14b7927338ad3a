"""A day's report sums, as the journal computes them in SQL, are the figures summed
record by record (LINK-SPEC 6.5: what counts for a date), on both journals.

The report of a day of a million payments reads a few hundred sums instead of a
million records; this checks that nothing changed in the figures a clearing clerk
reads: per biller, acquirer and channel, with reversals under their original's
channel, and those whose original is of another date or missing under ``unknown``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from tests.journal_records import SDATE, T0, payment, reversal

from billhub.config import JournalConfig
from billhub.journal.factory import JournalSet, build_journal
from billhub.pipeline.model import PaymentKey, PaymentState
from billhub.settlement.model import Totals
from billhub.settlement.report import group_records

BILLERS = ("100001", "100002", "100003")
ACQUIRERS = ("600001", "600002", "600003", "600004")
CHANNELS = ("6010", "6011", "6012", "6013", "6014", "7399")
STATES = [PaymentState.APPROVED] * 6 + [
    PaymentState.DECLINED,
    PaymentState.UNCERTAIN,
    PaymentState.POSTING,
]


@pytest.fixture(params=["sqlite", "postgresql"])
async def stores(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[JournalSet]:
    if request.param == "sqlite":
        config = JournalConfig(kind="sqlite", path=tmp_path / "journal.db")
    else:
        config = JournalConfig(kind="postgresql", dsn=request.getfixturevalue("pg_dsn"))
    s = build_journal(config)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_sums_in_the_journal_are_the_sums_of_the_records(stores: JournalSet) -> None:
    rng = random.Random(7)
    journal = stores.journal
    other_day = SDATE - timedelta(days=1)
    originals = []
    for i in range(400):
        rec = payment(f"{i:012d}", amount=rng.randrange(1, 5_000_000),
                      biller=rng.choice(BILLERS), state=rng.choice(STATES))  # fmt: skip
        rec.key = PaymentKey(rng.choice(ACQUIRERS), rec.key.rrn, rec.key.settlement_mmdd)
        rec.channel = rng.choice(CHANNELS)
        if i % 25 == 0:  # another date's: never counted here
            rec.settlement_date = other_day
            rec.key = PaymentKey(rec.key.acquirer, rec.key.rrn, f"{other_day:%m%d}")
        stored, created = await journal.insert_payment(rec)
        assert created
        if rec.state is PaymentState.APPROVED:
            originals.append(stored)
    for j, original in enumerate(rng.sample(originals, 60)):
        rev = reversal(f"R{j:011d}", payment_id=original.payment_id, response_code="00",
                       amount=original.amount)  # fmt: skip
        rev = replace(rev, biller=original.biller,
                      key=PaymentKey(original.key.acquirer, rev.key.rrn, rev.key.settlement_mmdd))  # fmt: skip
        await journal.insert_reversal(rev)
    # A reversal that found no original (25), and one whose original is not known to
    # this date's payments (its channel is "unknown"), and a declined one.
    await journal.insert_reversal(reversal("N00000000001", payment_id=None, response_code="25"))
    lone = reversal("N00000000002", payment_id=None, response_code="00", amount=700)
    await journal.insert_reversal(replace(lone, received_at=T0))
    await journal.insert_reversal(
        reversal("N00000000003", payment_id=originals[0].payment_id, response_code="13")
    )

    store = stores.settlement
    in_sql = await store.day_groups(SDATE)
    by_record = group_records(
        SDATE, await store.payments_on(SDATE), await store.reversals_on(SDATE)
    )
    assert in_sql == by_record
    assert sum(g.totals.count for g in in_sql) == sum(
        1 for p in await store.payments_on(SDATE) if p.state is PaymentState.APPROVED
    )
    assert any(g.channel == "unknown" and g.totals.reversal_amount == 700 for g in in_sql)
    assert await store.day_groups(SDATE + timedelta(days=3)) == []
    # The 0500 totals of each biller (read from the same index) are its groups' sums.
    for biller in BILLERS:
        mine = [g.totals for g in by_record if g.biller == biller]
        assert await store.day_totals(biller, SDATE) == Totals(
            sum(t.count for t in mine),
            sum(t.amount for t in mine),
            sum(t.reversal_count for t in mine),
            sum(t.reversal_amount for t in mine),
        )
