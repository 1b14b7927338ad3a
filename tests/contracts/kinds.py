"""The adapters each contract suite runs over: one line per kind in the tables below.

A *place* is where a journal keeps its records (a dictionary, a file, a database):
the suite opens journals on it, closes them and opens new ones on the same place
(a restart, another hub instance). A biller kind gives a started biller holding
the suite's accounts, the same for every kind.

Adding a kind is writing its maker and one line in :data:`JOURNAL_KINDS`,
:data:`SETTLEMENT_KINDS` or :data:`BILLER_KINDS` (the ``database`` connector
kind goes in the last).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import MemoryAccount, MemoryBiller
from tests.journal_records import T0
from tests.memjournal import MemoryJournal, MemoryStore

from billhub.config import (
    BatchSettings,
    BillerConfig,
    DatabaseSettings,
    JournalConfig,
    RestSettings,
)
from billhub.connectors.database.schema import install, load_bills
from billhub.connectors.registry import ConnectorContext, build_biller
from billhub.journal.factory import JournalSet, build_journal
from billhub.pipeline.model import AccountStatus, Bill
from billhub.pipeline.ports import Biller
from billhub.settlement.ports import CutoverRecord
from billhub.simulator.demo_data import DemoAccount, bills_table_rows, write_bills_file
from billhub.simulator.rest_biller import RestBiller

# -- journals ------------------------------------------------------------------------------


class JournalPlace:
    """Where a kind's journals live; the suite calls only these."""

    name = "?"

    def new(self) -> Any:
        """A journal (the Journal, PaymentsLedger and JournalReader ports) on this
        place, not yet open: a new hub process, or another instance."""
        raise NotImplementedError

    def commits(self, journal: Any) -> int:
        """How many commits (group commits) the journal has made so far."""
        raise NotImplementedError

    async def close_dates_before(self, journal: Any, day: date) -> None:
        """Record a cutover to ``day``, as clearing does (LINK-SPEC 6.1)."""
        raise NotImplementedError


class MemoryPlace(JournalPlace):
    name = "memory"

    def __init__(self) -> None:
        self.store = MemoryStore()

    def new(self) -> MemoryJournal:
        return MemoryJournal(self.store)

    def commits(self, journal: Any) -> int:
        return int(journal.store.commits)

    async def close_dates_before(self, journal: Any, day: date) -> None:
        journal.close_dates_before(day)


class FactoryPlace(JournalPlace):
    """A journal built by :func:`~billhub.journal.factory.build_journal`, as the hub does."""

    def __init__(self, config: JournalConfig) -> None:
        self.config = config
        self.name = config.kind
        self._sets: dict[int, JournalSet] = {}

    def new_set(self) -> JournalSet:
        return build_journal(self.config)

    def new(self) -> Any:
        js = self.new_set()
        self._sets[id(js.journal)] = js
        return js.journal

    def commits(self, journal: Any) -> int:
        if self.config.kind == "sqlite":
            return int(journal.stats.commits)
        return int(journal.db.commits)

    async def close_dates_before(self, journal: Any, day: date) -> None:
        store = self._sets[id(journal)].settlement
        await store.begin_cutover(CutoverRecord(day, None, [], "closing", T0))


def sqlite_place(request: pytest.FixtureRequest) -> FactoryPlace:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return FactoryPlace(JournalConfig(kind="sqlite", path=tmp_path / "journal" / "billhub.db"))


def postgresql_place(request: pytest.FixtureRequest) -> FactoryPlace:
    # A short lease: a journal just opened takes over others' payments only after one.
    dsn = request.getfixturevalue("pg_dsn")
    return FactoryPlace(JournalConfig(kind="postgresql", dsn=dsn, lease_s=1.0))


JOURNAL_KINDS: dict[str, Callable[[pytest.FixtureRequest], JournalPlace]] = {
    "memory": lambda request: MemoryPlace(),
    "sqlite": sqlite_place,
    "postgresql": postgresql_place,
}

#: The settlement store is SQL on the journal's database: the journals with one.
SETTLEMENT_KINDS: dict[str, Callable[[pytest.FixtureRequest], FactoryPlace]] = {
    "sqlite": sqlite_place,
    "postgresql": postgresql_place,
}


# -- billers -------------------------------------------------------------------------------


@dataclass
class BillerUnderTest:
    """A started biller holding the suite's accounts, and how to take it down."""

    biller: Biller
    #: Make the biller unreachable (every call then raises BillerUnavailable); None
    #: for a biller that lives in the hub (nothing to take down but the hub).
    take_down: Callable[[], Awaitable[None]] | None = None


BillerMaker = Callable[
    [pytest.FixtureRequest, list[DemoAccount], str],
    AbstractAsyncContextManager[BillerUnderTest],
]


def memory_accounts(accounts: list[DemoAccount]) -> list[MemoryAccount]:
    return [
        MemoryAccount(
            a.account,
            a.customer_name,
            [Bill(b.bill_id, b.period, b.due_date, b.amount) for b in a.bills],
            AccountStatus(a.status),
            a.partial_allowed,
            a.min_payment if a.partial_allowed else 0,
        )
        for a in accounts
    ]


@asynccontextmanager
async def memory_biller(
    request: pytest.FixtureRequest, accounts: list[DemoAccount], code: str
) -> AsyncIterator[BillerUnderTest]:
    biller = MemoryBiller(code, memory_accounts(accounts))

    async def down() -> None:
        biller.down = True

    yield BillerUnderTest(biller, down)


@asynccontextmanager
async def rest_biller(
    request: pytest.FixtureRequest, accounts: list[DemoAccount], code: str
) -> AsyncIterator[BillerUnderTest]:
    """The REST connector, as the registry builds it, against the demo REST biller on a
    real socket."""
    server = RestBiller(accounts, "tok-contract-7e1f")
    await server.start()
    config = BillerConfig(
        code, "REST", "rest", 5.0, 4, rest=RestSettings(server.url, "tok-contract-7e1f")
    )
    tmp_path: Path = request.getfixturevalue("tmp_path")
    connector = build_biller(config, ConnectorContext(tmp_path, T0.date))
    stopped = False

    async def down() -> None:
        nonlocal stopped
        stopped = True
        await server.stop()

    try:
        yield BillerUnderTest(connector, down)
    finally:
        await connector.close()
        if not stopped:
            await server.stop()


@asynccontextmanager
async def batch_biller(
    request: pytest.FixtureRequest, accounts: list[DemoAccount], code: str
) -> AsyncIterator[BillerUnderTest]:
    """The batch connector, as the registry builds it, over the SQLite journal's bills
    store, with the accounts in a bills file it took in from its inbox."""
    tmp_path: Path = request.getfixturevalue("tmp_path")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_bills_file(inbox, code, accounts, day=T0.date())
    stores = build_journal(JournalConfig(kind="sqlite", path=tmp_path / "journal.db"))
    await stores.open()
    config = BillerConfig(
        code, "Batch", "batch", 5.0, 4, batch=BatchSettings(inbox, tmp_path / "outbox")
    )
    connector = build_biller(config, ConnectorContext(tmp_path, T0.date, bills=stores.bills))
    try:
        await connector.start(stores.journal)
        await connector.poll()  # the company dropped its bills file: take it in
        yield BillerUnderTest(connector, None)
    finally:
        await connector.close()
        await stores.close()


def database_biller(server: str) -> BillerMaker:
    """The database connector, as the registry builds it, on a fresh database of the
    machine's PostgreSQL or MariaDB holding the default schema filled with the accounts."""

    @asynccontextmanager
    async def make(
        request: pytest.FixtureRequest, accounts: list[DemoAccount], code: str
    ) -> AsyncIterator[BillerUnderTest]:
        dsn = str(request.getfixturevalue("pg_dsn" if server == "postgresql" else "mariadb_dsn"))
        await install(dsn)
        await load_bills(dsn, bills_table_rows(accounts))
        config = BillerConfig(code, "Database", "database", 5.0, 4, database=DatabaseSettings(dsn))
        tmp_path: Path = request.getfixturevalue("tmp_path")
        connector = build_biller(config, ConnectorContext(tmp_path, T0.date))

        async def down() -> None:
            # The company's server refuses the hub: no new sessions, the open ones cut.
            name = dsn.rsplit("/", 1)[1]
            if server == "postgresql":
                sql = (
                    f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false; '
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                )
                cmd = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", sql]
            else:
                cmd = ["mariadb", "-h", "127.0.0.1", "-u", "root", "-e", f"DROP DATABASE `{name}`"]
            done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, check=False)
            assert done.returncode == 0, done.stderr

        try:
            yield BillerUnderTest(connector, down)
        finally:
            await connector.close()

    return make


BILLER_KINDS: dict[str, BillerMaker] = {
    "memory": memory_biller,
    "rest": rest_biller,
    "batch": batch_biller,
    "database-postgresql": database_biller("postgresql"),
    "database-mariadb": database_biller("mariadb"),
}
