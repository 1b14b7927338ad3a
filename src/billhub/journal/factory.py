"""The one place that turns ``[journal]`` into journal ports.

Everything else (the hub, clearing, the operators' commands, later the web
service) asks :func:`build_journal` (and :func:`build_request_store`) and names
only the ports it gets back:
:class:`~billhub.pipeline.ports.Journal` for the pipeline and the resolver,
:class:`~billhub.settlement.ports.SettlementStore` for clearing,
:class:`~billhub.pipeline.ports.JournalReader` for the operators,
:class:`~billhub.pipeline.ports.BillsStore` for the batch billers. Adding a
journal kind is a new adapter and a branch here, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from billhub.config import JournalConfig
from billhub.errors import ConfigError
from billhub.journal.bills import PgBillsStore, SqliteBillsStore
from billhub.journal.pg_db import PgDatabase
from billhub.journal.postgres import PgJournal
from billhub.journal.requests_schema import PG_MIGRATIONS, SQLITE_MIGRATIONS, VERSION_TABLE
from billhub.journal.requests_sql import SqlRequestStore
from billhub.journal.settlement_sql import SqlSettlementStore
from billhub.journal.sqlite import SqliteJournal
from billhub.journal.sqlite_db import SqliteDatabase, WriteHealth
from billhub.pipeline.ports import BillsStore, Journal, JournalReader
from billhub.requests.ports import RequestStore
from billhub.settlement.ports import SettlementStore


@dataclass
class JournalSet:
    """The journal ports of one ``[journal]``, opened and closed together."""

    journal: Journal
    settlement: SettlementStore
    reader: JournalReader
    bills: BillsStore
    #: Where the journal is, for logs and messages (a path, never a DSN).
    where: str
    _owner: Any

    async def open(self) -> None:
        await self._owner.open()

    async def close(self) -> None:
        await self._owner.close()


def describe(config: JournalConfig) -> str:
    """How the journal is named in logs and messages: its path, never a DSN (a secret)."""
    return str(config.path) if config.kind == "sqlite" else f"{config.kind} journal"


def build_journal(
    config: JournalConfig,
    *,
    read_only: bool = False,
    health: WriteHealth | None = None,
    on_commit: Callable[[int, float], None] | None = None,
    clock: Callable[[], float] | None = None,
    instance: str | None = None,
) -> JournalSet:
    """The journal ports of ``config``, not yet open.

    ``read_only``: for commands that only read (reports, ``journal show``): nothing
    is created or migrated, and a missing journal is an error when opened.
    ``health``, ``on_commit`` and ``clock`` are the observability hooks;
    ``instance`` names this hub among those sharing the journal (made up if None).
    """
    if config.kind == "sqlite":
        if config.path is None:
            raise ConfigError("journal.path", "is required for the SQLite journal")
        journal = SqliteJournal(
            config.path,
            read_only=read_only,
            health=health,
            on_commit=on_commit,
            clock=clock,
            instance=instance or "",
        )
        bills = SqliteBillsStore(journal.db, journal.next_seq)
        return JournalSet(
            journal, SqlSettlementStore(journal.db), journal, bills, describe(config), journal
        )
    if config.kind == "postgresql":
        if config.dsn is None:
            raise ConfigError("journal.dsn", "is required for the PostgreSQL journal")
        pg = PgJournal(
            config.dsn,
            instance=instance,
            health=health,
            on_commit=on_commit,
            clock=clock,
            read_only=read_only,
            lease_s=config.lease_s,
            claim_s=config.claim_s,
        )
        return JournalSet(
            pg, SqlSettlementStore(pg.db), pg, PgBillsStore(pg.db), describe(config), pg
        )
    raise ConfigError("journal.kind", f'the "{config.kind}" journal is not available')


def build_request_store(config: JournalConfig) -> RequestStore:
    """The citizen requests' store in the database of ``config``, not yet open.

    Its own engine (a writer of its own, its own versions) on the journal's file or
    server, so the web service and the hub each migrate and write their tables.
    """
    if config.kind == "sqlite":
        if config.path is None:
            raise ConfigError("journal.path", "is required for the SQLite journal")
        return SqlRequestStore(
            SqliteDatabase(config.path, SQLITE_MIGRATIONS, version_table=VERSION_TABLE)
        )
    if config.kind == "postgresql":
        if config.dsn is None:
            raise ConfigError("journal.dsn", "is required for the PostgreSQL journal")
        return SqlRequestStore(
            PgDatabase(
                config.dsn,
                PG_MIGRATIONS,
                version_table=VERSION_TABLE,
                register=False,
                writers=2,
                pool_size=6,
            )
        )
    raise ConfigError("journal.kind", f'the "{config.kind}" journal is not available')
