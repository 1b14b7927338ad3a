"""What only the PostgreSQL journal has: several hub instances on one database.

The journal's contract is ``tests/contracts/test_journal_contract.py`` (run over
PostgreSQL among the other kinds); this file checks what SQLite never faces:
migrations when instances start together, group commit over a pool, resolver
tasks claimed by one instance at a time and taken over when a claim runs out, the
invariants under two instances writing the same key at once, and errors that
never show the DSN.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from tests.journal_records import T0, payment, reversal, task_for

from billhub.errors import JournalError, KeyReversed, KeyTaken
from billhub.journal.pg_db import PgDatabase, write_failure
from billhub.journal.pg_schema import PG_MIGRATIONS
from billhub.journal.postgres import PgJournal
from billhub.pipeline.model import PaymentState

LEASE_S = 1.0


def psql(dsn: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", dsn, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


@pytest.fixture
async def two(pg_dsn: str) -> AsyncIterator[tuple[PgJournal, PgJournal]]:
    """Two hub instances on one database."""
    a = PgJournal(pg_dsn, instance="hub-a", lease_s=LEASE_S)
    b = PgJournal(pg_dsn, instance="hub-b", lease_s=LEASE_S)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def uncertain_with_task(j: PgJournal, rrn: str, minutes: int = 0) -> Any:
    rec, _ = await j.insert_payment(payment(rrn))
    rec.state, rec.response_code, rec.answered_at = PaymentState.UNCERTAIN, "91", T0
    task = task_for(rec.payment_id, next_at=T0 + timedelta(minutes=minutes))
    await j.finish_payment(rec, task=task)
    return task


# -- migrations -------------------------------------------------------------------------------


async def test_instances_starting_together_migrate_once(pg_dsn: str) -> None:
    journals = [PgJournal(pg_dsn, instance=f"hub-{i}") for i in range(4)]
    await asyncio.gather(*(j.open() for j in journals))
    try:
        rows = psql(pg_dsn, "SELECT version FROM schema_version ORDER BY version")
        assert rows.split() == [str(m[0]) for m in PG_MIGRATIONS]
        # Every instance writes and reads the one schema.
        for i, j in enumerate(journals):
            assert (await j.insert_payment(payment(f"00000000030{i}")))[1] is True
        assert len(await journals[0].payments()) == 4
    finally:
        await asyncio.gather(*(j.close() for j in journals))
    before = psql(pg_dsn, "SELECT version, applied_at FROM schema_version ORDER BY version")
    again = PgJournal(pg_dsn)
    await again.open()
    await again.close()
    assert psql(pg_dsn, "SELECT version, applied_at FROM schema_version ORDER BY version") == (
        before
    ), "no migration ran again"


async def test_a_newer_schema_is_refused_naming_the_key_not_the_dsn(pg_dsn: str) -> None:
    j = PgJournal(pg_dsn)
    await j.open()
    await j.close()
    psql(pg_dsn, "INSERT INTO schema_version (version, description) VALUES (999, 'future')")
    for read_only in (False, True):
        newer = PgJournal(pg_dsn, read_only=read_only)
        with pytest.raises(JournalError) as info:
            await newer.open()
        assert "journal.dsn" in str(info.value) and "999" in str(info.value)
        assert pg_dsn not in str(info.value)
        await newer.close()


async def test_read_only_on_an_empty_database_says_there_is_no_journal(pg_dsn: str) -> None:
    j = PgJournal(pg_dsn, read_only=True)
    with pytest.raises(JournalError) as info:
        await j.open()
    assert "no billhub journal" in str(info.value)
    assert psql(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname='public'") == "0"


async def test_an_unreachable_server_is_named_without_the_dsn_or_its_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = f"postgresql://billhub:s3cret-pw@127.0.0.1:{port}/journal"
    for read_only in (False, True):  # serve, and the operators' commands
        j = PgJournal(dsn, read_only=read_only)
        with pytest.raises(JournalError) as info:
            await j.open()
        message = str(info.value)
        assert message.startswith("journal.dsn: cannot connect"), message
        assert "s3cret-pw" not in message and dsn not in message
        with pytest.raises(JournalError):
            await j.insert_payment(payment("000000000001"))
        await j.close()


# -- group commit -------------------------------------------------------------------------------


async def test_a_connection_left_half_way_is_a_journal_error_on_reads_and_writes() -> None:
    """asyncpg's ``InternalClientError`` (a connection the server terminated
    mid-statement, used again) is no ``InterfaceError``; it escaped a read and ended
    the resolver's loop. Every read and write names it as a journal failure."""

    class HalfWay:
        async def fetch(self, *args: Any) -> Any:
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )

        execute = fetch

    db = PgDatabase("postgresql://127.0.0.1:1/x", PG_MIGRATIONS)
    db._pool = HalfWay()  # type: ignore[assignment]
    with pytest.raises(JournalError, match="InternalClientError"):
        await db.fetch("SELECT 1")
    with pytest.raises(JournalError, match="InternalClientError"):
        await db.execute("SELECT 1")
    assert write_failure(asyncpg.exceptions.InternalClientError("x")) == "connection"


async def test_group_commit_shares_commits_among_concurrent_writes(pg_dsn: str) -> None:
    j = PgJournal(pg_dsn)
    await j.open()
    try:
        n = 500
        commits = j.db.commits
        results = await asyncio.gather(*(j.insert_payment(payment(f"{i:012d}")) for i in range(n)))
        used = j.db.commits - commits
        print(f"{n} concurrent inserts took {used} commit(s)")
        assert all(created for _, created in results)
        assert 0 < used < n
        assert len(await j.payments()) == n
    finally:
        await j.close()


# -- two instances on one key -------------------------------------------------------------------


async def test_the_same_key_from_two_instances_at_once_is_recorded_once(
    two: tuple[PgJournal, PgJournal],
) -> None:
    a, b = two
    for i in range(20):
        rrn = f"00000000040{i:01d}" if i < 10 else f"0000000004{i}"
        got = await asyncio.gather(
            a.insert_payment(payment(rrn, payment_id=f"A-{i}")),
            b.insert_payment(payment(rrn, payment_id=f"B-{i}")),
        )
        assert sorted(created for _, created in got) == [False, True]
        assert got[0][0].payment_id == got[1][0].payment_id  # both answer the one payment
    assert len(await a.payments()) == 20


async def test_a_lone_reversal_and_its_late_original_on_two_instances_never_both_stand(
    two: tuple[PgJournal, PgJournal],
) -> None:
    a, b = two
    outcomes = set()
    for i in range(20):
        rrn = f"0000000005{i:02d}"
        lone = reversal(rrn, payment_id=None, response_code="25", booked_on=None)
        rev, pay = await asyncio.gather(
            a.insert_reversal(lone), b.insert_payment(payment(rrn)), return_exceptions=True
        )
        stored_rev = await a.get_reversal(lone.key)
        stored_pay = await a.get_payment(lone.key)
        if isinstance(pay, KeyReversed):  # the reversal came first: the original is refused
            assert rev is None and stored_rev is not None and stored_pay is None
            outcomes.add("reversal first")
        else:  # the payment came first: the lone reversal is refused (the pipeline retries)
            assert isinstance(rev, KeyTaken), (rev, pay)
            assert stored_rev is None and stored_pay is not None
            outcomes.add("payment first")
    assert outcomes  # each pair ended one of the two ways, never both recorded


# -- resolver tasks: claimed by one instance, taken over when its claim runs out -----------------


async def test_two_instances_never_get_the_same_task(two: tuple[PgJournal, PgJournal]) -> None:
    a, b = two
    tasks = [await uncertain_with_task(a, f"0000000006{i:02d}") for i in range(30)]
    now = T0 + timedelta(hours=1)
    got_a, got_b = await asyncio.gather(a.due_tasks(now, limit=20), b.due_tasks(now, limit=20))
    ids_a, ids_b = {t.task_id for t in got_a}, {t.task_id for t in got_b}
    assert not ids_a & ids_b
    assert ids_a | ids_b == {t.task_id for t in tasks}
    # Asked again, each keeps its own and gets none of the other's.
    assert {t.task_id for t in await a.due_tasks(now)} == ids_a
    assert {t.task_id for t in await b.due_tasks(now)} == ids_b
    # A rescheduled task is let go: the other may take it at once.
    mine = got_a[0]
    mine.attempts = 1
    await a.reschedule_task(mine)
    assert mine.task_id in {t.task_id for t in await b.due_tasks(now)}
    # A completed one is gone for both.
    theirs = got_b[0]
    await b.complete_task(theirs, outcome="never_posted")
    assert theirs.task_id not in {t.task_id for t in await a.due_tasks(now)}
    assert theirs.task_id not in {t.task_id for t in await b.due_tasks(now)}
    assert len(await a.open_tasks()) == 29  # claims never hide a task from the list


async def test_the_tasks_of_an_instance_that_stopped_answering_are_taken_over(
    pg_dsn: str,
) -> None:
    dying = PgJournal(pg_dsn, instance="hub-dying", claim_s=2.0)
    other = PgJournal(pg_dsn, instance="hub-other")
    await dying.open()
    await other.open()
    try:
        task = await uncertain_with_task(dying, "000000000700")
        now = T0 + timedelta(hours=1)
        assert [t.task_id for t in await dying.due_tasks(now)] == [task.task_id]
        assert await other.due_tasks(now) == []  # claimed by a live instance
        await dying.close()  # it claimed and never finished: a crash, as far as tasks go
        taken: list[Any] = []
        for _ in range(200):  # its claim runs out after claim_s
            taken = await other.due_tasks(now)
            if taken:
                break
            await asyncio.sleep(0.05)
        assert [t.task_id for t in taken] == [task.task_id]
    finally:
        await other.close()


async def test_unfinished_payments_are_only_those_of_instances_gone(
    two: tuple[PgJournal, PgJournal],
) -> None:
    a, b = two
    in_flight, _ = await a.insert_payment(payment("000000000800"))
    await asyncio.sleep(LEASE_S * 1.5)  # b has answered for a lease: it may take over now
    assert await b.unfinished_payments() == [], "a is running: its payment is in flight"
    assert await a.unfinished_payments() == []
    await a.close()  # a stops (or its heartbeat ages past the lease)
    found: list[Any] = []
    for _ in range(200):
        found = await b.unfinished_payments()
        if found:
            break
        await asyncio.sleep(0.05)
    assert [p.payment_id for p in found] == [in_flight.payment_id]
