"""The SQLite journal: payments, reversals and resolver tasks in one embedded file.

Zero set-up and durable (WAL, ``synchronous=FULL``, group commit: see
:mod:`billhub.journal.sqlite_db`). One hub process owns the file; the clearing
and operators' commands may open it beside it.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from billhub.errors import BillTaken, DateClosed, JournalError, KeyReversed, KeyTaken
from billhub.iso8583 import codes as rc
from billhub.journal import codec as c
from billhub.journal.bills import CLAIM_BILL, RELEASE_BILLS, sql_for
from billhub.journal.dayfile_sql import payments_file_entries
from billhub.journal.schema import MIGRATIONS
from billhub.journal.sqlite_db import WAL_LIMIT_BYTES, SqliteDatabase, WriteHealth
from billhub.pipeline.model import (
    DayFileEntry,
    PaymentKey,
    PaymentRecord,
    PaymentState,
    ResolverTask,
    ReversalRecord,
    TaskRecord,
)

_SELECT_PAYMENT = f"SELECT {c.PAYMENT_COLUMNS} FROM payments"
_SELECT_REVERSAL = f"SELECT {c.REVERSAL_COLUMNS} FROM reversals"
_SELECT_TASK = f"SELECT {c.TASK_COLUMNS} FROM tasks"
#: A new payment; a key already taken inserts nothing (rowcount 0).
_INSERT_PAYMENT = (
    f"INSERT INTO payments ({c.PAYMENT_COLUMNS}, seq, instance) "
    f"VALUES ({', '.join('?' * 23)}, ?, ?) "
    "ON CONFLICT (acquirer, rrn, settlement_mmdd) DO NOTHING"
)
_SELECT_BY_KEY = f"{_SELECT_PAYMENT} WHERE acquirer=? AND rrn=? AND settlement_mmdd=?"
#: States whose insert a closed settlement date refuses (a decline is always recorded).
_OPEN_DATE_STATES = frozenset({PaymentState.POSTING, PaymentState.APPROVED})
_REVERSED, _CLOSED, _TAKEN, _BILL_TAKEN = "reversed", "closed", "taken", "bill_taken"
_CLAIM = sql_for(CLAIM_BILL, postgres=False)
_RELEASE = sql_for(RELEASE_BILLS, postgres=False)


class SqliteJournal:
    """A :class:`~billhub.pipeline.ports.Journal` on one SQLite file."""

    def __init__(
        self,
        path: Path | str,
        *,
        on_commit: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] | None = None,
        health: WriteHealth | None = None,
        wal_limit: int = WAL_LIMIT_BYTES,
        read_only: bool = False,
        instance: str = "",
    ) -> None:
        #: Who writes: recorded with each payment, so that after a crash the
        #: unfinished payments of earlier runs are told from this run's in flight.
        self.instance = instance or f"sqlite-{uuid.uuid4().hex[:12]}"
        self.db = SqliteDatabase(
            path,
            MIGRATIONS,
            on_commit=on_commit,
            clock=clock,
            health=health,
            wal_limit=wal_limit,
            read_only=read_only,
        )
        self.path = self.db.path
        self._seq = 0
        # Keys reversed before their payment arrived: every new payment is checked
        # against them, so they are kept in memory (one hub process owns this file).
        self._tombstones: set[tuple[str, str, str]] = set()

    @property
    def stats(self) -> Any:
        return self.db.stats

    async def open(self) -> None:
        await self.db.open(self._load)

    def _load(self, conn: sqlite3.Connection) -> None:
        row = conn.execute(
            "SELECT max(s) FROM (SELECT max(seq) AS s FROM payments "
            "UNION ALL SELECT max(seq) FROM reversals UNION ALL SELECT max(seq) FROM bills_files "
            "UNION ALL SELECT max(seq) FROM bills UNION ALL SELECT max(seq) FROM bill_claims)"
        ).fetchone()
        self._seq = int(row[0] or 0)
        self._tombstones = {
            (r[0], r[1], r[2])
            for r in conn.execute(
                "SELECT acquirer, rrn, settlement_mmdd FROM reversals WHERE payment_id IS NULL"
            )
        }

    async def close(self) -> None:
        await self.db.close()

    def schema_version(self) -> int:
        return self.db.schema_version()

    def next_seq(self) -> int:
        # Only ever called on the writer thread, so no lock is needed.
        self._seq += 1
        return self._seq

    # -- payments ------------------------------------------------------------------------

    async def insert_payment(self, record: PaymentRecord) -> tuple[PaymentRecord, bool]:
        k = record.key
        reversed_first = (k.acquirer, k.rrn, k.settlement_mmdd) in self._tombstones
        check_date = record.state in _OPEN_DATE_STATES

        def op(conn: sqlite3.Connection) -> tuple[PaymentRecord, bool] | str:
            if reversed_first or check_date:
                row = conn.execute(_SELECT_BY_KEY, (k.acquirer, k.rrn, k.settlement_mmdd))
                existing = row.fetchone()
                if existing is not None:
                    return c.payment_from_row(existing), False
                if reversed_first:
                    return _REVERSED
                closed = conn.execute("SELECT max(new_date) FROM cutovers").fetchone()[0]
                if closed is not None and c.day(record.settlement_date) < closed:
                    return _CLOSED
            if record.claims:
                conn.execute("SAVEPOINT claims")
            cur = conn.execute(_INSERT_PAYMENT, self._insert_params(record))
            if cur.rowcount == 1:
                if record.claims and not self._claim(conn, record):
                    return _BILL_TAKEN
                return record, True
            if record.claims:
                conn.execute("RELEASE claims")
            row = conn.execute(_SELECT_BY_KEY, (k.acquirer, k.rrn, k.settlement_mmdd))
            return c.payment_from_row(row.fetchone()), False

        result: tuple[PaymentRecord, bool] | str = await self.db.submit(op)
        if result == _REVERSED:
            raise KeyReversed("a reversal of this key came first")
        if result == _CLOSED:
            raise DateClosed(f"settlement date {record.settlement_date} is closed")
        if result == _BILL_TAKEN:
            raise BillTaken("another payment took a bill this one would pay")
        assert not isinstance(result, str)
        return result

    def _claim(self, conn: sqlite3.Connection, record: PaymentRecord) -> bool:
        """Take the payment's bills at the hub's own store, all or none: a bill another
        payment holds rolls the payment back too (to the savepoint before its insert)."""
        for bill_id in record.claims:
            cur = conn.execute(_CLAIM, (record.biller, bill_id, record.payment_id, self.next_seq()))
            if cur.rowcount != 1:
                conn.execute("ROLLBACK TO claims")
                conn.execute("RELEASE claims")
                return False
        conn.execute("RELEASE claims")
        return True

    def _insert_params(self, record: PaymentRecord) -> tuple[Any, ...]:
        return (*c.payment_params(record), self.next_seq(), self.instance)

    async def finish_payment(
        self, record: PaymentRecord, *, task: ResolverTask | None = None
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if _update_answer(conn, record, if_posting=True) != 1:
                raise JournalError(f"payment {record.payment_id} is not being posted")
            if task is not None:
                self._insert_task(conn, task)

        await self.db.submit(op)

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
        def op(conn: sqlite3.Connection) -> list[PaymentRecord]:
            done = []
            for record, task in outcomes:
                written = _update_answer(conn, record, if_posting=if_posting)
                if written == 0 and not if_posting:
                    written = conn.execute(_INSERT_PAYMENT, self._insert_params(record)).rowcount
                if written == 1:
                    done.append(record)
                    if task is not None:
                        self._insert_task(conn, task)
            return done

        result: list[PaymentRecord] = await self.db.submit(op)
        return result

    async def unfinished_payments(self) -> list[PaymentRecord]:
        rows = await self.db.read(
            f"{_SELECT_PAYMENT} WHERE state=? AND (instance IS NULL OR instance != ?) ORDER BY seq",
            (PaymentState.POSTING.value, self.instance),
        )
        return [c.payment_from_row(r) for r in rows]

    @staticmethod
    def _insert_task(conn: sqlite3.Connection, task: ResolverTask) -> None:
        cur = conn.execute(
            "INSERT INTO tasks (kind, payment_id, biller, attempts, next_at, created_at, "
            "not_before_final, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            c.task_params(task),
        )
        task.task_id = int(cur.lastrowid or 0)

    async def get_payment(self, key: PaymentKey) -> PaymentRecord | None:
        row = await self.db.read(
            f"{_SELECT_PAYMENT} WHERE acquirer=? AND rrn=? AND settlement_mmdd=?",
            (key.acquirer, key.rrn, key.settlement_mmdd),
        )
        return c.payment_from_row(row[0]) if row else None

    async def get_payment_by_id(self, payment_id: str) -> PaymentRecord | None:
        row = await self.db.read(f"{_SELECT_PAYMENT} WHERE payment_id=?", (payment_id,))
        return c.payment_from_row(row[0]) if row else None

    # -- reversals -------------------------------------------------------------------------

    async def get_reversal(self, key: PaymentKey) -> ReversalRecord | None:
        row = await self.db.read(
            f"{_SELECT_REVERSAL} WHERE acquirer=? AND rrn=? AND settlement_mmdd=?",
            (key.acquirer, key.rrn, key.settlement_mmdd),
        )
        return c.reversal_from_row(row[0]) if row else None

    async def insert_reversal(
        self, reversal: ReversalRecord, *, task: ResolverTask | None = None
    ) -> None:
        k = reversal.key

        def op(conn: sqlite3.Connection) -> str | None:
            if reversal.payment_id is None:
                found = conn.execute(_SELECT_BY_KEY, (k.acquirer, k.rrn, k.settlement_mmdd))
                if found.fetchone() is not None:
                    return _TAKEN
            conn.execute(
                f"INSERT INTO reversals ({c.REVERSAL_COLUMNS}, seq) VALUES "
                f"({', '.join('?' * 11)}, ?)",
                (*c.reversal_params(reversal), self.next_seq()),
            )
            if reversal.payment_id is not None and reversal.response_code == rc.APPROVED:
                cur = conn.execute(
                    "UPDATE payments SET reversed=1 WHERE payment_id=? AND state=? AND reversed=0",
                    (reversal.payment_id, PaymentState.APPROVED.value),
                )
                if cur.rowcount != 1:
                    raise JournalError("reversal of a payment that is not approved or reversed")
                # The bills it took at the hub's own store are open again.
                conn.execute(_RELEASE, (self.next_seq(), reversal.biller, reversal.payment_id))
            if task is not None:
                self._insert_task(conn, task)
            return None

        if await self.db.submit(op) == _TAKEN:
            raise KeyTaken("a payment of this key was recorded meanwhile")
        if reversal.payment_id is None:
            self._tombstones.add((k.acquirer, k.rrn, k.settlement_mmdd))

    # -- the resolver's work ---------------------------------------------------------------

    async def due_tasks(self, now: datetime, limit: int = 100) -> list[ResolverTask]:
        rows = await self.db.read(
            f"{_SELECT_TASK} WHERE done_at IS NULL AND next_at <= ? ORDER BY next_at LIMIT ?",
            (c.ts(now), limit),
        )
        return [c.task_from_row(r) for r in rows]

    async def open_tasks(self) -> Sequence[ResolverTask]:
        rows = await self.db.read(f"{_SELECT_TASK} WHERE done_at IS NULL ORDER BY next_at", ())
        return [c.task_from_row(r) for r in rows]

    async def reschedule_task(self, task: ResolverTask) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET attempts=?, next_at=?, detail=? WHERE task_id=?",
                (task.attempts, c.ts(task.next_at), c.task_params(task)[7], task.task_id),
            )

        await self.db.submit(op)

    async def complete_task(
        self,
        task: ResolverTask,
        *,
        outcome: str,
        payment: PaymentRecord | None = None,
        reversal_key: PaymentKey | None = None,
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET done_at=?, outcome=?, attempts=? WHERE task_id=?",
                (c.ts(task.next_at), outcome, task.attempts, task.task_id),
            )
            if payment is not None:
                conn.execute(
                    "UPDATE payments SET resolution=? WHERE payment_id=?",
                    (payment.resolution.value if payment.resolution else None, payment.payment_id),
                )
            if reversal_key is not None:
                conn.execute(
                    "UPDATE reversals SET cancel_state='confirmed' WHERE acquirer=? AND rrn=? "
                    "AND settlement_mmdd=?",
                    (reversal_key.acquirer, reversal_key.rrn, reversal_key.settlement_mmdd),
                )

        await self.db.submit(op)

    # -- what batch billers and reports read -------------------------------------------------

    async def approved_payments(self, biller: str, settlement_date: date) -> list[PaymentRecord]:
        rows = await self.db.read(
            f"{_SELECT_PAYMENT} WHERE biller=? AND settlement_date=? AND state=? ORDER BY seq",
            (biller, c.day(settlement_date), PaymentState.APPROVED.value),
        )
        return [c.payment_from_row(r) for r in rows]

    async def reversals_booked(self, biller: str, booked_on: date) -> list[ReversalRecord]:
        rows = await self.db.read(
            f"{_SELECT_REVERSAL} WHERE biller=? AND booked_on=? AND response_code='00' "
            "ORDER BY seq",
            (biller, c.day(booked_on)),
        )
        return [c.reversal_from_row(r) for r in rows]

    def payments_file_entries(
        self, biller: str, settlement_date: date
    ) -> AsyncIterator[Sequence[DayFileEntry]]:
        return payments_file_entries(self.db, biller, settlement_date)

    async def held_payments(self, biller: str) -> list[PaymentRecord]:
        rows = await self.db.read(
            f"{_SELECT_PAYMENT} WHERE biller=? AND state=? AND reversed=0 ORDER BY seq",
            (biller, PaymentState.APPROVED.value),
        )
        return [c.payment_from_row(r) for r in rows]

    # -- what the operators' commands read (JournalReader) ----------------------------------

    @staticmethod
    def _by_rrn(rrn: str, acquirer: str | None, mmdd: str | None) -> tuple[str, list[str]]:
        where, params = "rtrim(rrn) = ?", [rrn.strip()]
        if acquirer is not None:
            where += " AND acquirer = ?"
            params.append(acquirer)
        if mmdd is not None:
            where += " AND settlement_mmdd = ?"
            params.append(mmdd)
        return where, params

    async def payments_by_rrn(
        self, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
    ) -> list[PaymentRecord]:
        where, params = self._by_rrn(rrn, acquirer, mmdd)
        rows = await self.db.read(f"{_SELECT_PAYMENT} WHERE {where} ORDER BY seq", tuple(params))
        return [c.payment_from_row(r) for r in rows]

    async def reversals_by_rrn(
        self, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
    ) -> list[ReversalRecord]:
        where, params = self._by_rrn(rrn, acquirer, mmdd)
        rows = await self.db.read(f"{_SELECT_REVERSAL} WHERE {where} ORDER BY seq", tuple(params))
        return [c.reversal_from_row(r) for r in rows]

    async def task_history(self, payment_id: str) -> list[TaskRecord]:
        rows = await self.db.read(
            f"SELECT {c.TASK_COLUMNS}, done_at, outcome FROM tasks WHERE payment_id = ? "
            "ORDER BY task_id",
            (payment_id,),
        )
        return [TaskRecord(c.task_from_row(r[:9]), c.parse_ts(r[9]), r[10]) for r in rows]

    async def payments(self, *, biller: str | None = None) -> list[PaymentRecord]:
        """Every payment (optionally of one biller), oldest first: for tests and reports."""
        if biller is None:
            rows = await self.db.read(f"{_SELECT_PAYMENT} ORDER BY seq", ())
        else:
            rows = await self.db.read(f"{_SELECT_PAYMENT} WHERE biller=? ORDER BY seq", (biller,))
        return [c.payment_from_row(r) for r in rows]


def _update_answer(
    conn: sqlite3.Connection, record: PaymentRecord, *, if_posting: bool = False
) -> int:
    """Write a payment's answer fields and state; returns the rows changed (0 or 1)."""
    cur = conn.execute(
        "UPDATE payments SET state=?, response_code=?, approval_code=?, answer_de48=?, "
        "receipt=?, customer_name=?, answered_at=?, reversed=?, resolution=? "
        "WHERE payment_id=?" + (" AND state='posting'" if if_posting else ""),
        (
            record.state.value,
            record.response_code,
            record.approval_code,
            record.answer_de48,
            record.receipt,
            record.customer_name,
            c.ts(record.answered_at),
            1 if record.reversed else 0,
            record.resolution.value if record.resolution else None,
            record.payment_id,
        ),
    )
    return int(cur.rowcount)
