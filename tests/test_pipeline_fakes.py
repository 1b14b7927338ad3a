"""The pipeline's decisions, on the in-memory journal and biller: no sockets, no files.

What the switch sees (DE 39, 38, 48) and what is left in the journal and at the
biller, for each decision of LINK-SPEC 6.2-6.4: an inquiry, a payment, its
repeats with the same or other content (`94`), reversals (`00`, `13`, `25`), a
biller that fails (`91`, resolved by the resolver until the biller holds
nothing), a journal that cannot write (`96`), a date another instance closed
(`90`). The late original after a `25` and recovery after a crash are in
``tests/test_pipeline_journal_rules.py``; the same flows over TLS and SQLite in
``tests/test_transactions.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from tests.fakes import FixedIds, ManualClock, MemoryBiller, memory_account
from tests.journal_records import T0
from tests.memjournal import MemoryJournal

from billhub.iso8583.de48 import parse_tlv
from billhub.iso8583.spec import load_spec
from billhub.pipeline.decisions import payment_key
from billhub.pipeline.model import AccountStatus, PaymentOrder, PaymentState, Resolution, TaskKind
from billhub.pipeline.resolver import Resolver
from billhub.pipeline.routes import BillerRoute
from billhub.pipeline.service import Pipeline
from billhub.pipeline.unrecorded import UnrecordedOutcomes
from billhub.settlement.calendar import BusinessDay
from billhub.simulator import messages as m

BILLER = "100001"
ACCOUNT = "0100234567"
NAME = "محمد الأحمد"
MMDD = T0.strftime("%m%d")
RULES = load_spec(None).rules


@dataclass
class World:
    pipeline: Pipeline
    journal: MemoryJournal
    biller: MemoryBiller
    clock: ManualClock
    resolver: Resolver
    woken: list[int]

    async def resolve(self) -> None:
        """Let the resolver work until no task is open (its time is the manual clock)."""
        runner = asyncio.ensure_future(self.resolver.run())
        try:
            await self.resolver.run_until_idle(timeout=10)
        finally:
            await self.resolver.stop()
            runner.cancel()


class _Wake:
    def __init__(self, woken: list[int]) -> None:
        self.woken = woken

    def wake(self) -> None:
        self.woken.append(1)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    journal = MemoryJournal()
    await journal.open()
    account = memory_account(ACCOUNT, 125_000, 80_000, name=NAME)
    blocked = memory_account("0100000002", 5_000)
    blocked.status = AccountStatus.BLOCKED
    biller = MemoryBiller(BILLER, [account, blocked])
    clock = ManualClock(T0)
    unrecorded = UnrecordedOutcomes()
    woken: list[int] = []
    pipeline = Pipeline(
        RULES,
        journal,
        {BILLER: BillerRoute(BILLER, "Damascus", biller, budget=2.0, max_concurrency=4)},
        clock,
        FixedIds(),
        calendar=BusinessDay(T0.date),
        resolver=_Wake(woken),
        unrecorded=unrecorded,
    )
    resolver = Resolver(journal, {BILLER: biller}, clock, poll_interval=0.01, unrecorded=unrecorded)
    yield World(pipeline, journal, biller, clock, resolver, woken)
    await journal.close()


_stan = iter(range(1, 10**6))


def sent(msg: Any) -> Any:
    """What the switch's link adds to a request before it goes: DE 7 and DE 11."""
    msg.fields[7], msg.fields[11] = T0.strftime("%m%d%H%M%S"), f"{next(_stan):06d}"
    return msg


def pay(rrn: str = "1", amount: int = 205_000, account: str = ACCOUNT) -> Any:
    return sent(m.payment(BILLER, account, rrn, amount, MMDD))


async def handle(w: World, msg: Any) -> Any:
    return await w.pipeline.handle(msg)


def de48(answer: Any) -> dict[str, str]:
    return dict(parse_tlv(answer.fields[48]))


# -- inquiry -----------------------------------------------------------------------------------


async def test_an_inquiry_answers_the_bills_and_writes_nothing(world: World) -> None:
    answer = await handle(world, sent(m.inquiry(BILLER, ACCOUNT, "1")))
    assert answer.fields[39] == "00"
    assert answer.fields[4] == f"{205_000:012d}"
    assert de48(answer)["CN"] == NAME
    refusals = {
        "14": m.inquiry(BILLER, "0199999999", "2"),
        "58": m.inquiry(BILLER, "0100000002", "3"),
        "92": m.inquiry("999999", ACCOUNT, "4"),
    }
    for code, msg in refusals.items():
        assert (await handle(world, sent(msg))).fields[39] == code
    world.biller.down = True
    assert (await handle(world, sent(m.inquiry(BILLER, ACCOUNT, "5")))).fields[39] == "91"
    assert world.journal.writes == 0 and await world.journal.payments() == []


# -- payment -----------------------------------------------------------------------------------


async def test_a_payment_is_in_the_journal_before_its_biller_is_asked(world: World) -> None:
    seen: list[Any] = []
    real_post = world.biller.post_payment

    async def post(order: PaymentOrder) -> str:
        seen.append(await world.journal.get_payment_by_id(order.payment_id))
        return await real_post(order)

    world.biller.post_payment = post  # type: ignore[method-assign]
    answer = await handle(world, pay())

    assert [r.state for r in seen] == [PaymentState.POSTING], "journaled first, then posted"
    assert answer.fields[39] == "00"
    stored = await world.journal.get_payment(payment_key(answer))
    assert stored is not None and stored.state is PaymentState.APPROVED
    assert answer.fields[38] == stored.approval_code
    # DE 48: the biller's receipt and the name, with no inquiry before (LINK-SPEC 6.3).
    assert de48(answer) == {"RN": stored.receipt, "CN": NAME}
    assert list(world.biller.ledger) == [stored.payment_id]
    assert (await world.biller.open_bills(ACCOUNT)).bills == ()


async def test_a_repeat_gets_the_first_answer_and_reaches_no_biller(world: World) -> None:
    first = pay()
    answer = await handle(world, first)
    for mti in ("0201", "0200"):
        again = await handle(world, sent(m.repeat(first, mti)))
        assert [again.fields.get(f) for f in (38, 39, 48)] == [
            answer.fields.get(f) for f in (38, 39, 48)
        ]
    assert world.biller.posts == 1
    assert len(await world.journal.payments()) == 1
    assert world.pipeline.counters.repeats == 2


async def test_same_key_other_content_is_94_and_changes_nothing(world: World) -> None:
    answer = await handle(world, pay())
    before = await world.journal.payments()
    other = pay(amount=125_000)  # same DE 32 + 37 + 15, another amount
    refused = await handle(world, other)
    assert refused.fields[39] == "94"
    assert 38 not in refused.fields
    assert await world.journal.payments() == before
    assert world.biller.posts == 1
    assert answer.fields[39] == "00"


async def test_a_biller_refusal_is_declined_with_its_code(world: World) -> None:
    answer = await handle(world, pay(amount=1))  # not the amount due
    assert answer.fields[39] == "13"
    (stored,) = await world.journal.payments()
    assert stored.state is PaymentState.DECLINED and stored.response_code == "13"
    assert world.biller.ledger == {} and await world.journal.open_tasks() == []


async def test_an_unknown_biller_is_92_recorded_declined(world: World) -> None:
    answer = await handle(world, sent(m.payment("999999", ACCOUNT, "1", 100, MMDD)))
    assert answer.fields[39] == "92"
    (stored,) = await world.journal.payments()
    assert stored.state is PaymentState.DECLINED and stored.response_code == "92"
    assert world.biller.posts == 0


# -- 91: a posting in doubt, resolved until the biller holds nothing ---------------------------


async def test_a_lost_answer_is_91_and_the_resolver_cancels_the_posting(world: World) -> None:
    world.biller.post_fault = "lost_answer"  # the biller posts; its answer never arrives
    answer = await handle(world, pay())
    assert answer.fields[39] == "91"
    (stored,) = await world.journal.payments()
    assert stored.state is PaymentState.UNCERTAIN and stored.response_code == "91"
    (task,) = await world.journal.open_tasks()
    assert task.kind is TaskKind.RESOLVE and task.payment_id == stored.payment_id
    assert world.woken, "the resolver is told at once"
    assert world.biller.ledger[stored.payment_id].cancelled is False  # held, for now

    world.biller.post_fault = None
    again = await handle(world, sent(m.repeat(pay())))
    assert again.fields[39] == "91", "a repeat is answered from the journal"
    assert world.biller.posts == 1

    await world.resolve()
    assert world.biller.ledger[stored.payment_id].cancelled is True
    resolved = await world.journal.get_payment_by_id(stored.payment_id)
    assert resolved is not None and resolved.resolution is Resolution.CANCELLED
    assert resolved.state is PaymentState.UNCERTAIN  # still a 91 to the switch
    assert (await world.biller.open_bills(ACCOUNT)).total_due == 205_000


async def test_a_timeout_before_posting_is_never_posted_after_the_quiet_period(
    world: World,
) -> None:
    world.biller.post_fault = "timeout"
    assert (await handle(world, pay())).fields[39] == "91"
    world.clock.advance(world.pipeline.quiet_period + 1)  # no late posting can land now
    world.biller.post_fault = None
    await world.resolve()
    (stored,) = await world.journal.payments()
    assert stored.resolution is Resolution.NEVER_POSTED
    assert world.biller.ledger == {} and world.biller.cancels == 0


# -- reversals -----------------------------------------------------------------------------------


async def test_a_reversal_is_00_once_and_the_biller_gives_the_bills_back(world: World) -> None:
    original = pay()
    await handle(world, original)
    answer = await handle(world, sent(m.reversal(original)))
    assert answer.fields[39] == "00"
    (stored,) = await world.journal.payments()
    assert stored.reversed is True
    (task,) = await world.journal.open_tasks()
    assert task.kind is TaskKind.CANCEL
    again = await handle(world, sent(m.reversal(original, mti="0421")))
    assert again.fields[39] == "00"
    assert len(await world.journal.open_tasks()) == 1, "a repeat adds nothing"

    await world.resolve()
    assert world.biller.ledger[stored.payment_id].cancelled is True
    rev = await world.journal.get_reversal(stored.key)
    assert rev is not None and rev.cancel_state == "confirmed"
    assert (await world.biller.open_bills(ACCOUNT)).total_due == 205_000


async def test_a_reversal_of_another_amount_is_13_and_reverses_nothing(world: World) -> None:
    original = pay()
    await handle(world, original)
    assert (await handle(world, sent(m.reversal(original, amount=1)))).fields[39] == "13"
    (stored,) = await world.journal.payments()
    assert stored.reversed is False and await world.journal.open_tasks() == []
    assert await world.journal.get_reversal(stored.key) is None
    # The full amount still reverses it.
    assert (await handle(world, sent(m.reversal(original)))).fields[39] == "00"


async def test_a_reversal_of_a_declined_payment_is_25(world: World) -> None:
    original = pay(amount=1)
    assert (await handle(world, original)).fields[39] == "13"
    assert (await handle(world, sent(m.reversal(original)))).fields[39] == "25"
    (stored,) = await world.journal.payments()
    assert stored.reversed is False
    rev = await world.journal.get_reversal(stored.key)
    assert rev is not None and rev.response_code == "25" and rev.payment_id == stored.payment_id


# -- the journal refuses or cannot write --------------------------------------------------------


async def test_a_journal_that_cannot_write_is_96_and_no_biller_is_asked(world: World) -> None:
    world.journal.fail_writes = "disk_full"
    answer = await handle(world, pay())
    assert answer.fields[39] == "96"
    assert 38 not in answer.fields and 48 not in answer.fields
    assert world.biller.posts == 0
    world.journal.fail_writes = None
    assert await world.journal.payments() == []
    # The answer given stands for its repeats, and is written once the journal takes it.
    assert (await handle(world, sent(m.repeat(pay())))).fields[39] == "96"
    await world.resolve()
    (stored,) = await world.journal.payments()
    assert stored.state is PaymentState.DECLINED and stored.response_code == "96"
    assert world.biller.posts == 0


async def test_an_outcome_the_journal_refused_is_resolved_once_it_writes(world: World) -> None:
    real_post = world.biller.post_payment

    async def post_then_disk_full(order: PaymentOrder) -> str:
        receipt = await real_post(order)
        world.journal.fail_writes = "disk_full"  # the approval cannot be recorded
        return receipt

    world.biller.post_payment = post_then_disk_full  # type: ignore[method-assign]
    answer = await handle(world, pay())
    assert answer.fields[39] == "96", "an approval not recorded was not given"
    (pid,) = world.biller.ledger
    world.journal.fail_writes = None
    await world.resolve()
    stored = await world.journal.get_payment_by_id(pid)
    assert stored is not None and stored.state is PaymentState.UNCERTAIN
    assert stored.resolution is Resolution.CANCELLED
    assert world.biller.ledger[pid].cancelled is True, "the biller keeps nothing"


async def test_a_96_posted_at_the_biller_is_cancelled_after_a_resolver_turn_broke(
    world: World,
) -> None:
    """The order a PostgreSQL cut produced: the biller posts, the approval's write fails
    (`96`), and the resolver's next read raises outside the journal's contract (the
    driver's "another operation is in progress" on a connection cut mid-statement).
    The resolver's loop goes on, and the biller keeps nothing."""
    real_post, real_due = world.biller.post_payment, world.journal.due_tasks
    broke: list[int] = []

    async def post_then_cut(order: PaymentOrder) -> str:
        receipt = await real_post(order)
        world.journal.fail_writes = "connection"
        return receipt

    async def due_tasks_breaking_once(now: Any, limit: int = 100) -> Any:
        if not broke:
            broke.append(1)
            raise RuntimeError("cannot switch to state 12; another operation is in progress")
        return await real_due(now, limit)

    world.biller.post_payment = post_then_cut  # type: ignore[method-assign]
    world.journal.due_tasks = due_tasks_breaking_once  # type: ignore[method-assign]
    told: list[str] = []
    world.resolver.on_turn_failed = told.append  # what the hub logs as resolver_turn_failed
    assert (await handle(world, pay())).fields[39] == "96"
    (pid,) = world.biller.ledger
    world.journal.fail_writes = None
    await world.resolve()
    assert broke and world.resolver.stats.failed_turns == 1
    assert told == ["RuntimeError"], "the operator is told the type, never the text"
    assert world.biller.ledger[pid].cancelled is True, "the biller keeps nothing"
    stored = await world.journal.get_payment_by_id(pid)
    assert stored is not None and stored.resolution is Resolution.CANCELLED
    assert (await handle(world, sent(m.repeat(pay())))).fields[39] == "96", "the answer stands"


async def test_a_date_another_instance_closed_is_90_recorded_declined(world: World) -> None:
    world.journal.close_dates_before(T0.date() + timedelta(days=1))
    answer = await handle(world, pay())
    assert answer.fields[39] == "90"
    (stored,) = await world.journal.payments()
    assert stored.state is PaymentState.DECLINED and stored.response_code == "90"
    assert world.biller.posts == 0
    assert (await handle(world, sent(m.repeat(pay())))).fields[39] == "90"
