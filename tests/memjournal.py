"""An in-memory journal: the journal ports held in dictionaries, for pipeline tests.

It keeps the contract of :class:`~billhub.pipeline.ports.Journal`,
:class:`~billhub.pipeline.ports.PaymentsLedger` and
:class:`~billhub.pipeline.ports.JournalReader` as the SQLite and PostgreSQL
journals do (the same contract suite runs over all three:
``tests/contracts/test_journal_contract.py``): a key is applied once, the
refusals :class:`~billhub.errors.KeyReversed`, :class:`~billhub.errors.DateClosed`,
:class:`~billhub.errors.KeyTaken` and :class:`~billhub.errors.BillTaken` (a batch
biller's bill is taken by one payment at a time), a reversal and its payment's mark in one
step, a failing write that writes nothing, and every call after ``close``
answered with :class:`~billhub.errors.JournalError`.

What a database holds lives in a :class:`MemoryStore`; a :class:`MemoryJournal`
is one hub instance on it. A second journal on the same store is a restart
(the store is "the disk") or another instance. Records are copied in and out,
so a caller mutating a record it got back changes nothing stored, as with a
real database.

``fail_writes`` makes every write raise :class:`JournalError` with that
reason, writing nothing (a full disk, a lost server), until it is cleared.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Literal

from billhub.errors import BillTaken, DateClosed, JournalError, KeyReversed, KeyTaken
from billhub.iso8583 import codes as rc
from billhub.pipeline.model import (
    DayFileEntry,
    PaymentKey,
    PaymentRecord,
    PaymentState,
    ResolverTask,
    ReversalRecord,
    TaskRecord,
)

_OPEN_DATE_STATES = frozenset({PaymentState.POSTING, PaymentState.APPROVED})


@dataclass
class _Task:
    task: ResolverTask
    done_at: datetime | None = None
    outcome: str | None = None


@dataclass
class MemoryStore:
    """What a journal database holds; shared by the journals opened on it."""

    #: Payments by id, in insertion order (dicts keep it): ``payments()`` order.
    payments: dict[str, PaymentRecord] = field(default_factory=dict)
    by_key: dict[PaymentKey, str] = field(default_factory=dict)
    reversals: dict[PaymentKey, ReversalRecord] = field(default_factory=dict)
    tasks: dict[int, _Task] = field(default_factory=dict)
    #: Payments' instances: who wrote each (recovery takes only those of gone ones).
    instances: dict[str, str] = field(default_factory=dict)
    #: Instances running on this store (a closed journal is gone).
    running: set[str] = field(default_factory=set)
    #: Batch billers' bills taken by payments: (biller, bill_id) -> payment id, while held.
    claims: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Settlement dates before this one are closed (a cutover to it was recorded).
    closed_before: date | None = None
    task_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    commits: int = 0


def _copy_payment(r: PaymentRecord) -> PaymentRecord:
    return replace(r)


def _copy_task(t: ResolverTask) -> ResolverTask:
    return replace(t, detail=dict(t.detail))


class MemoryJournal:
    """The journal ports on a :class:`MemoryStore` (a fresh one if none is given)."""

    def __init__(self, store: MemoryStore | None = None, *, instance: str | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.instance = instance or f"memory-{uuid.uuid4().hex[:8]}"
        self.fail_writes: str | None = None
        self._open = False
        #: Writes that reached the store (one commit each): what tests count.
        self.writes = 0

    async def open(self) -> None:
        self._open = True
        self.store.running.add(self.instance)

    async def close(self) -> None:
        self._open = False
        self.store.running.discard(self.instance)

    def close_dates_before(self, day: date) -> None:
        """What a cutover to ``day`` records: every settlement date before it is closed."""
        s = self.store
        s.closed_before = day if s.closed_before is None else max(s.closed_before, day)

    # -- the engine --------------------------------------------------------------------

    def _read(self) -> MemoryStore:
        if not self._open:
            raise JournalError("journal is not open")
        return self.store

    def _write(self) -> MemoryStore:
        store = self._read()
        if self.fail_writes is not None:
            raise JournalError(f"journal write failed: {self.fail_writes}")
        store.commits += 1
        self.writes += 1
        return store

    def _add_task(self, store: MemoryStore, task: ResolverTask) -> None:
        task.task_id = next(store.task_ids)
        store.tasks[task.task_id] = _Task(_copy_task(task))

    @staticmethod
    def _set_answer(stored: PaymentRecord, r: PaymentRecord) -> None:
        stored.state = r.state
        stored.response_code = r.response_code
        stored.approval_code = r.approval_code
        stored.answer_de48 = r.answer_de48
        stored.receipt = r.receipt
        stored.customer_name = r.customer_name
        stored.answered_at = r.answered_at
        stored.reversed = r.reversed
        stored.resolution = r.resolution

    @staticmethod
    def _check_new(store: MemoryStore, record: PaymentRecord) -> None:
        if record.payment_id in store.payments:
            raise JournalError(f"payment id {record.payment_id} is taken")
        if not 0 <= record.amount < 2**63:  # what BIGINT and SQLite's INTEGER hold
            raise JournalError("amount out of range")

    def _insert(self, store: MemoryStore, record: PaymentRecord) -> None:
        store.payments[record.payment_id] = _copy_payment(record)
        store.by_key[record.key] = record.payment_id
        store.instances[record.payment_id] = self.instance

    # -- payments ------------------------------------------------------------------------

    async def insert_payment(self, record: PaymentRecord) -> tuple[PaymentRecord, bool]:
        store = self._read()
        existing = store.by_key.get(record.key)
        if existing is not None:
            return _copy_payment(store.payments[existing]), False
        lone = store.reversals.get(record.key)
        if lone is not None and lone.payment_id is None:
            raise KeyReversed("a reversal of this key came first")
        closed = store.closed_before
        if record.state in _OPEN_DATE_STATES and closed and record.settlement_date < closed:
            raise DateClosed(f"settlement date {record.settlement_date} is closed")
        self._check_new(store, record)
        taken = [b for b in record.claims if store.claims.get((record.biller, b), None)]
        if taken:
            raise BillTaken("another payment took a bill this one would pay")
        self._insert(self._write(), record)
        for bill_id in record.claims:
            store.claims[(record.biller, bill_id)] = record.payment_id
        return record, True

    async def finish_payment(
        self, record: PaymentRecord, *, task: ResolverTask | None = None
    ) -> None:
        stored = self._read().payments.get(record.payment_id)
        if stored is None or stored.state is not PaymentState.POSTING:
            raise JournalError(f"payment {record.payment_id} is not being posted")
        store = self._write()
        self._set_answer(stored, record)
        if task is not None:
            self._add_task(store, task)

    async def write_outcome(
        self, record: PaymentRecord, *, task: ResolverTask | None = None
    ) -> None:
        await self.write_outcomes([(record, task)])

    async def write_outcomes(
        self,
        outcomes: Sequence[tuple[PaymentRecord, ResolverTask | None]],
        *,
        if_posting: bool = False,
    ) -> list[PaymentRecord]:
        store = self._write()
        done = []
        for record, task in outcomes:
            stored = store.payments.get(record.payment_id)
            if stored is not None:
                if if_posting and stored.state is not PaymentState.POSTING:
                    continue
                self._set_answer(stored, record)
            elif if_posting or record.key in store.by_key:
                continue
            else:
                self._check_new(store, record)
                self._insert(store, record)
            done.append(record)
            if task is not None:
                self._add_task(store, task)
        return done

    async def unfinished_payments(self) -> list[PaymentRecord]:
        store = self._read()
        return [
            _copy_payment(p)
            for pid, p in store.payments.items()
            if p.state is PaymentState.POSTING
            and store.instances.get(pid) != self.instance
            and store.instances.get(pid) not in store.running
        ]

    async def get_payment(self, key: PaymentKey) -> PaymentRecord | None:
        store = self._read()
        pid = store.by_key.get(key)
        return _copy_payment(store.payments[pid]) if pid is not None else None

    async def get_payment_by_id(self, payment_id: str) -> PaymentRecord | None:
        p = self._read().payments.get(payment_id)
        return _copy_payment(p) if p is not None else None

    # -- reversals -------------------------------------------------------------------------

    async def get_reversal(self, key: PaymentKey) -> ReversalRecord | None:
        r = self._read().reversals.get(key)
        return replace(r) if r is not None else None

    async def insert_reversal(
        self, reversal: ReversalRecord, *, task: ResolverTask | None = None
    ) -> None:
        store = self._read()
        if reversal.payment_id is None and reversal.key in store.by_key:
            raise KeyTaken("a payment of this key was recorded meanwhile")
        if reversal.key in store.reversals:
            raise JournalError("a reversal of this key is recorded already")
        marks = None
        if reversal.payment_id is not None and reversal.response_code == rc.APPROVED:
            marks = store.payments.get(reversal.payment_id)
            if marks is None or marks.state is not PaymentState.APPROVED or marks.reversed:
                raise JournalError("reversal of a payment that is not approved or reversed")
        self._write()
        store.reversals[reversal.key] = replace(reversal)
        if marks is not None:
            marks.reversed = True
            for held, pid in list(store.claims.items()):  # its bills are open again
                if pid == marks.payment_id:
                    del store.claims[held]
        if task is not None:
            self._add_task(store, task)

    # -- the resolver's work ---------------------------------------------------------------

    def _open_tasks(self) -> list[ResolverTask]:
        open_ = [t.task for t in self._read().tasks.values() if t.done_at is None]
        return sorted(open_, key=lambda t: (t.next_at, t.task_id))

    async def due_tasks(self, now: datetime, limit: int = 100) -> list[ResolverTask]:
        due = [t for t in self._open_tasks() if t.next_at <= now]
        return [_copy_task(t) for t in due[:limit]]

    async def open_tasks(self) -> Sequence[ResolverTask]:
        return [_copy_task(t) for t in self._open_tasks()]

    async def reschedule_task(self, task: ResolverTask) -> None:
        store = self._write()
        kept = store.tasks.get(task.task_id)
        if kept is not None:
            kept.task.attempts = task.attempts
            kept.task.next_at = task.next_at
            kept.task.detail = dict(task.detail)

    async def complete_task(
        self,
        task: ResolverTask,
        *,
        outcome: str,
        payment: PaymentRecord | None = None,
        reversal_key: PaymentKey | None = None,
    ) -> None:
        store = self._write()
        kept = store.tasks.get(task.task_id)
        if kept is not None:
            kept.done_at, kept.outcome = task.next_at, outcome
            kept.task.attempts = task.attempts
        if payment is not None and payment.payment_id in store.payments:
            store.payments[payment.payment_id].resolution = payment.resolution
        if reversal_key is not None and reversal_key in store.reversals:
            store.reversals[reversal_key].cancel_state = "confirmed"

    # -- what batch billers and reports read -------------------------------------------------

    def _payments(self) -> list[PaymentRecord]:
        return list(self._read().payments.values())

    async def approved_payments(self, biller: str, settlement_date: date) -> list[PaymentRecord]:
        return [
            _copy_payment(p)
            for p in self._payments()
            if p.biller == biller
            and p.settlement_date == settlement_date
            and p.state is PaymentState.APPROVED
        ]

    async def reversals_booked(self, biller: str, booked_on: date) -> list[ReversalRecord]:
        return [
            replace(r)
            for r in self._read().reversals.values()
            if r.biller == biller and r.booked_on == booked_on and r.response_code == rc.APPROVED
        ]

    async def payments_file_entries(
        self, biller: str, settlement_date: date, *, page: int = 20_000
    ) -> AsyncIterator[list[DayFileEntry]]:
        store = self._read()
        entries: list[DayFileEntry] = []
        for p in store.payments.values():
            if (p.biller, p.settlement_date, p.state) == (biller, settlement_date, APPROVED):
                entries.append(_entry("approved", p, p.amount))
        for r in store.reversals.values():
            if (r.biller, r.booked_on, r.response_code) != (biller, settlement_date, rc.APPROVED):
                continue
            if r.payment_id is None:
                continue
            original = store.payments.get(r.payment_id)
            if original is None:
                raise JournalError("a reversed payment is missing from the journal")
            entries.append(_entry("reversed", original, r.amount))
        for i in range(0, len(entries), page):
            yield entries[i : i + page]

    async def held_payments(self, biller: str) -> list[PaymentRecord]:
        return [
            _copy_payment(p)
            for p in self._payments()
            if p.biller == biller and p.state is PaymentState.APPROVED and not p.reversed
        ]

    # -- what the operators' commands read (JournalReader) ----------------------------------

    @staticmethod
    def _matches(key: PaymentKey, rrn: str, acquirer: str | None, mmdd: str | None) -> bool:
        return (
            key.rrn.rstrip() == rrn.strip()
            and acquirer in (None, key.acquirer)
            and mmdd in (None, key.settlement_mmdd)
        )

    async def payments_by_rrn(
        self, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
    ) -> list[PaymentRecord]:
        return [
            _copy_payment(p) for p in self._payments() if self._matches(p.key, rrn, acquirer, mmdd)
        ]

    async def reversals_by_rrn(
        self, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
    ) -> list[ReversalRecord]:
        return [
            replace(r)
            for r in self._read().reversals.values()
            if self._matches(r.key, rrn, acquirer, mmdd)
        ]

    async def task_history(self, payment_id: str) -> list[TaskRecord]:
        kept = sorted(self._read().tasks.items())
        return [
            TaskRecord(_copy_task(t.task), t.done_at, t.outcome)
            for _, t in kept
            if t.task.payment_id == payment_id
        ]

    async def payments(self, *, biller: str | None = None) -> list[PaymentRecord]:
        return [_copy_payment(p) for p in self._payments() if biller in (None, p.biller)]


APPROVED = PaymentState.APPROVED


def _entry(status: Literal["approved", "reversed"], p: PaymentRecord, amount: int) -> DayFileEntry:
    return DayFileEntry(
        status,
        p.payment_id,
        p.settlement_date,
        p.account,
        p.bill_id,
        amount,
        p.key.acquirer,
        p.key.rrn.strip(),
        p.channel,
        p.receipt,
    )


def snapshot(journal: MemoryJournal) -> MemoryStore:
    """A deep copy of what the journal holds, to compare before and after a refusal."""
    return copy.deepcopy(journal.store)
