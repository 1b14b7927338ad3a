"""The PostgreSQL journal: what the SQLite journal does, on a server several hubs share.

The same records stored the same way (:mod:`billhub.journal.codec`), written
through group commit (:mod:`billhub.journal.pg_db`). What one SQLite process
could keep in memory is asked of the database here, because another instance
may have changed it: the keys reversed before their payment, the closed dates
and the locks on a key are checked where the record is written, in one
function call per payment (migration 2 of :mod:`billhub.journal.pg_schema`).

Resolver tasks are *claimed*: :meth:`PgJournal.due_tasks` takes the due tasks
no live instance holds (``FOR UPDATE SKIP LOCKED``) for ``claim_s``; a
reschedule or completion lets go of them, and the claim of an instance that
died runs out, so another takes its tasks over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date, datetime
from typing import Any

from billhub.errors import BillTaken, DateClosed, JournalError, KeyReversed, KeyTaken
from billhub.iso8583 import codes as rc
from billhub.journal import codec as c
from billhub.journal.bills import CLAIM_BILL, RELEASE_BILLS, sql_for
from billhub.journal.dayfile_sql import payments_file_entries
from billhub.journal.pg_db import PgConn, PgDatabase, rows_changed
from billhub.journal.pg_schema import PG_MIGRATIONS
from billhub.journal.sqlite_db import WriteHealth
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
_BY_KEY = "acquirer=$1 AND rrn=$2 AND settlement_mmdd=$3"
_INSERT_PAYMENT = "SELECT billhub_insert_payment(" + ", ".join(f"${i}" for i in range(1, 26)) + ")"
_UPSERT_PAYMENT = (
    f"INSERT INTO payments ({c.PAYMENT_COLUMNS}, instance) VALUES "
    f"({', '.join(f'${i}' for i in range(1, 25))}) "
    "ON CONFLICT (acquirer, rrn, settlement_mmdd) DO NOTHING"
)
_UPDATE_ANSWER = (
    "UPDATE payments SET state=$1, response_code=$2, approval_code=$3, answer_de48=$4, "
    "receipt=$5, customer_name=$6, answered_at=$7, reversed=$8, resolution=$9 "
    "WHERE payment_id=$10"
)
_INSERT_TASK = (
    "INSERT INTO tasks (kind, payment_id, biller, attempts, next_at, created_at, "
    "not_before_final, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING task_id"
)
_OPEN_DATE_STATES = frozenset({PaymentState.POSTING, PaymentState.APPROVED})
# PostgreSQL orders the batch stores' changes by transaction id, not by seq (0 here).
_CLAIM = sql_for(CLAIM_BILL, postgres=True)
_RELEASE = sql_for(RELEASE_BILLS, postgres=True)


class _Taken(Exception):
    """A bill of the payment was taken: roll the savepoint back."""


def _answer_params(r: PaymentRecord) -> tuple[Any, ...]:
    return (
        r.state.value,
        r.response_code,
        r.approval_code,
        r.answer_de48,
        r.receipt,
        r.customer_name,
        c.ts(r.answered_at),
        1 if r.reversed else 0,
        r.resolution.value if r.resolution else None,
        r.payment_id,
    )


class PgJournal:
    """A :class:`~billhub.pipeline.ports.Journal` (and ledger, and reader) on PostgreSQL."""

    def __init__(
        self,
        dsn: str,
        *,
        instance: str | None = None,
        health: WriteHealth | None = None,
        on_commit: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
        lease_s: float = 10.0,
        claim_s: float = 30.0,
    ) -> None:
        self.db = PgDatabase(
            dsn,
            PG_MIGRATIONS,
            instance=instance,
            health=health,
            on_commit=on_commit,
            clock=clock,
            read_only=read_only,
            lease_s=lease_s,
            heartbeat_s=min(2.0, lease_s / 4),
        )
        self.instance = self.db.instance
        self._claim_s = claim_s

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    # -- payments ------------------------------------------------------------------------

    async def insert_payment(self, record: PaymentRecord) -> tuple[PaymentRecord, bool]:
        check_date = record.state in _OPEN_DATE_STATES
        params = (*c.payment_params(record), self.instance, check_date)

        async def op(conn: PgConn) -> str:
            if not record.claims:
                outcome: str = await conn.fetchval(_INSERT_PAYMENT, *params)
                return outcome
            try:
                async with conn.transaction():  # a savepoint: the payment and its bills, or none
                    outcome = await conn.fetchval(_INSERT_PAYMENT, *params)
                    if outcome == "created":
                        for bill_id in record.claims:
                            status = await conn.execute(
                                _CLAIM, record.biller, bill_id, record.payment_id, 0
                            )
                            if rows_changed(status) != 1:
                                raise _Taken
            except _Taken:
                return "bill_taken"
            return outcome

        outcome = await self.db.submit(op)
        if outcome == "created":
            return record, True
        if outcome == "reversed":
            raise KeyReversed("a reversal of this key came first")
        if outcome == "closed":
            raise DateClosed(f"settlement date {record.settlement_date} is closed")
        if outcome == "bill_taken":
            raise BillTaken("another payment took a bill this one would pay")
        existing = await self.get_payment(record.key)
        if existing is None:  # pragma: no cover - a row of this key cannot vanish
            raise JournalError("a payment of this key exists but cannot be read")
        return existing, False

    async def finish_payment(
        self, record: PaymentRecord, *, task: ResolverTask | None = None
    ) -> None:
        params = _answer_params(record)

        async def op(conn: PgConn) -> None:
            # Only while still POSTING: an instance whose heartbeat lapsed (a pause, a
            # cut from the database) may have had the payment taken over as uncertain
            # by another, whose resolver cancels it; an approval written over that
            # would be a 00 the biller no longer holds.
            status = await conn.execute(_UPDATE_ANSWER + " AND state='posting'", *params)
            if rows_changed(status) != 1:
                raise JournalError(f"payment {record.payment_id} is not being posted")
            if task is not None:
                await self._insert_task(conn, task)

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
        update = _UPDATE_ANSWER + (" AND state='posting'" if if_posting else "")

        async def op(conn: PgConn) -> list[PaymentRecord]:
            done = []
            for record, task in outcomes:
                written = rows_changed(await conn.execute(update, *_answer_params(record)))
                if written == 0 and not if_posting:
                    params = (*c.payment_params(record), self.instance)
                    written = rows_changed(await conn.execute(_UPSERT_PAYMENT, *params))
                if written == 1:
                    done.append(record)
                    if task is not None:
                        await self._insert_task(conn, task)
            return done

        result: list[PaymentRecord] = await self.db.submit(op)
        return result

    async def unfinished_payments(self) -> list[PaymentRecord]:
        self.db.check_open()
        if self.db.answering_for() < self.db.lease_s:
            # Just back from an outage (or just started): a beat older than the lease
            # may be a live instance that could not beat either. Asked again later.
            return []
        rows = await self.db.fetch(
            f"{_SELECT_PAYMENT} p WHERE state='posting' AND "
            "(instance IS NULL OR (instance <> $1 AND NOT EXISTS (SELECT 1 FROM instances i "
            "WHERE i.instance = p.instance AND i.stopped_at IS NULL "
            "AND i.heartbeat_at > now() - make_interval(secs => $2)))) ORDER BY seq",
            self.instance,
            self.db.lease_s,
        )
        return [c.payment_from_row(r) for r in rows]

    @staticmethod
    async def _insert_task(conn: PgConn, task: ResolverTask) -> None:
        task.task_id = int(await conn.fetchval(_INSERT_TASK, *c.task_params(task)))

    async def get_payment(self, key: PaymentKey) -> PaymentRecord | None:
        rows = await self.db.fetch(
            f"{_SELECT_PAYMENT} WHERE {_BY_KEY}", key.acquirer, key.rrn, key.settlement_mmdd
        )
        return c.payment_from_row(rows[0]) if rows else None

    async def get_payment_by_id(self, payment_id: str) -> PaymentRecord | None:
        rows = await self.db.fetch(f"{_SELECT_PAYMENT} WHERE payment_id=$1", payment_id)
        return c.payment_from_row(rows[0]) if rows else None

    # -- reversals -------------------------------------------------------------------------

    async def get_reversal(self, key: PaymentKey) -> ReversalRecord | None:
        rows = await self.db.fetch(
            f"{_SELECT_REVERSAL} WHERE {_BY_KEY}", key.acquirer, key.rrn, key.settlement_mmdd
        )
        return c.reversal_from_row(rows[0]) if rows else None

    async def insert_reversal(
        self, reversal: ReversalRecord, *, task: ResolverTask | None = None
    ) -> None:
        params = c.reversal_params(reversal)

        async def op(conn: PgConn) -> str:
            if reversal.payment_id is None:
                lone = (*params[:8], params[9], params[10])  # all but payment_id
                outcome: str = await conn.fetchval(
                    "SELECT billhub_insert_lone_reversal($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    *lone,
                )
                if outcome == "taken":
                    return outcome
            else:
                await conn.execute(
                    f"INSERT INTO reversals ({c.REVERSAL_COLUMNS}) VALUES "
                    f"({', '.join(f'${i}' for i in range(1, 12))})",
                    *params,
                )
            if reversal.payment_id is not None and reversal.response_code == rc.APPROVED:
                status = await conn.execute(
                    "UPDATE payments SET reversed=1 WHERE payment_id=$1 AND state=$2 "
                    "AND reversed=0",
                    reversal.payment_id,
                    PaymentState.APPROVED.value,
                )
                if rows_changed(status) != 1:
                    raise JournalError("reversal of a payment that is not approved or reversed")
                # The bills it took at the hub's own store are open again.
                await conn.execute(_RELEASE, 0, reversal.biller, reversal.payment_id)
            if task is not None:
                await self._insert_task(conn, task)
            return "ok"

        if await self.db.submit(op) == "taken":
            raise KeyTaken("a payment of this key was recorded meanwhile")

    # -- the resolver's work ---------------------------------------------------------------

    async def due_tasks(self, now: datetime, limit: int = 100) -> list[ResolverTask]:
        """The due tasks no live instance holds, claimed for this one."""
        rows = await self.db.fetch(
            "UPDATE tasks SET claimed_by=$3, claimed_until=now() + make_interval(secs => $4) "
            "WHERE task_id IN (SELECT task_id FROM tasks WHERE done_at IS NULL AND next_at <= $1 "
            "AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = $3) "
            "ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {c.TASK_COLUMNS}",
            c.ts(now),
            limit,
            self.instance,
            self._claim_s,
        )
        return sorted((c.task_from_row(r) for r in rows), key=lambda t: t.next_at)

    async def open_tasks(self) -> Sequence[ResolverTask]:
        rows = await self.db.fetch(f"{_SELECT_TASK} WHERE done_at IS NULL ORDER BY next_at")
        return [c.task_from_row(r) for r in rows]

    async def reschedule_task(self, task: ResolverTask) -> None:
        detail = c.task_params(task)[7]

        async def op(conn: PgConn) -> None:
            await conn.execute(
                "UPDATE tasks SET attempts=$1, next_at=$2, detail=$3, claimed_by=NULL, "
                "claimed_until=NULL WHERE task_id=$4",
                task.attempts,
                c.ts(task.next_at),
                detail,
                task.task_id,
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
        async def op(conn: PgConn) -> None:
            await conn.execute(
                "UPDATE tasks SET done_at=$1, outcome=$2, attempts=$3, claimed_by=NULL, "
                "claimed_until=NULL WHERE task_id=$4",
                c.ts(task.next_at),
                outcome,
                task.attempts,
                task.task_id,
            )
            if payment is not None:
                await conn.execute(
                    "UPDATE payments SET resolution=$1 WHERE payment_id=$2",
                    payment.resolution.value if payment.resolution else None,
                    payment.payment_id,
                )
            if reversal_key is not None:
                k = reversal_key
                await conn.execute(
                    f"UPDATE reversals SET cancel_state='confirmed' WHERE {_BY_KEY}",
                    k.acquirer,
                    k.rrn,
                    k.settlement_mmdd,
                )

        await self.db.submit(op)

    # -- what batch billers and reports read -------------------------------------------------

    async def approved_payments(self, biller: str, settlement_date: date) -> list[PaymentRecord]:
        rows = await self.db.fetch(
            f"{_SELECT_PAYMENT} WHERE biller=$1 AND settlement_date=$2 AND state='approved' "
            "ORDER BY seq",
            biller,
            c.day(settlement_date),
        )
        return [c.payment_from_row(r) for r in rows]

    async def reversals_booked(self, biller: str, booked_on: date) -> list[ReversalRecord]:
        rows = await self.db.fetch(
            f"{_SELECT_REVERSAL} WHERE biller=$1 AND booked_on=$2 AND response_code='00' "
            "ORDER BY seq",
            biller,
            c.day(booked_on),
        )
        return [c.reversal_from_row(r) for r in rows]

    def payments_file_entries(
        self, biller: str, settlement_date: date
    ) -> AsyncIterator[Sequence[DayFileEntry]]:
        return payments_file_entries(self.db, biller, settlement_date)

    async def held_payments(self, biller: str) -> list[PaymentRecord]:
        rows = await self.db.fetch(
            f"{_SELECT_PAYMENT} WHERE biller=$1 AND state='approved' AND reversed=0 ORDER BY seq",
            biller,
        )
        return [c.payment_from_row(r) for r in rows]

    # -- what the operators' commands read (JournalReader) ----------------------------------

    @staticmethod
    def _by_rrn(rrn: str, acquirer: str | None, mmdd: str | None) -> tuple[str, list[str]]:
        where, params = "rtrim(rrn) = $1", [rrn.strip()]
        if acquirer is not None:
            params.append(acquirer)
            where += f" AND acquirer = ${len(params)}"
        if mmdd is not None:
            params.append(mmdd)
            where += f" AND settlement_mmdd = ${len(params)}"
        return where, params

    async def payments_by_rrn(
        self, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
    ) -> list[PaymentRecord]:
        where, params = self._by_rrn(rrn, acquirer, mmdd)
        rows = await self.db.fetch(f"{_SELECT_PAYMENT} WHERE {where} ORDER BY seq", *params)
        return [c.payment_from_row(r) for r in rows]

    async def reversals_by_rrn(
        self, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
    ) -> list[ReversalRecord]:
        where, params = self._by_rrn(rrn, acquirer, mmdd)
        rows = await self.db.fetch(f"{_SELECT_REVERSAL} WHERE {where} ORDER BY seq", *params)
        return [c.reversal_from_row(r) for r in rows]

    async def task_history(self, payment_id: str) -> list[TaskRecord]:
        rows = await self.db.fetch(
            f"SELECT {c.TASK_COLUMNS}, done_at, outcome FROM tasks WHERE payment_id = $1 "
            "ORDER BY task_id",
            payment_id,
        )
        return [TaskRecord(c.task_from_row(r[:9]), c.parse_ts(r[9]), r[10]) for r in rows]

    async def payments(self, *, biller: str | None = None) -> list[PaymentRecord]:
        if biller is None:
            rows = await self.db.fetch(f"{_SELECT_PAYMENT} ORDER BY seq")
        else:
            rows = await self.db.fetch(f"{_SELECT_PAYMENT} WHERE biller=$1 ORDER BY seq", biller)
        return [c.payment_from_row(r) for r in rows]
