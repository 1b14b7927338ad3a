"""What the database connector needs from a server's driver, and how drivers fail.

An :class:`Engine` lends one pooled connection inside one transaction at a time
(:meth:`Engine.transaction`); its :class:`Session` runs translated statements. Two
engines implement it: :mod:`.pg` (asyncpg) and :mod:`.mysql` (aiomysql).

Every driver error becomes an :class:`EngineFault` of one ``kind``, because the
connector answers by kind, not by driver:

``connection``  the server or the way to it failed (refused, reset, killed,
                restarting): "biller unavailable", and the pool reconnects
``auth``        wrong password, unknown user or database: a configuration fault
``conflict``    a unique key taken meanwhile, a deadlock, a serialization failure:
                the transaction is redone from the start
``sql``         the biller's SQL or schema does not fit (a missing table, a
                syntax error, a broken constraint): a fault of the set-up

A transaction whose body raises is rolled back, and a connection whose state is
unknown (cancelled mid-statement, a failed rollback, a lost connection) is closed
rather than lent again. Fault messages are short and fixed: no SQL values (they
hold account numbers), no DSN.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

from billhub.connectors.database.sql import Statement

__all__ = ["Engine", "EngineFault", "FaultKind", "Row", "Session"]

FaultKind = Literal["connection", "auth", "conflict", "sql"]
Row = dict[str, object]


class EngineFault(Exception):
    """A driver error, by the kind the connector answers it with."""

    def __init__(self, kind: FaultKind, reason: str, *, before_work: bool = False) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind: FaultKind = kind
        self.reason = reason
        #: True when nothing of the transaction reached the server (the connection failed
        #: while it was lent or began): trying again on a new connection is harmless.
        self.before_work = before_work


class Session(Protocol):
    """One connection inside one transaction."""

    async def rows(self, statement: Statement, params: Mapping[str, object]) -> list[Row]:
        """The rows a query returns, as column name -> value."""
        ...

    async def execute(self, statement: Statement, params: Mapping[str, object]) -> int:
        """Run a statement that changes rows; returns how many it matched."""
        ...


class Engine(Protocol):
    """A pool of connections to one biller database."""

    def transaction(self, *, read_only: bool = False) -> AbstractAsyncContextManager[Session]:
        """A session in a new transaction: committed when the block ends, rolled back
        when it raises. ``read_only`` (one query that changes nothing) lets an engine
        skip the transaction's own round trips. Raises :class:`EngineFault` for driver
        errors."""
        ...

    async def close(self) -> None:
        """Close every connection; idempotent."""
        ...
