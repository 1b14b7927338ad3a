"""Two rules that used to live in the SQLite journal, now the pipeline's (LINK-SPEC 6.3, 6.4).

- A payment whose key a reversal named before it arrived is declined `25` and never
  reaches the biller; its repeats get `25` again.
- After a crash, every payment left ``POSTING`` becomes uncertain (`91`) with one
  resolve task each, in one commit, and nothing else changes.

The pipeline runs on the real SQLite journal (built by the factory) with no
sockets; the biller is an in-memory one that counts what it is asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import FixedIds, ManualClock, MemoryBiller, memory_account
from tests.journal_records import T0, approved_in_journal, payment

from billhub.config import JournalConfig
from billhub.iso8583.spec import load_spec
from billhub.journal.factory import JournalSet, build_journal
from billhub.pipeline.decisions import payment_key
from billhub.pipeline.model import PaymentState, TaskKind
from billhub.pipeline.recovery import recover_unfinished
from billhub.pipeline.routes import BillerRoute
from billhub.pipeline.service import Pipeline
from billhub.settlement.calendar import BusinessDay
from billhub.simulator import messages as m

BILLER = "100001"
RULES = load_spec(None).rules


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[JournalSet]:
    s = build_journal(JournalConfig(kind="sqlite", path=tmp_path / "journal.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def pipeline(stores: JournalSet, biller: MemoryBiller) -> Pipeline:
    clock = ManualClock(T0)
    route = BillerRoute(BILLER, "Damascus", biller, budget=2.0, max_concurrency=4)
    return Pipeline(
        RULES,
        stores.journal,
        {BILLER: route},
        clock,
        FixedIds(),
        calendar=BusinessDay(T0.date),
    )


def sent(msg: Any, stan: str = "000001") -> Any:
    """What the switch's link adds to a request before it goes: DE 7 and DE 11."""
    msg.fields[7], msg.fields[11] = T0.strftime("%m%d%H%M%S"), stan
    return msg


async def test_late_original_after_unknown_reversal_is_declined_25(stores: JournalSet) -> None:
    biller = MemoryBiller(BILLER, [memory_account("0100234567", 125_000)])
    p = pipeline(stores, biller)
    original = sent(m.payment(BILLER, "0100234567", "4", 125_000, T0.strftime("%m%d")))
    rev = await p.handle(sent(m.reversal(original), "000002"))
    assert rev.fields[39] == "25", "original never seen: 25"

    answer = await p.handle(original)
    assert answer.fields[39] == "25"
    assert biller.posts == 0, "nothing reaches the biller"
    m_key = payment_key(original)
    on_disk = await stores.journal.get_payment(m_key)
    assert on_disk is not None
    assert on_disk.state is PaymentState.DECLINED
    assert on_disk.response_code == "25"
    assert on_disk.answered_at is not None
    # Its repeat is answered from the journal: declined 25 again, nothing new.
    again = await p.handle(m.repeat(original))
    assert again.fields[39] == "25"
    assert len(await stores.reader.payments()) == 1
    assert await stores.journal.held_payments(BILLER) == []
    assert (await stores.journal.get_payment(m_key)) == on_disk


async def test_recover_turns_posting_into_uncertain_with_one_task_each(
    stores: JournalSet, tmp_path: Path
) -> None:
    journal = stores.journal
    posting = [payment(f"00000000005{i}") for i in range(3)]
    for rec in posting:
        await journal.insert_payment(rec)
    approved = await approved_in_journal(journal, "000000000060")  # type: ignore[arg-type]
    declined, _ = await journal.insert_payment(payment("000000000061"))
    declined.state, declined.response_code, declined.answered_at = PaymentState.DECLINED, "13", T0
    await journal.finish_payment(declined)
    # The hub is killed; a new run opens the same journal.
    await stores.close()
    stores = build_journal(JournalConfig(kind="sqlite", path=tmp_path / "journal.db"))
    await stores.open()
    journal = stores.journal

    now, later = T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=10)
    commits = journal.stats.commits  # type: ignore[attr-defined]
    recovered = await recover_unfinished(journal, now, later)
    # One read of what is unfinished, then one commit writes all of them.
    assert journal.stats.commits == commits + 2  # type: ignore[attr-defined]

    assert [r.payment_id for r in recovered] == [rec.payment_id for rec in posting]
    for r in recovered:
        assert r.state is PaymentState.UNCERTAIN
        assert r.response_code == "91"
        stored = await journal.get_payment_by_id(r.payment_id)
        assert stored == r
    tasks = list(await journal.open_tasks())
    assert sorted(t.payment_id for t in tasks) == sorted(rec.payment_id for rec in posting)
    for t in tasks:
        assert t.kind is TaskKind.RESOLVE
        assert t.biller == "ELEC-DAM"
        assert t.attempts == 0
        assert t.not_before_final == later
        assert t.next_at <= now
    assert len(await journal.due_tasks(now)) == 3

    assert await journal.get_payment_by_id(approved.payment_id) == approved
    assert await journal.get_payment_by_id(declined.payment_id) == declined

    assert await recover_unfinished(journal, now + timedelta(minutes=1), later) == []
    assert len(list(await journal.open_tasks())) == 3
    await stores.close()


async def test_recover_on_a_clean_journal_does_nothing(stores: JournalSet) -> None:
    assert await recover_unfinished(stores.journal, T0, T0) == []
