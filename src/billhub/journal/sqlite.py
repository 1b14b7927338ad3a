"""The SQLite journal: embedded, zero set-up, durable (WAL, ``synchronous=FULL``).

All access goes through one thread that owns the connection. Writes are queued
and the writer takes everything queued at once into one transaction, then
commits once: group commit. A write's future resolves only after that commit
returned, so a caller that awaits it before answering `00` has its payment on
disk first. No artificial delay is added: batches form by themselves while the
previous commit is syncing.

A journal that cannot write (disk full, I/O error, a lock held by another
process, a read-only file) is reported to the ``health`` observer with the
reason, once per failed batch, and as recovered when a write commits again;
while it is failing and idle, a probe write every few seconds finds out when
it can write again. The WAL is kept bounded while the hub runs (see
:class:`_Checkpointer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from billhub.errors import JournalError
from billhub.iso8583 import codes as rc
from billhub.journal import codec as c
from billhub.journal.diagnose import open_failure
from billhub.journal.schema import MIGRATIONS
from billhub.pipeline.model import (
    PaymentKey,
    PaymentRecord,
    PaymentState,
    ResolverTask,
    ReversalRecord,
    TaskKind,
)
from billhub.settlement.model import Finding, FindingKind, ImportOutcome, Reconciliation, Totals
from billhub.settlement.ports import CutoverRecord
from billhub.sqlite_schema import SchemaTooNew, migrate, rollback

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

_SELECT_PAYMENT = f"SELECT {c.PAYMENT_COLUMNS} FROM payments"
_SELECT_REVERSAL = f"SELECT {c.REVERSAL_COLUMNS} FROM reversals"
_SELECT_TASK = f"SELECT {c.TASK_COLUMNS} FROM tasks"
#: A new payment; a key already taken inserts nothing (rowcount 0).
_INSERT_PAYMENT = (
    f"INSERT INTO payments ({c.PAYMENT_COLUMNS}, seq) VALUES ({', '.join('?' * 23)}, ?) "
    "ON CONFLICT (acquirer, rrn, settlement_mmdd) DO NOTHING"
)
_MAX_BATCH = 512
#: The WAL is restarted (and cut back to this size) once it grows past it under load.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
_MIN_WAL_BOUND = 1024 * 1024
#: While writes fail and nothing else is queued, try a probe write this often.
PROBE_INTERVAL_S = 2.0

#: SQLite primary result codes that mean "the journal cannot write", as operators name them.
_WRITE_FAILURES = {
    13: "disk_full",  # SQLITE_FULL
    10: "io_error",  # SQLITE_IOERR (and its extended codes)
    5: "locked",  # SQLITE_BUSY
    6: "locked",  # SQLITE_LOCKED
    8: "read_only",  # SQLITE_READONLY
    14: "cannot_open",  # SQLITE_CANTOPEN (the -wal or -shm file)
    11: "corrupt",  # SQLITE_CORRUPT
    26: "corrupt",  # SQLITE_NOTADB
}


def write_failure(exc: BaseException) -> str | None:
    """The reason ``exc`` means the journal cannot write, or None (an op's own fault)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return _WRITE_FAILURES.get(code & 0xFF)
        return None
    if isinstance(exc, OSError):
        return "io_error"
    return None


class WriteHealth(Protocol):
    """Told, on the event loop, how the journal's writes go (observability implements it)."""

    def write_failed(self, reason: str, detail: str) -> None: ...

    def write_ok(self) -> None: ...


class _Checkpointer:
    """Copies the WAL back into the database in the background, and keeps it bounded.

    Every ``interval`` with commits since the last turn, a PASSIVE checkpoint
    copies what no reader still needs and returns; the writer keeps appending
    meanwhile and never pays for the copy. Under steady load that never lets
    the WAL start over (new frames keep arriving while the copy runs), so it
    would grow with every burst and stay that size; hence two more steps:

    - past its bound, a RESTART checkpoint holds the writer back while it copies
      what the last PASSIVE left (a quarter second's worth: milliseconds), and
      the next commit starts the WAL over, cut back to ``limit`` by
      ``journal_size_limit``;
    - with no commit since the last turn, a TRUNCATE checkpoint empties the WAL
      file: an idle journal takes no disk beyond its database.

    The bound is ``limit``, or a quarter of the disk space left if that is less
    (never under 1 MiB). On such a tight disk the WAL is truncated rather than
    restarted: it must leave room for the database to grow into, or no
    checkpoint could ever copy it back and the journal would stay unable to
    write after space came back.
    """

    def __init__(
        self,
        path: Path,
        commits: Callable[[], int],
        *,
        interval: float = 0.25,
        limit: int = WAL_LIMIT_BYTES,
    ) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._commits = commits
        self._interval = interval
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            seen = self._commits()
            while not self._stop.wait(self._interval):
                commits = self._commits()
                mode = self._mode(busy=commits != seen, wal=self._wal_size())
                seen = commits
                if mode:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute(f"PRAGMA wal_checkpoint({mode})")
        finally:
            conn.close()

    def _mode(self, *, busy: bool, wal: int) -> str:
        if not busy:
            return "TRUNCATE" if wal > 0 else ""
        bound = self._bound()
        if wal <= bound:
            return "PASSIVE"
        return "RESTART" if bound == self._limit else "TRUNCATE"

    def _bound(self) -> int:
        try:
            st = os.statvfs(self._path.parent)
        except OSError:
            return self._limit
        return max(_MIN_WAL_BOUND, min(self._limit, st.f_bavail * st.f_frsize // 4))

    def _wal_size(self) -> int:
        try:
            return self._wal.stat().st_size
        except OSError:
            return 0


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Nobody awaits a probe: take its exception so asyncio does not report it unread."""
    if not fut.cancelled():
        fut.exception()


class _OpFailed(Exception):
    """One op of a group raised: the group is redone op by op."""


class _Outcome:
    """What one batch did to the file: whether a write committed, and why one failed."""

    __slots__ = ("detail", "failure", "wrote")

    def __init__(self) -> None:
        self.wrote = False
        self.failure: str | None = None
        self.detail = ""

    def failed(self, exc: BaseException) -> None:
        reason = write_failure(exc)
        if reason is not None:
            self.failure, self.detail = reason, str(exc)


class CommitStats:
    """What the journal's commits looked like, for metrics: count, sizes, time."""

    def __init__(self) -> None:
        self.commits = 0
        self.ops = 0
        self.last_group = 0
        self.seconds = 0.0


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
    ) -> None:
        self.path = Path(path)
        self._health = health
        self._wal_limit = wal_limit
        self._failing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._queue: list[tuple[Op, asyncio.Future[Any]]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        # Keys reversed before their payment arrived: every new payment is checked
        # against them, so they are kept in memory (one instance owns this file).
        self._tombstones: set[tuple[str, str, str]] = set()
        self._on_commit = on_commit
        self._clock = clock
        self.stats = CommitStats()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open_sync)
        # Only an open journal takes writes: after a failed open, _submit refuses them
        # (JournalError) instead of queueing them for a writer that never runs.
        self._loop = loop
        self._wake = asyncio.Event()
        self._writer = self._loop.create_task(self._write_loop(), name="journal-writer")

    def _open_sync(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            # Checkpoints run on their own connection and thread (see _Checkpointer):
            # left to the writer, a checkpoint of a large WAL stalls every payment
            # waiting on that commit.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA journal_size_limit={int(self._wal_limit)}")
            migrate(conn, MIGRATIONS, datetime.now(UTC).isoformat(timespec="seconds"))
            row = conn.execute(
                "SELECT max(s) FROM (SELECT max(seq) AS s FROM payments "
                "UNION ALL SELECT max(seq) FROM reversals)"
            ).fetchone()
            self._seq = int(row[0] or 0)
            self._tombstones = {
                (r[0], r[1], r[2])
                for r in conn.execute(
                    "SELECT acquirer, rrn, settlement_mmdd FROM reversals WHERE payment_id IS NULL"
                )
            }
        except (sqlite3.Error, OSError, SchemaTooNew) as exc:
            if conn is not None:
                conn.close()
            raise JournalError(open_failure(self.path, exc)) from None
        self._conn = conn
        self._checkpointer = _Checkpointer(
            self.path, lambda: self.stats.commits, limit=self._wal_limit
        )
        self._checkpointer.start()

    def schema_version(self) -> int:
        if self._conn is None:
            raise JournalError("journal is not open")
        row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            assert self._wake is not None
            self._wake.set()
            await self._writer
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    # -- the writer --------------------------------------------------------------------

    def _submit(self, op: Op) -> asyncio.Future[Any]:
        if self._closed or self._loop is None or self._wake is None:
            raise JournalError("journal is not open")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append((op, fut))
        self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        assert self._wake is not None and self._loop is not None
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                if not self._failing:
                    await self._wake.wait()
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), PROBE_INTERVAL_S)
                    continue
                except TimeoutError:
                    probe: asyncio.Future[Any] = self._loop.create_future()
                    probe.add_done_callback(_retrieve)
                    self._queue.append((self._probe, probe))
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            outcome = _Outcome()
            try:
                results = await self._loop.run_in_executor(
                    self._executor, self._run_batch, batch, outcome
                )
            except Exception as exc:  # the commit itself failed: every op in it failed
                outcome.failed(exc)
                self._report(outcome)
                err = JournalError(f"commit failed: {exc}")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self._report(outcome)
            for (_, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _report(self, outcome: _Outcome) -> None:
        """Tell the health observer about a batch (on the loop): failing, or writing again."""
        if outcome.failure is not None:
            self._failing = True
            if self._health is not None:
                self._health.write_failed(outcome.failure, outcome.detail)
        elif outcome.wrote and self._failing:
            self._failing = False
            if self._health is not None:
                self._health.write_ok()

    @staticmethod
    def _probe(conn: sqlite3.Connection) -> None:
        """A real write (the database header's user version) to learn the disk takes writes."""
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"PRAGMA user_version={(version + 1) % 2**31}")

    def _run_batch(
        self, batch: list[tuple[Op, asyncio.Future[Any]]], outcome: _Outcome
    ) -> list[tuple[bool, Any]]:
        """Run a batch in one transaction; if an op fails, redo the batch op by op.

        The common case costs one BEGIN and one COMMIT for the whole group. An op
        that raises (rare: a constraint, a bug) rolls the group back, and every op
        is then run in a transaction of its own, so that one failing op fails
        alone and the others still commit. Ops are written to be re-runnable.
        """
        conn = self._conn
        if conn is None:
            raise JournalError("journal is closed")
        started = self._clock() if self._clock else 0.0
        changes = conn.total_changes
        try:
            out = self._run_group(conn, batch)
            outcome.wrote = True
        except _OpFailed as exc:
            if exc.__cause__ is not None:
                outcome.failed(exc.__cause__)
            out = []
            for op, _ in batch:
                ok, value = self._run_group_single(conn, op)
                if ok:
                    outcome.wrote = True
                elif value.__cause__ is not None:
                    outcome.failed(value.__cause__)
                out.append((ok, value))
        probed = any(op is SqliteJournal._probe for op, _ in batch)
        outcome.wrote = outcome.wrote and (conn.total_changes > changes or probed)
        self.stats.commits += 1
        self.stats.ops += len(batch)
        self.stats.last_group = len(batch)
        if self._clock is not None:
            elapsed = self._clock() - started
            self.stats.seconds += elapsed
            if self._on_commit is not None:
                self._on_commit(len(batch), elapsed)
        return out

    @staticmethod
    def _run_group(
        conn: sqlite3.Connection, batch: list[tuple[Op, asyncio.Future[Any]]]
    ) -> list[tuple[bool, Any]]:
        out: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op, _ in batch:
                try:
                    out.append((True, op(conn)))
                except Exception as exc:
                    raise _OpFailed from exc
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return out

    @staticmethod
    def _run_group_single(conn: sqlite3.Connection, op: Op) -> tuple[bool, Any]:
        """Run one op in its own transaction; ``(False, JournalError)`` if it fails.

        A failed COMMIT (disk full) fails the op too (see
        :func:`~billhub.sqlite_schema.rollback`).
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
            value = op(conn)
            conn.execute("COMMIT")
        except Exception as exc:  # this op alone fails
            rollback(conn)
            err = JournalError(str(exc))
            err.__cause__ = exc
            return False, err
        except BaseException:
            rollback(conn)
            raise
        return True, value

    def _next_seq(self) -> int:
        # Only ever called on the writer thread, so no lock is needed.
        self._seq += 1
        return self._seq

    # -- payments ------------------------------------------------------------------------

    async def insert_payment(self, record: PaymentRecord) -> tuple[PaymentRecord, bool]:
        k = record.key
        if (k.acquirer, k.rrn, k.settlement_mmdd) in self._tombstones:
            # Reversed before it arrived (LINK-SPEC 6.4): declined 25, never posted.
            record.state = PaymentState.DECLINED
            record.response_code = rc.NO_ORIGINAL
            record.answered_at = record.received_at
            record.approval_code = record.receipt = record.answer_de48 = None

        def op(conn: sqlite3.Connection) -> tuple[PaymentRecord, bool]:
            cur = conn.execute(
                _INSERT_PAYMENT,
                (*c.payment_params(record), self._next_seq()),
            )
            if cur.rowcount == 1:
                return record, True
            row = conn.execute(
                f"{_SELECT_PAYMENT} WHERE acquirer=? AND rrn=? AND settlement_mmdd=?",
                (k.acquirer, k.rrn, k.settlement_mmdd),
            ).fetchone()
            return c.payment_from_row(row), False

        result: tuple[PaymentRecord, bool] = await self._submit(op)
        return result

    async def finish_payment(
        self, record: PaymentRecord, *, task: ResolverTask | None = None
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if _update_answer(conn, record) != 1:
                raise JournalError(f"no payment {record.payment_id}")
            if task is not None:
                self._insert_task(conn, task)

        await self._submit(op)

    async def write_outcome(
        self, record: PaymentRecord, *, task: ResolverTask | None = None
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            written = _update_answer(conn, record)
            if written == 0:
                written = conn.execute(
                    _INSERT_PAYMENT,
                    (*c.payment_params(record), self._next_seq()),
                ).rowcount
            if task is not None and written == 1:
                self._insert_task(conn, task)

        await self._submit(op)

    @staticmethod
    def _insert_task(conn: sqlite3.Connection, task: ResolverTask) -> None:
        cur = conn.execute(
            "INSERT INTO tasks (kind, payment_id, biller, attempts, next_at, created_at, "
            "not_before_final, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            c.task_params(task),
        )
        task.task_id = int(cur.lastrowid or 0)

    async def get_payment(self, key: PaymentKey) -> PaymentRecord | None:
        row = await self._read(
            f"{_SELECT_PAYMENT} WHERE acquirer=? AND rrn=? AND settlement_mmdd=?",
            (key.acquirer, key.rrn, key.settlement_mmdd),
        )
        return c.payment_from_row(row[0]) if row else None

    async def get_payment_by_id(self, payment_id: str) -> PaymentRecord | None:
        row = await self._read(f"{_SELECT_PAYMENT} WHERE payment_id=?", (payment_id,))
        return c.payment_from_row(row[0]) if row else None

    # -- reversals -------------------------------------------------------------------------

    async def get_reversal(self, key: PaymentKey) -> ReversalRecord | None:
        row = await self._read(
            f"{_SELECT_REVERSAL} WHERE acquirer=? AND rrn=? AND settlement_mmdd=?",
            (key.acquirer, key.rrn, key.settlement_mmdd),
        )
        return c.reversal_from_row(row[0]) if row else None

    async def insert_reversal(
        self, reversal: ReversalRecord, *, task: ResolverTask | None = None
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO reversals ({c.REVERSAL_COLUMNS}, seq) VALUES "
                f"({', '.join('?' * 11)}, ?)",
                (*c.reversal_params(reversal), self._next_seq()),
            )
            if reversal.payment_id is not None and reversal.response_code == rc.APPROVED:
                cur = conn.execute(
                    "UPDATE payments SET reversed=1 WHERE payment_id=? AND state=? AND reversed=0",
                    (reversal.payment_id, PaymentState.APPROVED.value),
                )
                if cur.rowcount != 1:
                    raise JournalError("reversal of a payment that is not approved or reversed")
            if task is not None:
                self._insert_task(conn, task)

        await self._submit(op)
        if reversal.payment_id is None:
            k = reversal.key
            self._tombstones.add((k.acquirer, k.rrn, k.settlement_mmdd))

    # -- the resolver's work ---------------------------------------------------------------

    async def due_tasks(self, now: datetime, limit: int = 100) -> list[ResolverTask]:
        rows = await self._read(
            f"{_SELECT_TASK} WHERE done_at IS NULL AND next_at <= ? ORDER BY next_at LIMIT ?",
            (c.ts(now), limit),
        )
        return [c.task_from_row(r) for r in rows]

    async def open_tasks(self) -> Sequence[ResolverTask]:
        rows = await self._read(f"{_SELECT_TASK} WHERE done_at IS NULL ORDER BY next_at", ())
        return [c.task_from_row(r) for r in rows]

    async def reschedule_task(self, task: ResolverTask) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET attempts=?, next_at=?, detail=? WHERE task_id=?",
                (task.attempts, c.ts(task.next_at), c.task_params(task)[7], task.task_id),
            )

        await self._submit(op)

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

        await self._submit(op)

    async def recover(self, now: datetime, not_before_final: datetime) -> list[PaymentRecord]:
        def op(conn: sqlite3.Connection) -> list[PaymentRecord]:
            rows = conn.execute(
                f"{_SELECT_PAYMENT} WHERE state=? ORDER BY seq", (PaymentState.POSTING.value,)
            ).fetchall()
            out = []
            for row in rows:
                rec = c.payment_from_row(row)
                rec.state = PaymentState.UNCERTAIN
                rec.response_code = rc.UNAVAILABLE
                rec.answered_at = now
                conn.execute(
                    "UPDATE payments SET state=?, response_code=?, answered_at=? "
                    "WHERE payment_id=?",
                    (rec.state.value, rec.response_code, c.ts(now), rec.payment_id),
                )
                self._insert_task(
                    conn,
                    ResolverTask(
                        0,
                        TaskKind.RESOLVE,
                        rec.payment_id,
                        rec.biller,
                        0,
                        now,
                        now,
                        not_before_final,
                    ),
                )
                out.append(rec)
            return out

        result: list[PaymentRecord] = await self._submit(op)
        return result

    # -- what batch billers and reports read -------------------------------------------------

    async def approved_payments(self, biller: str, settlement_date: date) -> list[PaymentRecord]:
        rows = await self._read(
            f"{_SELECT_PAYMENT} WHERE biller=? AND settlement_date=? AND state=? ORDER BY seq",
            (biller, c.day(settlement_date), PaymentState.APPROVED.value),
        )
        return [c.payment_from_row(r) for r in rows]

    async def reversals_booked(self, biller: str, booked_on: date) -> list[ReversalRecord]:
        rows = await self._read(
            f"{_SELECT_REVERSAL} WHERE biller=? AND booked_on=? AND response_code='00' "
            "ORDER BY seq",
            (biller, c.day(booked_on)),
        )
        return [c.reversal_from_row(r) for r in rows]

    async def held_payments(self, biller: str) -> list[PaymentRecord]:
        rows = await self._read(
            f"{_SELECT_PAYMENT} WHERE biller=? AND state=? AND reversed=0 ORDER BY seq",
            (biller, PaymentState.APPROVED.value),
        )
        return [c.payment_from_row(r) for r in rows]

    async def payments(self, *, biller: str | None = None) -> list[PaymentRecord]:
        """Every payment (optionally of one biller), oldest first: for tests and reports."""
        if biller is None:
            rows = await self._read(f"{_SELECT_PAYMENT} ORDER BY seq", ())
        else:
            rows = await self._read(f"{_SELECT_PAYMENT} WHERE biller=? ORDER BY seq", (biller,))
        return [c.payment_from_row(r) for r in rows]

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def op(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        rows: list[tuple[Any, ...]] = await self._submit(op)
        return rows


class SqliteSettlementStore:
    """The clearing side of the journal (:class:`~billhub.settlement.ports.SettlementStore`),
    on the same file and the same writer as :class:`SqliteJournal`."""

    def __init__(self, journal: SqliteJournal) -> None:
        self.j = journal

    async def day_totals(self, biller: str, settlement_date: date) -> Totals:
        d = c.day(settlement_date)
        pay = await self.j._read(
            "SELECT count(*), coalesce(sum(amount), 0) FROM payments "
            "WHERE biller=? AND settlement_date=? AND state=?",
            (biller, d, PaymentState.APPROVED.value),
        )
        rev = await self.j._read(
            "SELECT count(*), coalesce(sum(amount), 0) FROM reversals "
            "WHERE biller=? AND settlement_date=? AND response_code='00'",
            (biller, d),
        )
        return Totals(int(pay[0][0]), int(pay[0][1]), int(rev[0][0]), int(rev[0][1]))

    async def latest_cutover(self) -> CutoverRecord | None:
        rows = await self.j._read(
            "SELECT new_date, previous_date, closed_dates, state, requested_at, closed_at "
            "FROM cutovers ORDER BY new_date DESC LIMIT 1",
            (),
        )
        if not rows:
            return None
        r = rows[0]
        new = c.parse_day(r[0])
        requested = c.parse_ts(r[4])
        assert new is not None and requested is not None
        return CutoverRecord(
            new_date=new,
            previous_date=c.parse_day(r[1]),
            closed_dates=[date.fromisoformat(x) for x in json.loads(r[2])],
            state=r[3],
            requested_at=requested,
            closed_at=c.parse_ts(r[5]),
        )

    async def begin_cutover(self, record: CutoverRecord) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cutovers (new_date, previous_date, closed_dates, state, "
                "requested_at, closed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (new_date) "
                "DO NOTHING",
                (
                    c.day(record.new_date),
                    c.day(record.previous_date),
                    json.dumps([d.isoformat() for d in record.closed_dates]),
                    record.state,
                    c.ts(record.requested_at),
                    c.ts(record.closed_at),
                ),
            )

        await self.j._submit(op)

    async def finish_cutover(self, new_date: date, closed_at: datetime) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE cutovers SET state='closed', closed_at=? WHERE new_date=?",
                (c.ts(closed_at), c.day(new_date)),
            )

        await self.j._submit(op)

    async def dates_with_activity(self, before: date) -> list[date]:
        rows = await self.j._read(
            "SELECT settlement_date FROM payments WHERE settlement_date < ? "
            "UNION SELECT settlement_date FROM reversals WHERE settlement_date < ? "
            "ORDER BY 1",
            (c.day(before), c.day(before)),
        )
        return [date.fromisoformat(r[0]) for r in rows]

    async def record_payments_file(
        self, biller: str, settlement_date: date, path: str, written_at: datetime
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO payments_files VALUES (?, ?, ?, ?) ON CONFLICT (biller, "
                "settlement_date) DO UPDATE SET path=excluded.path, written_at=excluded.written_at",
                (biller, c.day(settlement_date), path, c.ts(written_at)),
            )

        await self.j._submit(op)

    async def record_reconciliation(
        self, reconciliation: Reconciliation, findings: list[Finding], at: datetime
    ) -> None:
        r = reconciliation

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO reconciliations (biller, settlement_date, switch_count, "
                "switch_amount, switch_reversal_count, switch_reversal_amount, hub_count, "
                "hub_amount, hub_reversal_count, hub_reversal_amount, response_code, "
                "answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.biller,
                    c.day(r.settlement_date),
                    r.switch.count,
                    r.switch.amount,
                    r.switch.reversal_count,
                    r.switch.reversal_amount,
                    r.hub.count,
                    r.hub.amount,
                    r.hub.reversal_count,
                    r.hub.reversal_amount,
                    r.response_code,
                    c.ts(r.answered_at),
                ),
            )
            _insert_findings(conn, findings, at)

        await self.j._submit(op)

    async def reconciliations(self, settlement_date: date) -> list[Reconciliation]:
        rows = await self.j._read(
            "SELECT biller, settlement_date, switch_count, switch_amount, "
            "switch_reversal_count, switch_reversal_amount, hub_count, hub_amount, "
            "hub_reversal_count, hub_reversal_amount, response_code, answered_at "
            "FROM reconciliations WHERE settlement_date=? ORDER BY seq",
            (c.day(settlement_date),),
        )
        out = []
        for r in rows:
            answered = c.parse_ts(r[11])
            assert answered is not None
            out.append(
                Reconciliation(
                    biller=r[0],
                    settlement_date=date.fromisoformat(r[1]),
                    switch=Totals(int(r[2]), int(r[3]), int(r[4]), int(r[5])),
                    hub=Totals(int(r[6]), int(r[7]), int(r[8]), int(r[9])),
                    response_code=r[10],
                    answered_at=answered,
                )
            )
        return out

    async def first_reconciled_at(self, biller: str, settlement_date: date) -> datetime | None:
        rows = await self.j._read(
            "SELECT min(answered_at) FROM reconciliations WHERE biller=? AND settlement_date=?",
            (biller, c.day(settlement_date)),
        )
        return c.parse_ts(rows[0][0]) if rows and rows[0][0] else None

    async def findings(self, settlement_date: date) -> list[Finding]:
        rows = await self.j._read(
            "SELECT kind, settlement_date, biller, detail, hub, switch, acquirer, rrn, source "
            "FROM findings WHERE settlement_date=? ORDER BY seq",
            (c.day(settlement_date),),
        )
        return [
            Finding(
                kind=FindingKind(r[0]),
                settlement_date=date.fromisoformat(r[1]),
                biller=r[2],
                detail=r[3],
                hub=r[4],
                switch=r[5],
                acquirer=r[6],
                rrn=r[7],
                source=r[8],
            )
            for r in rows
        ]

    async def record_import(self, outcome: ImportOutcome, at: datetime) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO settlement_imports VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (sha256) DO NOTHING",
                (outcome.sha256, outcome.file_name, outcome.lines, outcome.matched, c.ts(at)),
            )
            if cur.rowcount != 1:
                return False
            _insert_findings(conn, outcome.findings, at)
            return True

        done: bool = await self.j._submit(op)
        return done

    async def imported(self, sha256: str) -> bool:
        rows = await self.j._read("SELECT 1 FROM settlement_imports WHERE sha256=?", (sha256,))
        return bool(rows)

    async def payments_on(self, settlement_date: date) -> list[PaymentRecord]:
        rows = await self.j._read(
            f"{_SELECT_PAYMENT} WHERE settlement_date=? ORDER BY seq", (c.day(settlement_date),)
        )
        return [c.payment_from_row(r) for r in rows]

    async def reversals_on(self, settlement_date: date) -> list[ReversalRecord]:
        rows = await self.j._read(
            f"{_SELECT_REVERSAL} WHERE settlement_date=? ORDER BY seq", (c.day(settlement_date),)
        )
        return [c.reversal_from_row(r) for r in rows]

    async def open_uncertain(self) -> list[PaymentRecord]:
        rows = await self.j._read(
            f"{_SELECT_PAYMENT} WHERE state=? AND resolution IS NULL ORDER BY seq",
            (PaymentState.UNCERTAIN.value,),
        )
        return [c.payment_from_row(r) for r in rows]


def _update_answer(conn: sqlite3.Connection, record: PaymentRecord) -> int:
    """Write a payment's answer fields and state; returns the rows changed (0 or 1)."""
    cur = conn.execute(
        "UPDATE payments SET state=?, response_code=?, approval_code=?, answer_de48=?, "
        "receipt=?, customer_name=?, answered_at=?, reversed=?, resolution=? "
        "WHERE payment_id=?",
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


def _insert_findings(conn: sqlite3.Connection, findings: list[Finding], at: datetime) -> None:
    for f in findings:
        conn.execute(
            "INSERT INTO findings (kind, settlement_date, biller, acquirer, rrn, hub, switch, "
            "detail, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f.kind.value,
                c.day(f.settlement_date),
                f.biller,
                f.acquirer,
                f.rrn,
                f.hub,
                f.switch,
                f.detail,
                f.source,
                c.ts(at),
            ),
        )
