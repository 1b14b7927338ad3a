"""The SQLite journal against its contract (``billhub.pipeline.ports.Journal``).

Every test runs on a real SQLite file in ``tmp_path``. The journal is where the
hub's promises of LINK-SPEC 6.3 and 6.4 live: a payment is durable before it is
approved, a key is applied once, a reversal marks its payment in the same commit,
and an uncertain payment keeps its resolve task across a restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billhub.errors import JournalError, KeyReversed
from billhub.journal.schema import MIGRATIONS
from billhub.journal.sqlite import SqliteJournal
from billhub.pipeline.model import (
    PaymentKey,
    PaymentRecord,
    PaymentState,
    Resolution,
    ResolverTask,
    ReversalRecord,
    TaskKind,
)

T0 = datetime(2025, 3, 14, 9, 30, 0, 123456, tzinfo=UTC)
SDATE = date(2025, 3, 14)
BILLER = "ELEC-DAM"
NAME_AR = "محمد عبد الله الحلبي"
DE48_AR = "RN016RCPT-2025-000001CN020" + NAME_AR


def key(rrn: str, acquirer: str = "600001", mmdd: str = "0314") -> PaymentKey:
    return PaymentKey(acquirer=acquirer, rrn=rrn, settlement_mmdd=mmdd)


def payment(
    rrn: str,
    *,
    payment_id: str | None = None,
    amount: int = 125_000,
    biller: str = BILLER,
    state: PaymentState = PaymentState.POSTING,
    content: str | None = None,
    received_at: datetime = T0,
) -> PaymentRecord:
    return PaymentRecord(
        payment_id=payment_id or f"P-{rrn}",
        key=key(rrn),
        settlement_date=SDATE,
        biller=biller,
        account="0100234567",
        bill_id="B-202502",
        amount=amount,
        currency="760",
        channel="6011",
        forwarder="600002",
        content=content or f"500000|{amount:012d}|760|{biller}|0100234567|B-202502",
        received_at=received_at,
        state=state,
    )


def approve(record: PaymentRecord, *, at: datetime = T0) -> PaymentRecord:
    record.state = PaymentState.APPROVED
    record.response_code = "00"
    record.approval_code = "A1B2C3"
    record.receipt = "RCPT-2025-000001"
    record.customer_name = NAME_AR
    record.answer_de48 = DE48_AR
    record.answered_at = at + timedelta(seconds=1)
    return record


def reversal(
    rrn: str,
    *,
    payment_id: str | None,
    response_code: str,
    amount: int = 125_000,
    booked_on: date | None = SDATE,
    cancel_state: str = "none",
) -> ReversalRecord:
    return ReversalRecord(
        key=key(rrn),
        settlement_date=SDATE,
        biller=BILLER,
        amount=amount,
        received_at=T0 + timedelta(minutes=5),
        response_code=response_code,
        payment_id=payment_id,
        booked_on=booked_on,
        cancel_state=cancel_state,
    )


def task_for(
    payment_id: str,
    *,
    kind: TaskKind = TaskKind.RESOLVE,
    next_at: datetime = T0,
    not_before_final: datetime | None = None,
) -> ResolverTask:
    return ResolverTask(
        task_id=0,
        kind=kind,
        payment_id=payment_id,
        biller=BILLER,
        attempts=0,
        next_at=next_at,
        created_at=T0,
        not_before_final=not_before_final,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal" / "billhub.db"


@pytest.fixture
async def journal(db_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(db_path)
    await j.open()
    try:
        yield j
    finally:
        await j.close()


async def approved_in_journal(journal: SqliteJournal, rrn: str, **kw: Any) -> PaymentRecord:
    rec, created = await journal.insert_payment(payment(rrn, **kw))
    assert created
    await journal.finish_payment(approve(rec))
    return rec


# -- insert_payment: a key is applied once (6.3) ------------------------------------------


async def test_insert_new_payment_returns_record_created(journal: SqliteJournal) -> None:
    rec = payment("000000000001")
    stored, created = await journal.insert_payment(rec)
    assert created is True
    assert stored == rec
    assert stored.state is PaymentState.POSTING
    assert await journal.get_payment(rec.key) == rec
    assert await journal.get_payment_by_id(rec.payment_id) == rec


async def test_insert_same_key_again_returns_existing_and_inserts_nothing(
    journal: SqliteJournal,
) -> None:
    first = payment("000000000002")
    await journal.insert_payment(first)
    await journal.finish_payment(approve(first))

    again = payment("000000000002")  # same payment id, same key: a plain re-send
    stored, created = await journal.insert_payment(again)

    assert created is False
    assert stored == first  # the original's fields, its answer included
    assert stored.state is PaymentState.APPROVED
    assert stored.approval_code == "A1B2C3"
    assert [p.payment_id for p in await journal.payments()] == [first.payment_id]


async def test_insert_same_key_new_payment_id_still_returns_existing(
    journal: SqliteJournal,
) -> None:
    first = payment("000000000003", amount=125_000)
    await journal.insert_payment(first)

    # A re-send gets a fresh hub payment id and here even other content (a 94 case).
    other = payment("000000000003", payment_id="P-OTHER", amount=999, content="other")
    stored, created = await journal.insert_payment(other)

    assert created is False
    assert stored.payment_id == first.payment_id
    assert stored.amount == 125_000
    assert stored.content == first.content
    assert await journal.get_payment_by_id("P-OTHER") is None
    assert len(await journal.payments()) == 1


async def test_late_original_after_unknown_reversal_is_refused(
    journal: SqliteJournal, db_path: Path
) -> None:
    # 6.4: original never seen -> the key is remembered as reversed: the journal refuses
    # the late original (the pipeline then declines it 25: test_pipeline_journal_rules).
    await journal.insert_reversal(
        reversal("000000000004", payment_id=None, response_code="25", booked_on=None)
    )
    with pytest.raises(KeyReversed):
        await journal.insert_payment(payment("000000000004"))
    assert await journal.get_payment(key("000000000004")) is None
    # Recorded declined (the pipeline's write), its repeat is answered as existing.
    declined = payment("000000000004", state=PaymentState.DECLINED)
    declined.response_code, declined.answered_at = "25", T0
    await journal.write_outcome(declined)
    again, created = await journal.insert_payment(payment("000000000004", payment_id="P-X"))
    assert created is False and again.response_code == "25"
    await journal.insert_reversal(
        reversal("000000000005", payment_id=None, response_code="25", booked_on=None)
    )
    await journal.close()
    reopened = SqliteJournal(db_path)  # the key is still remembered after a restart
    await reopened.open()
    try:
        with pytest.raises(KeyReversed):
            await reopened.insert_payment(payment("000000000005"))
        _, created = await reopened.insert_payment(payment("000000000006"))
        assert created is True
    finally:
        await reopened.close()


# -- finish_payment -------------------------------------------------------------------------


async def test_finish_payment_writes_state_and_answer_fields(journal: SqliteJournal) -> None:
    rec, _ = await journal.insert_payment(payment("000000000010"))
    await journal.finish_payment(approve(rec))

    stored = await journal.get_payment_by_id(rec.payment_id)
    assert stored is not None
    assert stored.state is PaymentState.APPROVED
    assert stored.response_code == "00"
    assert stored.approval_code == "A1B2C3"
    assert stored.receipt == "RCPT-2025-000001"
    assert stored.customer_name == NAME_AR
    assert stored.answer_de48 == DE48_AR
    assert stored.answered_at == T0 + timedelta(seconds=1)
    assert stored.reversed is False
    assert stored.resolution is None
    assert stored == rec


async def test_finish_with_task_adds_the_task_in_the_same_commit(
    journal: SqliteJournal,
) -> None:
    rec, _ = await journal.insert_payment(payment("000000000011"))
    rec.state, rec.response_code, rec.answered_at = PaymentState.UNCERTAIN, "91", T0
    task = task_for(rec.payment_id, not_before_final=T0 + timedelta(minutes=10))

    commits = journal.stats.commits
    await journal.finish_payment(rec, task=task)
    assert journal.stats.commits == commits + 1
    assert journal.stats.last_group == 1  # payment and task: one op, one commit

    assert task.task_id > 0
    open_tasks = list(await journal.open_tasks())
    assert open_tasks == [task]
    assert await journal.due_tasks(T0) == [task]
    stored = await journal.get_payment_by_id(rec.payment_id)
    assert stored is not None and stored.state is PaymentState.UNCERTAIN
    assert stored.response_code == "91"


async def test_finish_unknown_payment_raises_and_adds_no_task(journal: SqliteJournal) -> None:
    ghost = payment("000000000012", payment_id="P-NEVER-INSERTED")
    approve(ghost)
    with pytest.raises(JournalError):
        await journal.finish_payment(ghost)
    with pytest.raises(JournalError):
        await journal.finish_payment(ghost, task=task_for(ghost.payment_id))
    assert list(await journal.open_tasks()) == []
    assert await journal.payments() == []


# -- insert_reversal (6.4) ------------------------------------------------------------------


async def test_approved_reversal_marks_payment_reversed(journal: SqliteJournal) -> None:
    kept = await approved_in_journal(journal, "000000000020")
    rec = await approved_in_journal(journal, "000000000021")
    cancel = task_for(rec.payment_id, kind=TaskKind.CANCEL)
    rev = reversal(
        "000000000021", payment_id=rec.payment_id, response_code="00", cancel_state="pending"
    )

    await journal.insert_reversal(rev, task=cancel)

    stored = await journal.get_payment_by_id(rec.payment_id)
    assert stored is not None and stored.reversed is True
    assert stored.state is PaymentState.APPROVED  # approved stays approved (6.5 counts it)
    assert [p.payment_id for p in await journal.held_payments(BILLER)] == [kept.payment_id]
    assert [p.payment_id for p in await journal.approved_payments(BILLER, SDATE)] == [
        kept.payment_id,
        rec.payment_id,
    ]
    assert await journal.reversals_booked(BILLER, SDATE) == [rev]
    assert await journal.reversals_booked(BILLER, SDATE + timedelta(days=1)) == []
    assert await journal.reversals_booked("OTHER", SDATE) == []
    assert await journal.get_reversal(rev.key) == rev
    assert list(await journal.open_tasks()) == [cancel]


async def test_second_reversal_of_same_key_raises_and_changes_nothing(
    journal: SqliteJournal,
) -> None:
    rec = await approved_in_journal(journal, "000000000022")
    first = reversal("000000000022", payment_id=rec.payment_id, response_code="00")
    await journal.insert_reversal(first)
    before_payments = await journal.payments()

    repeat = reversal(
        "000000000022",
        payment_id=rec.payment_id,
        response_code="00",
        amount=1,
        cancel_state="pending",
    )
    with pytest.raises(JournalError):
        await journal.insert_reversal(repeat, task=task_for(rec.payment_id, kind=TaskKind.CANCEL))

    assert await journal.get_reversal(first.key) == first
    assert await journal.payments() == before_payments
    assert list(await journal.open_tasks()) == []
    assert await journal.reversals_booked(BILLER, SDATE) == [first]


@pytest.mark.parametrize(
    "state", [PaymentState.POSTING, PaymentState.DECLINED, PaymentState.UNCERTAIN]
)
async def test_approved_reversal_of_unapproved_payment_is_atomic(
    journal: SqliteJournal, state: PaymentState
) -> None:
    rec, _ = await journal.insert_payment(payment("000000000023"))
    if state is not PaymentState.POSTING:
        rec.state, rec.response_code, rec.answered_at = state, "05", T0
        await journal.finish_payment(rec)

    rev = reversal("000000000023", payment_id=rec.payment_id, response_code="00")
    with pytest.raises(JournalError):
        await journal.insert_reversal(rev, task=task_for(rec.payment_id, kind=TaskKind.CANCEL))

    assert await journal.get_reversal(rev.key) is None
    assert list(await journal.open_tasks()) == []
    stored = await journal.get_payment_by_id(rec.payment_id)
    assert stored is not None and stored.reversed is False and stored.state is state


async def test_approved_reversal_of_already_reversed_payment_raises(
    journal: SqliteJournal,
) -> None:
    rec = await approved_in_journal(journal, "000000000024")
    await journal.insert_reversal(
        reversal("000000000024", payment_id=rec.payment_id, response_code="00")
    )
    other_key = replace(
        reversal("000000000024", payment_id=rec.payment_id, response_code="00"),
        key=key("000000000099"),
    )
    with pytest.raises(JournalError):
        await journal.insert_reversal(other_key)
    assert await journal.get_reversal(other_key.key) is None


async def test_declined_reversal_of_known_payment_does_not_mark_it(
    journal: SqliteJournal,
) -> None:
    rec, _ = await journal.insert_payment(payment("000000000025"))
    rec.state, rec.response_code, rec.answered_at = PaymentState.DECLINED, "51", T0
    await journal.finish_payment(rec)
    rev = reversal("000000000025", payment_id=rec.payment_id, response_code="25")
    await journal.insert_reversal(rev)
    stored = await journal.get_payment_by_id(rec.payment_id)
    assert stored is not None and stored.reversed is False
    assert await journal.get_reversal(rev.key) == rev
    assert await journal.reversals_booked(BILLER, SDATE) == []  # only `00` reversals


# -- resolver tasks --------------------------------------------------------------------------


async def test_due_tasks_respects_next_at_and_limit(journal: SqliteJournal) -> None:
    tasks = []
    for i, minutes in enumerate([30, 0, 10]):
        rec, _ = await journal.insert_payment(payment(f"00000000003{i}"))
        rec.state, rec.response_code, rec.answered_at = PaymentState.UNCERTAIN, "91", T0
        t = task_for(rec.payment_id, next_at=T0 + timedelta(minutes=minutes))
        await journal.finish_payment(rec, task=t)
        tasks.append(t)
    later, now, soon = tasks

    assert await journal.due_tasks(T0 - timedelta(microseconds=1)) == []
    assert await journal.due_tasks(T0) == [now]  # next_at == now is due
    assert await journal.due_tasks(T0 + timedelta(minutes=10)) == [now, soon]
    assert await journal.due_tasks(T0 + timedelta(hours=1)) == [now, soon, later]
    assert await journal.due_tasks(T0 + timedelta(hours=1), limit=2) == [now, soon]
    assert list(await journal.open_tasks()) == [now, soon, later]


async def test_reschedule_task_moves_it(journal: SqliteJournal) -> None:
    rec, _ = await journal.insert_payment(payment("000000000040"))
    rec.state, rec.response_code, rec.answered_at = PaymentState.UNCERTAIN, "91", T0
    t = task_for(rec.payment_id, not_before_final=T0 + timedelta(minutes=5))
    await journal.finish_payment(rec, task=t)

    t.attempts = 3
    t.next_at = T0 + timedelta(minutes=2)
    t.detail = {"last_error": "biller_timeout", "note": NAME_AR}
    await journal.reschedule_task(t)

    assert await journal.due_tasks(T0 + timedelta(minutes=1)) == []
    due = await journal.due_tasks(T0 + timedelta(minutes=2))
    assert due == [t]
    assert due[0].attempts == 3
    assert due[0].detail == {"last_error": "biller_timeout", "note": NAME_AR}
    assert due[0].not_before_final == T0 + timedelta(minutes=5)
    assert due[0].created_at == T0


async def test_complete_task_with_payment_saves_resolution(journal: SqliteJournal) -> None:
    rec, _ = await journal.insert_payment(payment("000000000041"))
    rec.state, rec.response_code, rec.answered_at = PaymentState.UNCERTAIN, "91", T0
    t = task_for(rec.payment_id)
    await journal.finish_payment(rec, task=t)

    rec.resolution = Resolution.CANCELLED
    t.attempts = 2
    await journal.complete_task(t, outcome="cancelled", payment=rec)

    assert list(await journal.open_tasks()) == []
    assert await journal.due_tasks(T0 + timedelta(days=1)) == []
    stored = await journal.get_payment_by_id(rec.payment_id)
    assert stored is not None
    assert stored.resolution is Resolution.CANCELLED
    assert stored.state is PaymentState.UNCERTAIN  # still a 91 to the switch
    assert await journal.held_payments(BILLER) == []


async def test_complete_task_with_reversal_key_confirms_cancel(journal: SqliteJournal) -> None:
    rec = await approved_in_journal(journal, "000000000042")
    t = task_for(rec.payment_id, kind=TaskKind.CANCEL)
    rev = reversal(
        "000000000042", payment_id=rec.payment_id, response_code="00", cancel_state="pending"
    )
    await journal.insert_reversal(rev, task=t)
    other = await approved_in_journal(journal, "000000000043")
    other_rev = reversal(
        "000000000043", payment_id=other.payment_id, response_code="00", cancel_state="pending"
    )
    await journal.insert_reversal(other_rev)

    await journal.complete_task(t, outcome="cancelled", reversal_key=rev.key)

    assert list(await journal.open_tasks()) == []
    stored = await journal.get_reversal(rev.key)
    assert stored is not None and stored.cancel_state == "confirmed"
    untouched = await journal.get_reversal(other_rev.key)
    assert untouched is not None and untouched.cancel_state == "pending"


# -- after a crash: what is left unfinished ----------------------------------------------------
# (turning it into uncertain payments is the pipeline's rule: tests/test_pipeline_journal_rules.py)


async def test_unfinished_payments_are_those_an_earlier_run_left_posting(
    journal: SqliteJournal, db_path: Path
) -> None:
    posting = [payment(f"00000000005{i}") for i in range(3)]
    for p in posting:
        await journal.insert_payment(p)
    await approved_in_journal(journal, "000000000060")
    assert await journal.unfinished_payments() == [], "this run's own are in flight"
    await journal.close()
    after_crash = SqliteJournal(db_path)
    await after_crash.open()
    try:
        await after_crash.insert_payment(payment("000000000070"))  # in flight in this run
        assert [p.payment_id for p in await after_crash.unfinished_payments()] == [
            p.payment_id for p in posting
        ]
    finally:
        await after_crash.close()


# -- durability ---------------------------------------------------------------------------------


def schema_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT version, description, applied_at FROM schema_version ORDER BY version"
        ).fetchall()
    finally:
        conn.close()


async def test_everything_survives_close_and_reopen(db_path: Path) -> None:
    j = SqliteJournal(db_path)
    await j.open()
    assert j.schema_version() == MIGRATIONS[-1][0]
    rec = await approved_in_journal(j, "000000000070")
    uncertain, _ = await j.insert_payment(payment("000000000071"))
    uncertain.state, uncertain.response_code, uncertain.answered_at = (
        PaymentState.UNCERTAIN,
        "91",
        T0,
    )
    t = task_for(uncertain.payment_id, not_before_final=T0 + timedelta(minutes=3))
    await j.finish_payment(uncertain, task=t)
    rev = reversal("000000000070", payment_id=rec.payment_id, response_code="00")
    await j.insert_reversal(rev)
    posting, _ = await j.insert_payment(payment("000000000072"))
    before = await j.payments()
    await j.close()
    migrations_before = schema_rows(db_path)
    assert [r[0] for r in migrations_before] == [m[0] for m in MIGRATIONS]

    j2 = SqliteJournal(db_path)
    await j2.open()
    try:
        assert j2.schema_version() == MIGRATIONS[-1][0]
        assert await j2.payments() == before
        stored = await j2.get_payment_by_id(rec.payment_id)
        assert stored is not None and stored.reversed is True
        assert stored.customer_name == NAME_AR and stored.answer_de48 == DE48_AR
        assert await j2.get_reversal(rev.key) == rev
        assert list(await j2.open_tasks()) == [t]
        assert await j2.get_payment(posting.key) == posting
        # Insertion order continues after a restart (seq is restored, not restarted).
        newer, _ = await j2.insert_payment(payment("000000000001"))
        assert [p.payment_id for p in await j2.payments()][-1] == newer.payment_id
    finally:
        await j2.close()
    assert schema_rows(db_path) == migrations_before  # no migration ran again


async def test_payment_is_on_disk_once_its_write_returned(db_path: Path) -> None:
    j = SqliteJournal(db_path)
    await j.open()
    try:
        rec = await approved_in_journal(j, "000000000073")
        # Another connection (another process after a crash) already sees it committed.
        conn = sqlite3.connect(db_path)
        try:
            row = conn.execute(
                "SELECT state, response_code FROM payments WHERE payment_id=?",
                (rec.payment_id,),
            ).fetchone()
        finally:
            conn.close()
        assert row == ("approved", "00")
    finally:
        await j.close()


# -- group commit -------------------------------------------------------------------------------


async def test_group_commit_shares_commits_among_concurrent_writes(
    journal: SqliteJournal,
) -> None:
    n = 500
    commits, ops = journal.stats.commits, journal.stats.ops
    results = await asyncio.gather(
        *(journal.insert_payment(payment(f"{i:012d}")) for i in range(n))
    )
    used = journal.stats.commits - commits
    print(f"{n} concurrent inserts took {used} commit(s)")
    assert all(created for _, created in results)
    assert journal.stats.ops - ops == n
    assert 0 < used < n
    assert len(await journal.payments()) == n


async def test_one_failing_op_does_not_undo_its_batch(journal: SqliteJournal) -> None:
    ghost = approve(payment("000000000080", payment_id="P-GHOST"))
    good = [payment(f"00000000008{i}") for i in range(1, 6)]
    coros: list[Awaitable[Any]] = [journal.insert_payment(p) for p in good[:2]]
    coros.append(journal.finish_payment(ghost))
    coros.extend(journal.insert_payment(p) for p in good[2:])

    commits = journal.stats.commits
    results = await asyncio.gather(*coros, return_exceptions=True)

    assert journal.stats.commits == commits + 1 and journal.stats.last_group == 6  # one batch
    assert isinstance(results[2], JournalError)
    assert all(r == (p, True) for r, p in zip(results[:2] + results[3:], good, strict=True))
    assert [p.payment_id for p in await journal.payments()] == [p.payment_id for p in good]


async def test_an_unexpected_error_in_one_op_fails_only_that_op(journal: SqliteJournal) -> None:
    # An amount SQLite cannot hold raises OverflowError, not sqlite3.Error: it must
    # still fail alone, as a JournalError, and leave the rest of its batch committed.
    bad = payment("000000000090", amount=2**64)
    good = [payment(f"00000000009{i}") for i in range(1, 4)]
    commits = journal.stats.commits
    results = await asyncio.gather(
        journal.insert_payment(good[0]),
        journal.insert_payment(bad),
        journal.insert_payment(good[1]),
        journal.insert_payment(good[2]),
        return_exceptions=True,
    )
    assert journal.stats.commits == commits + 1 and journal.stats.last_group == 4
    assert isinstance(results[1], JournalError)
    assert [results[0], results[2], results[3]] == [(p, True) for p in good]
    assert [p.payment_id for p in await journal.payments()] == [p.payment_id for p in good]


# -- money and text -------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1, 125_000, 999_999_999_999, 10**15, 2**63 - 1])
async def test_amounts_round_trip_as_int(
    journal: SqliteJournal, db_path: Path, amount: int
) -> None:
    rec, _ = await journal.insert_payment(payment("000000000100", amount=amount))
    await journal.insert_reversal(  # its original was not approved: 25
        reversal("000000000100", payment_id=rec.payment_id, response_code="25", amount=amount)
    )
    stored = await journal.get_payment(rec.key)
    assert stored is not None
    assert type(stored.amount) is int and stored.amount == amount
    rev = await journal.get_reversal(rec.key)
    assert rev is not None
    assert type(rev.amount) is int and rev.amount == amount

    conn = sqlite3.connect(db_path)
    try:
        kinds = conn.execute(
            "SELECT typeof(amount) FROM payments UNION ALL SELECT typeof(amount) FROM reversals"
        ).fetchall()
    finally:
        conn.close()
    assert kinds == [("integer",), ("integer",)]


async def test_a_float_amount_is_never_what_comes_back(journal: SqliteJournal) -> None:
    rec = payment("000000000101", amount=10**15 + 1)
    await journal.insert_payment(rec)
    stored = await journal.get_payment(rec.key)
    assert stored is not None
    assert not isinstance(stored.amount, float)
    assert stored.amount == 1_000_000_000_000_001  # would be off by one via float


async def test_arabic_names_and_de48_round_trip(journal: SqliteJournal, db_path: Path) -> None:
    rec, _ = await journal.insert_payment(payment("000000000110"))
    approve(rec)
    rec.customer_name = "فاطمة الزهراء — دمشق"
    rec.answer_de48 = "RN016RCPT-2025-000002CN020" + rec.customer_name + "\u200f"
    await journal.finish_payment(rec)
    await journal.close()

    j2 = SqliteJournal(db_path)
    await j2.open()
    try:
        stored = await j2.get_payment(rec.key)
        assert stored is not None
        assert stored.customer_name == "فاطمة الزهراء — دمشق"
        assert stored.answer_de48 == rec.answer_de48
        held = await j2.held_payments(BILLER)
        assert [p.customer_name for p in held] == [rec.customer_name]
    finally:
        await j2.close()


# -- errors are JournalError -------------------------------------------------------------


CALLS: dict[str, Callable[[SqliteJournal], Awaitable[Any]]] = {
    "insert_payment": lambda j: j.insert_payment(payment("000000000120")),
    "finish_payment": lambda j: j.finish_payment(payment("000000000120")),
    "get_payment": lambda j: j.get_payment(key("000000000120")),
    "get_payment_by_id": lambda j: j.get_payment_by_id("P-1"),
    "get_reversal": lambda j: j.get_reversal(key("000000000120")),
    "insert_reversal": lambda j: j.insert_reversal(
        reversal("000000000120", payment_id=None, response_code="25")
    ),
    "due_tasks": lambda j: j.due_tasks(T0),
    "open_tasks": lambda j: j.open_tasks(),
    "reschedule_task": lambda j: j.reschedule_task(task_for("P-1")),
    "complete_task": lambda j: j.complete_task(task_for("P-1"), outcome="x"),
    "unfinished_payments": lambda j: j.unfinished_payments(),
    "write_outcomes": lambda j: j.write_outcomes([(payment("000000000130"), None)]),
    "approved_payments": lambda j: j.approved_payments(BILLER, SDATE),
    "reversals_booked": lambda j: j.reversals_booked(BILLER, SDATE),
    "held_payments": lambda j: j.held_payments(BILLER),
    "payments": lambda j: j.payments(),
}


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_calls_after_close_raise_journal_error(db_path: Path, name: str) -> None:
    j = SqliteJournal(db_path)
    await j.open()
    await j.close()
    with pytest.raises(JournalError):
        await asyncio.wait_for(CALLS[name](j), timeout=5)


async def test_close_twice_and_schema_version_after_close(db_path: Path) -> None:
    j = SqliteJournal(db_path)
    await j.open()
    await j.close()
    await j.close()
    with pytest.raises(JournalError):
        j.schema_version()


async def test_writes_queued_before_close_are_committed(db_path: Path) -> None:
    j = SqliteJournal(db_path)
    await j.open()
    pending = [asyncio.ensure_future(j.insert_payment(payment(f"{i:012d}"))) for i in range(20)]
    await asyncio.sleep(0)  # every insert is queued
    await j.close()
    assert all(f.result()[1] for f in pending)

    j2 = SqliteJournal(db_path)
    await j2.open()
    try:
        assert len(await j2.payments()) == 20
    finally:
        await j2.close()


async def test_open_on_unwritable_path_raises_journal_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the journal's directory should be")
    path = blocker / "journal" / "billhub.db"
    j = SqliteJournal(path)
    with pytest.raises(JournalError) as info:
        await j.open()
    assert str(path) in str(info.value)
    # A journal that failed to open answers later calls with JournalError, not a hang.
    with pytest.raises(JournalError):
        await asyncio.wait_for(j.insert_payment(payment("000000000130")), timeout=5)
    await j.close()


async def test_open_on_a_directory_raises_journal_error_naming_it(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path)  # a directory is no database file
    with pytest.raises(JournalError) as info:
        await j.open()
    assert str(tmp_path) in str(info.value)
    await j.close()


async def test_open_on_a_file_that_is_no_database_raises_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "billhub.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes " * 100)
    j = SqliteJournal(path)
    with pytest.raises(JournalError) as info:
        await j.open()
    assert str(path) in str(info.value)
    await j.close()
