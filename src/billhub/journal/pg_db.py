"""The PostgreSQL engine under the journal: a pool, group commit, migrations, heartbeats.

Writes are queued and taken by a few writer tasks, each running everything it
took in one transaction on one pooled connection (group commit: concurrent
payments share a commit, and the server's WAL flush with it). A write's future
resolves only after its COMMIT returned. An op that fails rolls its group back;
the group is then redone op by op, so one bad op fails alone. Reads go to the
pool directly.

A lost connection, a server that is down or restarting, a full disk or a
read-only standby all make writes fail; they are reported to the ``health``
observer with the reason (``connection``, ``disk_full``, ``read_only``...) and as
recovered once a write commits again. The pool opens new connections by itself
when the server is back; nothing needs a restart.

Several hub instances share one database. Each registers itself in
``instances`` and beats there every ``heartbeat_s``; one whose beat is older
than ``lease_s`` (or that stopped) is *gone*, and its unfinished work may be
taken over by the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import asyncpg.pool

from billhub.db.sqlite import Migration
from billhub.errors import JournalError, SchemaTooNew
from billhub.journal.codec import Row
from billhub.journal.sqlite_db import WriteHealth

if TYPE_CHECKING:
    #: A connection as the pool lends it (what an op runs on).
    PgConn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
else:
    PgConn = asyncpg.pool.PoolConnectionProxy
PgOp = Callable[[PgConn], Awaitable[Any]]

_MAX_BATCH = 256
#: What the driver raises when the database or the way to it fails. Its
#: ``InternalClientError`` is not an ``InterfaceError``: a connection the server
#: terminated mid-statement (a failover, ``pg_terminate_backend``) can leave the
#: client's protocol half-way, and the next statement on it raises "another
#: operation is in progress". Left out, it escaped a read as no ``JournalError``
#: and ended the resolver's loop, so held `96` payments the biller had posted
#: were never cancelled.
_DRIVER_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    TimeoutError,
)
#: A lock id only billhub's migrations take (two instances starting at once).
_MIGRATION_LOCK = 0x6B696C6C68756201


def write_failure(exc: BaseException) -> str:
    """Why a PostgreSQL write failed, as operators name it."""
    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        return "disk_full"
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return "read_only"
    if isinstance(
        exc, asyncpg.exceptions.DeadlockDetectedError | asyncpg.exceptions.LockNotAvailableError
    ):
        return "locked"
    if isinstance(
        exc,
        OSError
        | asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.CrashShutdownError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.TooManyConnectionsError
        | TimeoutError,
    ):
        return "connection"
    if isinstance(exc, asyncpg.exceptions.InternalClientError) and not isinstance(
        exc, asyncpg.exceptions.OutdatedSchemaCacheError
    ):
        return "connection"  # a protocol left half-way by a connection cut mid-statement
    if isinstance(
        exc, asyncpg.exceptions.DataCorruptedError | asyncpg.exceptions.IndexCorruptedError
    ):
        return "corrupt"
    if isinstance(
        exc, asyncpg.exceptions.PostgresSystemError | asyncpg.exceptions.InsufficientResourcesError
    ):
        return "io_error"
    return "other"


def _is_fault(exc: BaseException) -> bool:
    """A failure of the database or the way to it, not of one op (a constraint, a bug)."""
    return write_failure(exc) != "other"


def new_instance_id() -> str:
    """This process's name among the hub instances: host, pid and a random part."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class PgDatabase:
    """One PostgreSQL database as billhub's journal sees it."""

    def __init__(
        self,
        dsn: str,
        migrations: Sequence[Migration],
        *,
        instance: str | None = None,
        health: WriteHealth | None = None,
        on_commit: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
        writers: int = 4,
        pool_size: int = 12,
        lease_s: float = 10.0,
        heartbeat_s: float = 2.0,
        statement_timeout_s: float = 10.0,
        version_table: str = "schema_version",
        register: bool = True,
    ) -> None:
        self._dsn = dsn
        #: Stores sharing a database each keep their own versions (and migration lock).
        self._version_table = version_table
        self._migration_lock = _MIGRATION_LOCK + (0 if version_table == "schema_version" else 1)
        #: Only the journal's instances register and beat (another store just writes).
        self._register = register
        self._migrations = migrations
        self.instance = instance or new_instance_id()
        self._health = health
        self._on_commit = on_commit
        self._clock = clock
        self._read_only = read_only
        self._writers_n = writers
        self._pool_size = max(pool_size, writers + 2)
        self.lease_s = lease_s
        self._heartbeat_s = heartbeat_s
        self._timeout = statement_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._queue: list[tuple[PgOp, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._failing = False
        #: Since when (monotonic) the database has answered without a failure.
        self._up_since: float | None = None
        self.commits = 0

    # -- life cycle ------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate (unless read-only), register this instance, start the writers.

        Raises :class:`JournalError` naming ``journal.dsn`` (never the DSN itself).
        """
        pool: asyncpg.Pool | None = None
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                # No floor: asyncpg restores a floor by retrying in the background
                # while the server is down, logging a traceback each second. Connections
                # are kept between uses all the same, and opened again on demand.
                min_size=0,
                max_size=self._pool_size,
                command_timeout=self._timeout,
                timeout=self._timeout,
            )
            # With no floor nothing has connected yet: one connection now, so that a
            # server that cannot be reached, or refuses us, is named as such here.
            await pool.execute("SELECT 1")
            self._pool = pool
        except _DRIVER_ERRORS as exc:
            if pool is not None:
                await pool.close()
            raise JournalError(
                f"journal.dsn: cannot connect to the PostgreSQL journal: {_reason(exc)}"
            ) from None
        try:
            if self._read_only:
                await self._check_schema()
            else:
                await self._migrate()
            if not self._read_only and self._register:
                await self.execute(
                    "INSERT INTO instances (instance) VALUES ($1) ON CONFLICT (instance) "
                    "DO UPDATE SET heartbeat_at = now(), stopped_at = NULL",
                    self.instance,
                )
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._up_since = time.monotonic()
        if not self._read_only:
            loop = asyncio.get_running_loop()
            for i in range(self._writers_n):
                self._tasks.append(loop.create_task(self._write_loop(), name=f"journal-writer-{i}"))
            if self._register:
                self._tasks.append(loop.create_task(self._beat(), name="journal-heartbeat"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        writers = [t for t in self._tasks if t.get_name().startswith("journal-writer")]
        await asyncio.gather(*writers, return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            if not self._read_only and self._register:
                with contextlib.suppress(Exception):
                    await self._pool.execute(
                        "UPDATE instances SET stopped_at = now() WHERE instance = $1", self.instance
                    )
            await self._pool.close()
            self._pool = None

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            table = self._version_table
            await conn.execute("SELECT pg_advisory_lock($1)", self._migration_lock)
            try:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY, "
                    "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = {int(r[0]) for r in await conn.fetch(f"SELECT version FROM {table}")}
                known = self._migrations[-1][0] if self._migrations else 0
                if done and max(done) > known:
                    raise JournalError(f"journal.dsn: {SchemaTooNew(max(done), known)}")
                for version, description, statements in self._migrations:
                    if version in done:
                        continue
                    async with conn.transaction():
                        for sql in statements:
                            await conn.execute(sql)
                        await conn.execute(
                            f"INSERT INTO {table} (version, description) VALUES ($1, $2)",
                            version,
                            description,
                        )
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", self._migration_lock)

    async def _check_schema(self) -> None:
        try:
            version = await self.fetchval(f"SELECT max(version) FROM {self._version_table}")
        except JournalError:
            raise JournalError("journal.dsn: the database holds no billhub journal") from None
        known = self._migrations[-1][0] if self._migrations else 0
        if version is not None and int(version) > known:
            raise JournalError(f"journal.dsn: {SchemaTooNew(int(version), known)}")

    async def _beat(self) -> None:
        """Tell the other instances this one is alive; also how a failing journal finds
        out it can write again when nothing else is written."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                assert self._pool is not None
                await self._pool.execute(
                    "UPDATE instances SET heartbeat_at = now() WHERE instance = $1", self.instance
                )
            except Exception as exc:  # reported; the next beat tries again
                self._report_failure(exc)
            else:
                self._report_ok()
                if self._up_since is None:
                    self._up_since = time.monotonic()

    def check_open(self) -> None:
        """Raise :class:`JournalError` unless the journal is open (a call after close)."""
        self._ready()

    def answering_for(self) -> float:
        """How long the database has answered without a failure (0 while failing).

        After an outage every instance's heartbeat is old at once; until this
        instance has answered for a whole lease, the others have had the time to
        beat again, and only then may an old beat mean an instance is gone.
        """
        return 0.0 if self._up_since is None else time.monotonic() - self._up_since

    # -- reads and single statements ------------------------------------------------------

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._ready()
        try:
            rows: list[asyncpg.Record] = await pool.fetch(sql, *args)
            return rows
        except _DRIVER_ERRORS as exc:
            raise JournalError(f"journal read failed: {_reason(exc)}") from None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def execute(self, sql: str, *args: Any) -> str:
        pool = self._ready()
        try:
            status: str = await pool.execute(sql, *args)
            return status
        except _DRIVER_ERRORS as exc:
            raise JournalError(f"journal write failed: {_reason(exc)}") from None

    async def with_connection(self, op: PgOp) -> Any:
        """Run ``op(conn)`` on a pooled connection of its own, outside group commit
        (a read that needs one snapshot for several statements)."""
        pool = self._ready()
        try:
            async with pool.acquire() as conn:
                return await op(conn)
        except _DRIVER_ERRORS as exc:
            raise JournalError(f"journal read failed: {_reason(exc)}") from None

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """A query written with ``?`` placeholders (the SQL shared with SQLite)."""
        return list(await self.fetch(numbered(sql), *params))

    async def run(
        self, statements: Sequence[tuple[str, tuple[Any, ...]]], *, guarded: bool = False
    ) -> list[int]:
        """Statements with ``?`` placeholders in one group commit; the rows each changed.
        ``guarded``: stop after the first if it changed nothing."""
        prepared = [(numbered(sql), params) for sql, params in statements]

        async def op(conn: PgConn) -> list[int]:
            changed: list[int] = []
            for sql, params in prepared:
                changed.append(rows_changed(await conn.execute(sql, *params)))
                if guarded and changed[0] == 0:
                    break
            return changed

        result: list[int] = await self.submit(op)
        return result

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None or self._closed:
            raise JournalError("journal is not open")
        return self._pool

    # -- group commit ---------------------------------------------------------------------

    def submit(self, op: PgOp) -> asyncio.Future[Any]:
        """Queue ``op(conn)`` for the next group commit; the future has its result."""
        if self._closed or self._pool is None or self._read_only:
            raise JournalError("journal is not open for writing")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, fut))
        self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # A share of what is queued, not all of it: the ops of one group run one
            # after the other on one connection, so 64 payments taken by one writer
            # waited 64 round trips while the other writers sat idle.
            share = min(_MAX_BATCH, -(-len(self._queue) // self._writers_n))
            batch, self._queue = self._queue[:share], self._queue[share:]
            if self._queue:
                self._wake.set()  # another writer takes the rest meanwhile
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[tuple[PgOp, asyncio.Future[Any]]]) -> None:
        assert self._pool is not None
        started = self._clock() if self._clock else 0.0
        try:
            async with self._pool.acquire() as conn:
                try:
                    results = await self._run_group(conn, batch)
                except _OpFailed:
                    results = [await self._run_single(conn, op) for op, _ in batch]
                except _Locked:
                    # Two groups crossed on two keys (a deadlock the server broke):
                    # each op alone cannot cross another.
                    results = [await self._run_single(conn, op) for op, _ in batch]
        except Exception as exc:  # no connection, or the connection died mid-batch
            self._report_failure(exc)
            err = JournalError(f"journal write failed: {_reason(exc)}")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        faults = [v for ok, v in results if not ok and _is_fault(v.__cause__ or v)]
        if faults:
            self._report_failure(faults[0].__cause__ or faults[0])
        elif any(ok for ok, _ in results):
            self._report_ok()
        self.commits += 1
        if self._clock is not None and self._on_commit is not None:
            self._on_commit(len(batch), self._clock() - started)
        for (_, fut), (ok, value) in zip(batch, results, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    @staticmethod
    async def _run_group(
        conn: PgConn, batch: list[tuple[PgOp, asyncio.Future[Any]]]
    ) -> list[tuple[bool, Any]]:
        out: list[tuple[bool, Any]] = []
        async with conn.transaction():
            for op, _ in batch:
                try:
                    out.append((True, await op(conn)))
                except (asyncpg.PostgresError, JournalError) as exc:
                    if write_failure(exc) == "locked" and len(batch) > 1:
                        raise _Locked from exc
                    if _is_fault(exc):
                        raise  # the database's fault: the whole group fails
                    raise _OpFailed from exc
        return out

    @staticmethod
    async def _run_single(conn: PgConn, op: PgOp) -> tuple[bool, Any]:
        try:
            async with conn.transaction():
                value = await op(conn)
        except (asyncpg.PostgresError, JournalError) as exc:
            if _is_fault(exc):
                raise
            err = JournalError(str(exc))
            err.__cause__ = exc
            return False, err
        return True, value

    def _report_failure(self, exc: BaseException) -> None:
        self._failing = True
        self._up_since = None
        if self._health is not None:
            self._health.write_failed(write_failure(exc), _reason(exc))

    def _report_ok(self) -> None:
        if self._up_since is None:
            self._up_since = time.monotonic()
        if self._failing:
            self._failing = False
            if self._health is not None:
                self._health.write_ok()


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2...`` (none sit inside a literal here)."""
    out: list[str] = []
    n = 0
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    return "".join(out)


def rows_changed(status: str) -> int:
    """The row count of a command status (``UPDATE 1``, ``INSERT 0 1``, ``SELECT 3``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _OpFailed(Exception):
    """One op of a group raised: the group is redone op by op."""


class _Locked(Exception):
    """A group lost a deadlock: it is redone op by op."""


def _reason(exc: BaseException) -> str:
    """One line about a database failure: its class and message, never the DSN."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
