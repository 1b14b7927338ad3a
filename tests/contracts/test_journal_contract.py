"""The journal contract (:class:`~billhub.pipeline.ports.Journal`, its ledger and reader),
run over every journal kind in ``tests/contracts/kinds.py``: memory, SQLite, PostgreSQL.

The journal is where the hub's promises of LINK-SPEC 6.3 and 6.4 live: a payment is
durable before it is approved, a key is applied once, a reversal marks its payment in
the same commit, and an uncertain payment keeps its resolve task across a restart.
"A restart" is a new journal on the same place (file, database, memory store).
What only one engine has (SQLite's WAL and file errors, PostgreSQL's claims and
advisory locks) is tested in that adapter's own file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest
from tests.contracts.kinds import JournalPlace
from tests.journal_records import (
    BILLER,
    DE48_AR,
    NAME_AR,
    SDATE,
    T0,
    approve,
    approved_in_journal,
    key,
    payment,
    reversal,
    task_for,
)

from billhub.errors import BillTaken, DateClosed, JournalError, KeyReversed, KeyTaken
from billhub.pipeline.model import (
    PaymentState,
    Resolution,
    TaskKind,
)


async def eventually(ask: Callable[[], Awaitable[list[Any]]], tries: int = 200) -> list[Any]:
    """``ask()`` until it answers something (or ``tries`` run out): no time is asserted."""
    for _ in range(tries):
        found = await ask()
        if found:
            return found
        await asyncio.sleep(0.05)
    return []


# -- insert_payment: a key is applied once (6.3) ------------------------------------------


async def test_insert_new_payment_returns_record_created(journal: Any) -> None:
    rec = payment("000000000001")
    stored, created = await journal.insert_payment(rec)
    assert created is True
    assert stored == rec
    assert stored.state is PaymentState.POSTING
    assert await journal.get_payment(rec.key) == rec
    assert await journal.get_payment_by_id(rec.payment_id) == rec


async def test_insert_same_key_again_returns_existing_and_inserts_nothing(
    journal: Any,
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
    journal: Any,
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
    journal: Any, place: JournalPlace
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
    reopened = place.new()  # the key is still remembered after a restart
    await reopened.open()
    try:
        with pytest.raises(KeyReversed):
            await reopened.insert_payment(payment("000000000005"))
        _, created = await reopened.insert_payment(payment("000000000006"))
        assert created is True
    finally:
        await reopened.close()


# -- finish_payment -------------------------------------------------------------------------


async def test_finish_payment_writes_state_and_answer_fields(journal: Any) -> None:
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
    journal: Any, place: JournalPlace
) -> None:
    rec, _ = await journal.insert_payment(payment("000000000011"))
    rec.state, rec.response_code, rec.answered_at = PaymentState.UNCERTAIN, "91", T0
    task = task_for(rec.payment_id, not_before_final=T0 + timedelta(minutes=10))

    commits = place.commits(journal)
    await journal.finish_payment(rec, task=task)
    assert place.commits(journal) == commits + 1  # payment and task: one commit

    assert task.task_id > 0
    open_tasks = list(await journal.open_tasks())
    assert open_tasks == [task]
    assert await journal.due_tasks(T0) == [task]
    stored = await journal.get_payment_by_id(rec.payment_id)
    assert stored is not None and stored.state is PaymentState.UNCERTAIN
    assert stored.response_code == "91"


async def test_finish_unknown_payment_raises_and_adds_no_task(journal: Any) -> None:
    ghost = payment("000000000012", payment_id="P-NEVER-INSERTED")
    approve(ghost)
    with pytest.raises(JournalError):
        await journal.finish_payment(ghost)
    with pytest.raises(JournalError):
        await journal.finish_payment(ghost, task=task_for(ghost.payment_id))
    assert list(await journal.open_tasks()) == []
    assert await journal.payments() == []


async def test_finish_writes_nothing_over_a_payment_no_longer_posting(journal: Any) -> None:
    """A payment recovery took over as uncertain keeps that state and its one task."""
    posting, _ = await journal.insert_payment(payment("000000000013"))
    unsure = replace(posting, state=PaymentState.UNCERTAIN, response_code="91", answered_at=T0)
    assert await journal.write_outcomes([(unsure, task_for(posting.payment_id))], if_posting=True)

    late = approve(replace(posting))
    with pytest.raises(JournalError):
        await journal.finish_payment(late, task=task_for(posting.payment_id))

    stored = await journal.get_payment(posting.key)
    assert stored is not None and stored.state is PaymentState.UNCERTAIN
    assert stored.response_code == "91" and stored.approval_code is None
    assert [t.payment_id for t in await journal.open_tasks()] == [posting.payment_id]


# -- insert_reversal (6.4) ------------------------------------------------------------------


async def test_approved_reversal_marks_payment_reversed(journal: Any) -> None:
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
    journal: Any,
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
    journal: Any, state: PaymentState
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
    journal: Any,
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
    journal: Any,
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


async def test_due_tasks_respects_next_at_and_limit(journal: Any) -> None:
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


async def test_reschedule_task_moves_it(journal: Any) -> None:
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


async def test_complete_task_with_payment_saves_resolution(journal: Any) -> None:
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


async def test_complete_task_with_reversal_key_confirms_cancel(journal: Any) -> None:
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
    journal: Any, place: JournalPlace
) -> None:
    posting = [payment(f"00000000005{i}") for i in range(3)]
    for p in posting:
        await journal.insert_payment(p)
    await approved_in_journal(journal, "000000000060")
    assert await journal.unfinished_payments() == [], "this run's own are in flight"
    await journal.close()
    after_crash = place.new()
    await after_crash.open()
    try:
        await after_crash.insert_payment(payment("000000000070"))  # in flight in this run
        # A journal several instances share answers once it has been up for a lease
        # (until then a silent instance may be alive); asked again, as recovery does.
        found = await eventually(after_crash.unfinished_payments)
        assert [p.payment_id for p in found] == [p.payment_id for p in posting]
    finally:
        await after_crash.close()


# -- money and text -------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1, 125_000, 999_999_999_999, 10**15, 2**63 - 1])
async def test_amounts_round_trip_as_int(journal: Any, amount: int) -> None:
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


async def test_a_float_amount_is_never_what_comes_back(journal: Any) -> None:
    rec = payment("000000000101", amount=10**15 + 1)
    await journal.insert_payment(rec)
    stored = await journal.get_payment(rec.key)
    assert stored is not None
    assert not isinstance(stored.amount, float)
    assert stored.amount == 1_000_000_000_000_001  # would be off by one via float


async def test_arabic_names_and_de48_round_trip(journal: Any, place: JournalPlace) -> None:
    rec, _ = await journal.insert_payment(payment("000000000110"))
    approve(rec)
    rec.customer_name = "فاطمة الزهراء — دمشق"
    rec.answer_de48 = "RN016RCPT-2025-000002CN020" + rec.customer_name + "\u200f"
    await journal.finish_payment(rec)
    await journal.close()

    j2 = place.new()
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


CALLS: dict[str, Callable[[Any], Awaitable[Any]]] = {
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
async def test_calls_after_close_raise_journal_error(place: JournalPlace, name: str) -> None:
    j = place.new()
    await j.open()
    await j.close()
    with pytest.raises(JournalError):
        await asyncio.wait_for(CALLS[name](j), timeout=5)


async def test_close_twice(place: JournalPlace) -> None:
    j = place.new()
    await j.open()
    await j.close()
    await j.close()
    with pytest.raises(JournalError):
        await j.payments()


async def test_writes_queued_before_close_are_committed(place: JournalPlace) -> None:
    j = place.new()
    await j.open()
    pending = [asyncio.ensure_future(j.insert_payment(payment(f"{i:012d}"))) for i in range(20)]
    await asyncio.sleep(0)  # every insert is queued
    await j.close()
    assert all(f.result()[1] for f in pending)

    j2 = place.new()
    await j2.open()
    try:
        assert len(await j2.payments()) == 20
    finally:
        await j2.close()


# -- durability ---------------------------------------------------------------------------------


async def test_everything_survives_close_and_reopen(place: JournalPlace) -> None:
    j = place.new()
    await j.open()
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

    j2 = place.new()
    await j2.open()
    try:
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


async def test_payment_is_seen_by_another_journal_once_its_write_returned(
    journal: Any, place: JournalPlace
) -> None:
    rec = await approved_in_journal(journal, "000000000073")
    other = place.new()  # another process (after a crash, or another instance)
    await other.open()
    try:
        seen = await other.get_payment_by_id(rec.payment_id)
        assert seen is not None
        assert (seen.state, seen.response_code) == (PaymentState.APPROVED, "00")
    finally:
        await other.close()


# -- one op's failure is its own ---------------------------------------------------------------


async def test_one_failing_op_does_not_undo_the_others(journal: Any) -> None:
    ghost = approve(payment("000000000080", payment_id="P-GHOST"))
    good = [payment(f"00000000008{i}") for i in range(1, 6)]
    coros: list[Awaitable[Any]] = [journal.insert_payment(p) for p in good[:2]]
    coros.append(journal.finish_payment(ghost))
    coros.extend(journal.insert_payment(p) for p in good[2:])

    results = await asyncio.gather(*coros, return_exceptions=True)

    assert isinstance(results[2], JournalError)
    assert all(r == (p, True) for r, p in zip(results[:2] + results[3:], good, strict=True))
    # Concurrent writes have no order among them (several writers share the queue).
    assert sorted(p.payment_id for p in await journal.payments()) == sorted(
        p.payment_id for p in good
    )


async def test_an_unexpected_error_in_one_op_fails_only_that_op(journal: Any) -> None:
    # An amount no journal can hold (beyond a 64-bit integer) is not an error of the
    # database: it must still fail alone, as a JournalError, and the rest be committed.
    bad = payment("000000000090", amount=2**64)
    good = [payment(f"00000000009{i}") for i in range(1, 4)]
    results = await asyncio.gather(
        journal.insert_payment(good[0]),
        journal.insert_payment(bad),
        journal.insert_payment(good[1]),
        journal.insert_payment(good[2]),
        return_exceptions=True,
    )
    assert isinstance(results[1], JournalError)
    assert [results[0], results[2], results[3]] == [(p, True) for p in good]
    # Concurrent writes have no order among them (several writers share the queue).
    assert sorted(p.payment_id for p in await journal.payments()) == sorted(
        p.payment_id for p in good
    )


# -- the refusals: invariants that hold across hub instances -----------------------------------


async def test_a_closed_date_refuses_postings_and_approvals_but_records_declines(
    journal: Any, place: JournalPlace
) -> None:
    await place.close_dates_before(journal, SDATE + timedelta(days=1))
    for state in (PaymentState.POSTING, PaymentState.APPROVED):
        with pytest.raises(DateClosed):
            await journal.insert_payment(payment("000000000140", state=state))
    assert await journal.get_payment(key("000000000140")) is None
    declined = payment("000000000140", state=PaymentState.DECLINED)
    declined.response_code, declined.answered_at = "90", T0
    assert await journal.insert_payment(declined) == (declined, True)
    # A repeat of a recorded key is answered as existing, closed date or not.
    again, created = await journal.insert_payment(payment("000000000140", payment_id="P-2"))
    assert created is False and again.response_code == "90"
    # The open date is not refused.
    later = replace(payment("000000000141"), settlement_date=SDATE + timedelta(days=1))
    assert (await journal.insert_payment(later))[1] is True


async def test_a_lone_reversal_after_its_payment_was_recorded_is_refused_key_taken(
    journal: Any,
) -> None:
    rec, _ = await journal.insert_payment(payment("000000000150"))  # by "another instance"
    lone = reversal("000000000150", payment_id=None, response_code="25", booked_on=None)
    with pytest.raises(KeyTaken):
        await journal.insert_reversal(lone)
    assert await journal.get_reversal(lone.key) is None
    stored = await journal.get_payment(rec.key)
    assert stored is not None and stored.reversed is False
    # Named, it is recorded.
    named = reversal("000000000150", payment_id=rec.payment_id, response_code="25")
    await journal.insert_reversal(named)
    assert await journal.get_reversal(named.key) == named


async def test_key_reversed_is_seen_by_another_journal_on_the_same_place(
    journal: Any, place: JournalPlace
) -> None:
    await journal.insert_reversal(
        reversal("000000000160", payment_id=None, response_code="25", booked_on=None)
    )
    other = place.new()
    await other.open()
    try:
        with pytest.raises(KeyReversed):
            await other.insert_payment(payment("000000000160"))
        assert await other.get_payment(key("000000000160")) is None
    finally:
        await other.close()


# -- outcomes written late (the journal could not write at the time) --------------------------


async def test_write_outcome_inserts_or_updates_and_leaves_another_payment_id_alone(
    journal: Any,
) -> None:
    never = payment("000000000170", state=PaymentState.DECLINED)
    never.response_code, never.answered_at = "96", T0
    task = task_for(never.payment_id)
    await journal.write_outcome(never, task=task)
    assert await journal.get_payment(never.key) == never
    assert list(await journal.open_tasks()) == [task]

    posting, _ = await journal.insert_payment(payment("000000000171"))
    answered = approve(payment("000000000171"))
    await journal.write_outcome(answered)
    stored = await journal.get_payment(posting.key)
    assert stored is not None and stored.state is PaymentState.APPROVED
    assert stored.receipt == answered.receipt

    intruder = approve(payment("000000000171", payment_id="P-INTRUDER"))
    await journal.write_outcome(intruder)
    assert await journal.get_payment_by_id("P-INTRUDER") is None
    kept = await journal.get_payment(posting.key)
    assert kept is not None and kept.payment_id == posting.payment_id


async def test_write_outcomes_if_posting_writes_only_rows_still_posting(journal: Any) -> None:
    posting, _ = await journal.insert_payment(payment("000000000180"))
    done = await approved_in_journal(journal, "000000000181")
    missing = payment("000000000182")

    def uncertain(r: Any) -> Any:
        u = replace(r, state=PaymentState.UNCERTAIN, response_code="91", answered_at=T0)
        return u, task_for(r.payment_id)

    outcomes = [uncertain(posting), uncertain(done), uncertain(missing)]
    written = await journal.write_outcomes(outcomes, if_posting=True)

    assert [r.payment_id for r in written] == [posting.payment_id]
    assert [t.payment_id for t in await journal.open_tasks()] == [posting.payment_id]
    again = await journal.get_payment(done.key)
    assert again is not None and again.state is PaymentState.APPROVED
    assert await journal.get_payment(missing.key) is None
    # Recovery taking the same payment over twice writes it once.
    assert await journal.write_outcomes([uncertain(posting)], if_posting=True) == []
    assert len(list(await journal.open_tasks())) == 1


# -- what the operators read (JournalReader) --------------------------------------------------


async def test_reader_finds_a_transactions_whole_story(journal: Any) -> None:
    rec = await approved_in_journal(journal, "00000000019 ")  # DE 37 with a trailing space
    other_acq, _ = await journal.insert_payment(
        replace(payment("000000000190"), key=key("00000000019", acquirer="600009"))
    )
    cancel = task_for(rec.payment_id, kind=TaskKind.CANCEL, next_at=T0 + timedelta(minutes=1))
    rev = reversal("00000000019 ", payment_id=rec.payment_id, response_code="00")
    await journal.insert_reversal(rev, task=cancel)
    cancel.attempts = 1
    await journal.complete_task(cancel, outcome="cancelled", reversal_key=rev.key)

    found = await journal.payments_by_rrn("00000000019")
    assert [p.payment_id for p in found] == [rec.payment_id, other_acq.payment_id]
    assert [p.payment_id for p in await journal.payments_by_rrn(" 00000000019 ")] == [
        rec.payment_id,
        other_acq.payment_id,
    ]
    by_acq = await journal.payments_by_rrn("00000000019", acquirer="600001", mmdd="0314")
    assert [p.payment_id for p in by_acq] == [rec.payment_id]
    assert await journal.payments_by_rrn("00000000019", mmdd="0315") == []
    revs = await journal.reversals_by_rrn("00000000019")
    assert len(revs) == 1 and revs[0].cancel_state == "confirmed"
    assert await journal.reversals_by_rrn("00000000019", acquirer="600009") == []

    history = await journal.task_history(rec.payment_id)
    assert [(h.task.kind, h.outcome, h.task.attempts) for h in history] == [
        (TaskKind.CANCEL, "cancelled", 1)
    ]
    assert history[0].done_at == cancel.next_at
    assert await journal.task_history(other_acq.payment_id) == []
    assert [p.payment_id for p in await journal.payments(biller=BILLER)] == [
        rec.payment_id,
        other_acq.payment_id,
    ]
    assert await journal.payments(biller="OTHER") == []


async def test_resolution_and_ledger_queries(journal: Any) -> None:
    a = await approved_in_journal(journal, "000000000200")
    b = await approved_in_journal(journal, "000000000201", biller="OTHER")
    tomorrow = replace(payment("000000000202"), settlement_date=date(2025, 3, 15))
    await journal.insert_payment(tomorrow)
    await journal.finish_payment(approve(tomorrow))
    assert [p.payment_id for p in await journal.approved_payments(BILLER, SDATE)] == [a.payment_id]
    assert [p.payment_id for p in await journal.approved_payments("OTHER", SDATE)] == [b.payment_id]
    assert [p.payment_id for p in await journal.held_payments(BILLER)] == [
        a.payment_id,
        tomorrow.payment_id,
    ]
    rec = await journal.get_payment_by_id(a.payment_id)
    assert rec is not None
    rec.resolution = Resolution.NEVER_POSTED
    rec.account = "changed by the caller"  # a record got back is the caller's copy
    assert (await journal.get_payment_by_id(a.payment_id)).account == "0100234567"


# -- a batch biller's bills: taken by one payment at a time -----------------------------------


async def test_a_bill_is_taken_by_one_payment_and_released_by_its_reversal(journal: Any) -> None:
    first = approve(replace(payment("000000000210"), claims=("B-1", "B-2")))
    assert (await journal.insert_payment(first))[1] is True
    second = approve(replace(payment("000000000211"), claims=("B-3", "B-2")))
    with pytest.raises(BillTaken):
        await journal.insert_payment(second)
    assert await journal.get_payment(second.key) is None  # the payment and its bills, or none
    other_biller = approve(replace(payment("000000000212", biller="OTHER"), claims=("B-2",)))
    assert (await journal.insert_payment(other_biller))[1] is True

    await journal.insert_reversal(
        reversal("000000000210", payment_id=first.payment_id, response_code="00")
    )
    again = approve(replace(payment("000000000213"), claims=("B-3", "B-2")))
    assert (await journal.insert_payment(again))[1] is True
    # B-3 was not taken by the refused payment: it is the new one's now.
    with pytest.raises(BillTaken):
        await journal.insert_payment(approve(replace(payment("000000000214"), claims=("B-3",))))


async def test_payments_file_entries_are_the_days_approvals_then_its_00_reversals(
    journal: Any,
) -> None:
    kept = await approved_in_journal(journal, "000000000220 ")
    undone = await approved_in_journal(journal, "000000000221")
    await approved_in_journal(journal, "000000000222", biller="OTHER")
    declined, _ = await journal.insert_payment(payment("000000000223"))
    declined.state, declined.response_code, declined.answered_at = PaymentState.DECLINED, "13", T0
    await journal.finish_payment(declined)
    await journal.insert_reversal(
        reversal("000000000221", payment_id=undone.payment_id, response_code="00")
    )
    await journal.insert_reversal(
        reversal("000000000223", payment_id=declined.payment_id, response_code="25")
    )
    pages = [page async for page in journal.payments_file_entries(BILLER, SDATE)]
    rows = [e for page in pages for e in page]
    assert [(e.status, e.payment_id) for e in rows] == [
        ("approved", kept.payment_id),
        ("approved", undone.payment_id),
        ("reversed", undone.payment_id),
    ]
    first = rows[0]
    assert (first.rrn, first.acquirer, first.amount, first.receipt) == (
        "000000000220",
        "600001",
        125_000,
        "RCPT-2025-000001",
    )
    assert type(first.amount) is int and first.settlement_date == SDATE
    later = SDATE + timedelta(days=1)
    assert [page async for page in journal.payments_file_entries(BILLER, later)] in ([], [[]])
