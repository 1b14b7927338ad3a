"""The PostgreSQL engine of the database connector: an asyncpg pool.

The pool opens connections on demand (none at start, so a biller whose server is
down does not stop the hub) up to ``max_size``, the biller's concurrency bound, and
replaces a connection the server closed (``pg_terminate_backend``, a restart) on the
next call. Statements are prepared once per connection (asyncpg's statement cache).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import asyncpg.pool

from billhub.connectors.database.dsn import Dsn
from billhub.connectors.database.engine import EngineFault, Row
from billhub.connectors.database.sql import Statement

if TYPE_CHECKING:
    _Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
else:
    _Conn = asyncpg.pool.PoolConnectionProxy

__all__ = ["PgEngine"]

_AUTH = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.InvalidCatalogNameError,
)
_CONFLICT = (
    asyncpg.exceptions.UniqueViolationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
_CONNECTION = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    # A connection the server ended while it sat idle in the pool can surface as a
    # protocol-state error on its next use.
    asyncpg.exceptions.InternalClientError,
)
_DRIVER = (asyncpg.exceptions.PostgresError, *_CONNECTION)


def fault(exc: BaseException, *, before_work: bool = False) -> EngineFault:
    """The kind of an asyncpg (or socket) error; the reason is its class and SQLSTATE."""
    name = type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    reason = f"{name} ({state})" if state else name
    if isinstance(exc, _AUTH):
        return EngineFault("auth", reason, before_work=before_work)
    if isinstance(exc, _CONFLICT):
        return EngineFault("conflict", reason, before_work=before_work)
    if isinstance(exc, _CONNECTION):
        return EngineFault("connection", reason, before_work=before_work)
    return EngineFault("sql", reason, before_work=before_work)


class _PgSession:
    def __init__(self, conn: _Conn) -> None:
        self._conn = conn

    async def rows(self, statement: Statement, params: Mapping[str, object]) -> list[Row]:
        records = await self._conn.fetch(statement.text, *statement.args(dict(params)))
        return [dict(r.items()) for r in records]

    async def execute(self, statement: Statement, params: Mapping[str, object]) -> int:
        status = await self._conn.execute(statement.text, *statement.args(dict(params)))
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0


class PgEngine:
    """A pool of up to ``max_size`` connections; ``connect_timeout`` bounds each connect."""

    def __init__(self, dsn: Dsn, *, max_size: int, connect_timeout: float) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._closed:
                raise EngineFault("connection", "engine closed")
            if self._pool is None:
                pool: Any = asyncpg.create_pool(
                    self._dsn.text,
                    min_size=0,  # nothing at start: a server down must not stop the hub
                    max_size=self._max_size,
                    timeout=self._connect_timeout,
                    max_inactive_connection_lifetime=60.0,
                )
                self._pool = await pool
            assert self._pool is not None
            return self._pool

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[_PgSession]:
        try:
            pool = await self._get_pool()
            conn: _Conn = await pool.acquire()
        except _DRIVER as exc:
            raise fault(exc, before_work=True) from None
        if read_only:  # one statement: its own implicit transaction, no BEGIN/COMMIT trips
            try:
                try:
                    yield _PgSession(conn)
                except BaseException as exc:
                    if not isinstance(exc, Exception) or isinstance(exc, _CONNECTION):
                        conn.terminate()
                    raise
            except _DRIVER as exc:
                raise fault(exc) from None
            finally:
                await pool.release(conn)
            return
        try:
            try:
                tr = conn.transaction()
                await tr.start()
            except _DRIVER as exc:
                conn.terminate()
                raise fault(exc, before_work=True) from None
            try:
                yield _PgSession(conn)
            except Exception:
                await _rollback(conn, tr)
                raise
            except BaseException:  # cancelled mid-statement: the connection's state is unknown
                conn.terminate()
                raise
            try:
                await tr.commit()
            except _DRIVER as exc:
                conn.terminate()
                raise fault(exc) from None
        except _DRIVER as exc:  # a statement failed inside the block
            raise fault(exc) from None
        finally:
            await pool.release(conn)

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._connect_timeout)
            except (TimeoutError, *_DRIVER):
                pool.terminate()


async def _rollback(conn: _Conn, tr: Any) -> None:
    if conn.is_closed():
        return
    try:
        await tr.rollback()
    except _DRIVER:
        conn.terminate()
