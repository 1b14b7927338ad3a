"""Reading and locking a test's biller database with the drivers themselves (not the
connector under test), on either server: what a test checks in the company's tables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiomysql
import asyncpg


def is_pg(dsn: str) -> bool:
    return dsn.startswith("postgresql")


def dbname(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def _mysql(dsn: str) -> Any:
    u = urlsplit(dsn)
    return await aiomysql.connect(
        host=u.hostname, port=u.port or 3306, user=u.username, password="",
        db=dbname(dsn), autocommit=True, charset="utf8mb4",
    )  # fmt: skip


async def fetch(dsn: str, sql: str) -> list[dict[str, Any]]:
    """Rows of ``sql`` (no parameters: tests write trusted literals)."""
    if is_pg(dsn):
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r.items()) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    conn = await _mysql(dsn)
    try:
        async with conn.cursor(aiomysql.DictCursor) as cur:
            await cur.execute(sql)
            return list(await cur.fetchall())
    finally:
        conn.close()


class Holder:
    """A connection of the test's own holding a row lock, and the server's id of it."""

    def __init__(self, dsn: str, conn: Any) -> None:
        self.dsn = dsn
        self.conn = conn

    async def waiting_backends(self) -> list[int]:
        """Ids of the other sessions of this test's database that wait for a lock."""
        db = dbname(self.dsn)
        if is_pg(self.dsn):
            rows = await fetch(
                self.dsn,
                "SELECT pid FROM pg_stat_activity WHERE datname = "
                f"'{db}' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            )
            return [int(r["pid"]) for r in rows]
        # A row-lock wait shows as a statement still running ("Updating") in this database.
        rows = await fetch(
            self.dsn,
            "SELECT id FROM information_schema.processlist WHERE db = "
            f"'{db}' AND command = 'Query' AND info LIKE 'UPDATE bills%' AND id <> connection_id()",
        )
        return [int(r["id"]) for r in rows]

    async def wait_for_waiter(self) -> int:
        """The session that waits for the held lock, once it does (a minute at most)."""
        for _ in range(3000):
            waiting = await self.waiting_backends()
            if waiting:
                return waiting[0]
            await asyncio.sleep(0.02)
        raise AssertionError("no session waited for the lock")

    async def idle_backends(self) -> list[int]:
        """Ids of the other sessions of this test's database (the pool's idle ones)."""
        db = dbname(self.dsn)
        if is_pg(self.dsn):
            sql = f"SELECT pid AS id FROM pg_stat_activity WHERE datname = '{db}'"
            sql += " AND pid <> pg_backend_pid()"
        else:
            sql = f"SELECT id FROM information_schema.processlist WHERE db = '{db}'"
            sql += " AND id <> connection_id()"
        return [int(r["id"]) for r in await fetch(self.dsn, sql)]

    async def kill(self, backend: int) -> None:
        """End one session of this test's own database, waiting or idle."""
        assert backend in await self.idle_backends()
        if is_pg(self.dsn):
            await fetch(self.dsn, f"SELECT pg_terminate_backend({backend})")
        else:
            await fetch(self.dsn, f"KILL {backend}")

    async def terminate(self, backend: int) -> None:
        """End one session of this test's own database (never another's)."""
        assert backend in await self.waiting_backends()
        if is_pg(self.dsn):
            await fetch(self.dsn, f"SELECT pg_terminate_backend({backend})")
        else:
            await fetch(self.dsn, f"KILL {backend}")


def observer(dsn: str) -> Holder:
    """A :class:`Holder` that holds nothing: to see and end the connector's sessions."""
    return Holder(dsn, None)


@asynccontextmanager
async def row_locked(dsn: str, bill_id: str) -> AsyncIterator[Holder]:
    """Hold ``bills`` row ``bill_id`` locked (SELECT ... FOR UPDATE) until the block ends."""
    sql = f"SELECT bill_id FROM bills WHERE bill_id = '{bill_id}' FOR UPDATE"
    if is_pg(dsn):
        conn = await asyncpg.connect(dsn)
        tr = conn.transaction()
        await tr.start()
        await conn.fetch(sql)
        try:
            yield Holder(dsn, conn)
        finally:
            await tr.rollback()
            await conn.close()
        return
    conn = await _mysql(dsn)
    await conn.begin()
    async with conn.cursor() as cur:
        await cur.execute(sql)
    try:
        yield Holder(dsn, conn)
    finally:
        await conn.rollback()
        conn.close()
