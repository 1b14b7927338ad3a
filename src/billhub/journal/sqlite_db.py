"""One SQLite file, one writer thread, group commit: the engine under billhub's SQLite stores.

All access goes through one thread that owns the connection. Writes are queued
and the writer takes everything queued at once into one transaction, then
commits once: group commit. A write's future resolves only after that commit
returned, so a caller that awaits it before answering `00` has its payment on
disk first. No artificial delay is added: batches form by themselves while the
previous commit is syncing.

A database that cannot write (disk full, I/O error, a lock held by another
process, a read-only file) is reported to the ``health`` observer with the
reason, once per failed batch, and as recovered when a write commits again;
while it is failing and idle, a probe write every few seconds finds out when
it can write again. The WAL is kept bounded while it runs (see
:class:`_Checkpointer`).

Opened ``read_only``, nothing is created, migrated or written (the operators'
commands beside a running hub): the file is opened ``mode=ro`` and a schema
newer than this code is still refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from billhub.db.sqlite import Migration, migrate, rollback
from billhub.errors import JournalError, SchemaTooNew
from billhub.journal.codec import Row
from billhub.journal.diagnose import open_failure

Op = Callable[[sqlite3.Connection], Any]

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


class SqliteDatabase:
    """The writer, the checkpointer and the health reports of one SQLite file."""

    def __init__(
        self,
        path: Path | str,
        migrations: Sequence[Migration],
        *,
        on_commit: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] | None = None,
        health: WriteHealth | None = None,
        wal_limit: int = WAL_LIMIT_BYTES,
        read_only: bool = False,
        version_table: str = "schema_version",
    ) -> None:
        self.path = Path(path)
        self._version_table = version_table
        self._migrations = migrations
        self._health = health
        self._wal_limit = wal_limit
        self._read_only = read_only
        self._failing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._queue: list[tuple[Op, asyncio.Future[Any]]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_commit = on_commit
        self._clock = clock
        self.stats = CommitStats()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def open(self, loaded: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Open (create and migrate unless read-only) the file; ``loaded(conn)`` then reads
        what its owner keeps in memory, on the writer's thread before any write."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open_sync, loaded)
        # Only an open database takes work: after a failed open, submit refuses it
        # (JournalError) instead of queueing them for a writer that never runs.
        self._loop = loop
        self._wake = asyncio.Event()
        self._writer = self._loop.create_task(self._write_loop(), name="journal-writer")

    def _open_sync(self, loaded: Callable[[sqlite3.Connection], None] | None) -> None:
        conn: sqlite3.Connection | None = None
        try:
            if self._read_only:
                conn = self._connect_read_only()
                if loaded is not None:
                    loaded(conn)
                self._conn = conn
                return
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
            migrate(
                conn,
                self._migrations,
                datetime.now(UTC).isoformat(timespec="seconds"),
                self._version_table,
            )
            if loaded is not None:
                loaded(conn)
        except (sqlite3.Error, OSError, SchemaTooNew) as exc:
            if conn is not None:
                conn.close()
            raise JournalError(open_failure(self.path, exc)) from None
        self._conn = conn
        self._checkpointer = _Checkpointer(
            self.path, lambda: self.stats.commits, limit=self._wal_limit
        )
        self._checkpointer.start()

    def _connect_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise OSError(f"no journal at {self.path}")
        conn = sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            row = conn.execute(f"SELECT max(version) FROM {self._version_table}").fetchone()
            known = self._migrations[-1][0] if self._migrations else 0
            if int(row[0] or 0) > known:
                raise SchemaTooNew(int(row[0]), known)
        except BaseException:
            conn.close()
            raise
        return conn

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
            if not self._read_only:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    # -- the writer --------------------------------------------------------------------

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op(conn)`` for the next group commit; the future has its result."""
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
        probed = any(op is SqliteDatabase._probe for op, _ in batch)
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
        :func:`~billhub.db.sqlite.rollback`).
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

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """:meth:`read`, as the shared SQL stores ask it."""
        return list(await self.read(sql, params))

    async def run(
        self, statements: Sequence[tuple[str, tuple[Any, ...]]], *, guarded: bool = False
    ) -> list[int]:
        """Run statements in one group commit; the rows each changed. ``guarded``: stop
        after the first if it changed nothing."""

        def op(conn: sqlite3.Connection) -> list[int]:
            changed: list[int] = []
            for sql, params in statements:
                changed.append(int(conn.execute(sql, params).rowcount))
                if guarded and changed[0] == 0:
                    break
            return changed

        result: list[int] = await self.submit(op)
        return result

    async def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query, run on the writer's thread between commits."""

        def op(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        rows: list[tuple[Any, ...]] = await self.submit(op)
        return rows
