"""The MariaDB/MySQL engine of the database connector: an aiomysql pool.

As for PostgreSQL: connections on demand up to ``max_size`` (none at start), a
connection the server closed (``KILL``, a restart, ``wait_timeout``) is dropped and
replaced. Sessions run at READ COMMITTED, so that a conditional ``UPDATE`` sees what
a concurrent transaction committed and InnoDB takes no gap locks for reads. Values
go to PyMySQL as positional ``%s`` arguments (never formatted into the text), and an
aware datetime is sent as naive UTC, which is how a ``DATETIME`` column keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT

from billhub.connectors.database.dsn import Dsn
from billhub.connectors.database.engine import EngineFault, Row
from billhub.connectors.database.sql import Statement

__all__ = ["MysqlEngine"]

#: Access denied (user, database), unknown database.
_AUTH_CODES = frozenset({1044, 1045, 1049, 1698})
#: Duplicate key, deadlock, lock wait time-out.
_CONFLICT_CODES = frozenset({1062, 1213, 1205})
#: Too many connections, server shutdown, can't connect, gone away, lost, killed.
_CONNECTION_CODES = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055})
_DRIVER = (pymysql.err.Error, OSError, TimeoutError, asyncio.IncompleteReadError)


def fault(exc: BaseException, *, before_work: bool = False) -> EngineFault:
    """The kind of a PyMySQL (or socket) error; the reason is its class and error code."""
    code = exc.args[0] if isinstance(exc, pymysql.err.Error) and exc.args else None
    number = code if isinstance(code, int) else None
    name = type(exc).__name__
    reason = f"{name} ({number})" if number is not None else name
    if number in _AUTH_CODES:
        return EngineFault("auth", reason, before_work=before_work)
    if number in _CONFLICT_CODES:
        return EngineFault("conflict", reason, before_work=before_work)
    if (
        number in _CONNECTION_CODES
        or isinstance(
            exc, OSError | TimeoutError | asyncio.IncompleteReadError | pymysql.err.InterfaceError
        )
        or (isinstance(exc, pymysql.err.OperationalError) and number is not None and number >= 2000)
    ):
        return EngineFault("connection", reason, before_work=before_work)
    return EngineFault("sql", reason, before_work=before_work)


def _value(v: object) -> object:
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.astimezone(UTC).replace(tzinfo=None)
    return v


class _MysqlSession:
    def __init__(self, cursor: Any) -> None:
        self._cur = cursor

    async def rows(self, statement: Statement, params: Mapping[str, object]) -> list[Row]:
        args = tuple(_value(v) for v in statement.args(dict(params)))
        await self._cur.execute(statement.text, args)
        rows = await self._cur.fetchall()
        return [dict(r) for r in rows]

    async def execute(self, statement: Statement, params: Mapping[str, object]) -> int:
        args = tuple(_value(v) for v in statement.args(dict(params)))
        return int(await self._cur.execute(statement.text, args))


class MysqlEngine:
    """A pool of up to ``max_size`` connections; ``connect_timeout`` bounds each connect."""

    def __init__(self, dsn: Dsn, *, max_size: int, connect_timeout: float) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._closed:
                raise EngineFault("connection", "engine closed")
            if self._pool is None:
                d = self._dsn
                self._pool = await aiomysql.create_pool(
                    minsize=0,
                    maxsize=self._max_size,
                    host=d.host or "localhost",
                    port=d.port or 3306,
                    unix_socket=d.options.get("unix_socket"),
                    user=d.user,
                    password=d.password or "",
                    db=d.database,
                    charset="utf8mb4",
                    autocommit=False,
                    connect_timeout=max(1, round(self._connect_timeout)),
                    client_flag=CLIENT.FOUND_ROWS,  # "matched", not "changed", rows
                    init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                    pool_recycle=600,
                )
            return self._pool

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[_MysqlSession]:
        try:
            pool = await self._get_pool()
            conn = await pool.acquire()
        except _DRIVER as exc:
            raise fault(exc, before_work=True) from None
        try:
            try:
                await conn.begin()
                cursor = await conn.cursor(aiomysql.DictCursor)
            except _DRIVER as exc:
                conn.close()
                raise fault(exc, before_work=True) from None
            try:
                yield _MysqlSession(cursor)
            except Exception:
                await _rollback(conn)
                raise
            except BaseException:  # cancelled mid-statement: the connection's state is unknown
                conn.close()
                raise
            try:
                await conn.commit()
            except _DRIVER as exc:
                conn.close()
                raise fault(exc) from None
        except _DRIVER as exc:
            conn.close()
            raise fault(exc) from None
        finally:
            await pool.release(conn)

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            try:
                await asyncio.wait_for(pool.wait_closed(), self._connect_timeout)
            except TimeoutError:
                pool.terminate()


async def _rollback(conn: Any) -> None:
    if conn.closed:
        return
    try:
        await conn.rollback()
    except _DRIVER:
        conn.close()
