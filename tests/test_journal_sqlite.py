"""What only the SQLite journal has: its file, its migrations, its group commit.

The journal's contract (keys applied once, reversals, tasks, refusals, restarts) is
``tests/contracts/test_journal_contract.py``, run over SQLite among the other kinds;
this file keeps what is SQLite's own: the schema's versions in the file, commits
shared by a writer thread, integers as SQLite stores them, and the errors of a path
that is no journal.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from tests.journal_records import (
    T0,
    approve,
    approved_in_journal,
    payment,
    reversal,
    task_for,
)

from billhub.db.sqlite import migrate
from billhub.errors import JournalError
from billhub.journal.bills import SqliteBillsStore
from billhub.journal.schema import MIGRATIONS
from billhub.journal.sqlite import SqliteJournal
from billhub.pipeline.model import PaymentState


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal" / "billhub.db"


@pytest.fixture
async def journal(db_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(db_path)
    await j.open()
    try:
        yield j
    finally:
        await j.close()


# -- migrations ----------------------------------------------------------------------------------


def schema_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT version, description, applied_at FROM schema_version ORDER BY version"
        ).fetchall()
    finally:
        conn.close()


async def test_migrations_run_once_and_are_kept_in_the_file(db_path: Path) -> None:
    j = SqliteJournal(db_path)
    await j.open()
    assert j.schema_version() == MIGRATIONS[-1][0]
    await approved_in_journal(j, "000000000070")
    await j.close()
    migrations_before = schema_rows(db_path)
    assert [r[0] for r in migrations_before] == [m[0] for m in MIGRATIONS]

    j2 = SqliteJournal(db_path)
    await j2.open()
    try:
        assert j2.schema_version() == MIGRATIONS[-1][0]
    finally:
        await j2.close()
    assert schema_rows(db_path) == migrations_before  # no migration ran again


async def test_schema_version_after_close_raises(db_path: Path) -> None:
    j = SqliteJournal(db_path)
    await j.open()
    await j.close()
    await j.close()
    with pytest.raises(JournalError):
        j.schema_version()


async def test_finish_with_task_is_one_op_of_one_commit(journal: SqliteJournal) -> None:
    rec, _ = await journal.insert_payment(payment("000000000011"))
    rec.state, rec.response_code, rec.answered_at = PaymentState.UNCERTAIN, "91", T0
    commits = journal.stats.commits
    await journal.finish_payment(rec, task=task_for(rec.payment_id))
    assert journal.stats.commits == commits + 1
    assert journal.stats.last_group == 1  # payment and task: one op, one commit


# -- durability and group commit ---------------------------------------------------------------


async def test_payment_is_on_disk_once_its_write_returned(db_path: Path) -> None:
    j = SqliteJournal(db_path)
    await j.open()
    try:
        rec = await approved_in_journal(j, "000000000073")
        # Another connection (another process after a crash) already sees it committed.
        conn = sqlite3.connect(db_path)
        try:
            row = conn.execute(
                "SELECT state, response_code FROM payments WHERE payment_id=?",
                (rec.payment_id,),
            ).fetchone()
        finally:
            conn.close()
        assert row == ("approved", "00")
    finally:
        await j.close()


async def test_group_commit_shares_commits_among_concurrent_writes(
    journal: SqliteJournal,
) -> None:
    n = 500
    commits, ops = journal.stats.commits, journal.stats.ops
    results = await asyncio.gather(
        *(journal.insert_payment(payment(f"{i:012d}")) for i in range(n))
    )
    used = journal.stats.commits - commits
    print(f"{n} concurrent inserts took {used} commit(s)")
    assert all(created for _, created in results)
    assert journal.stats.ops - ops == n
    assert 0 < used < n
    assert len(await journal.payments()) == n


async def test_one_failing_op_does_not_undo_its_batch(journal: SqliteJournal) -> None:
    ghost = approve(payment("000000000080", payment_id="P-GHOST"))
    good = [payment(f"00000000008{i}") for i in range(1, 6)]
    coros: list[Awaitable[Any]] = [journal.insert_payment(p) for p in good[:2]]
    coros.append(journal.finish_payment(ghost))
    coros.extend(journal.insert_payment(p) for p in good[2:])

    commits = journal.stats.commits
    results = await asyncio.gather(*coros, return_exceptions=True)

    assert journal.stats.commits == commits + 1 and journal.stats.last_group == 6  # one batch
    assert isinstance(results[2], JournalError)
    assert all(r == (p, True) for r, p in zip(results[:2] + results[3:], good, strict=True))
    assert [p.payment_id for p in await journal.payments()] == [p.payment_id for p in good]


async def test_an_unexpected_error_in_one_op_fails_only_that_op(journal: SqliteJournal) -> None:
    # An amount SQLite cannot hold raises OverflowError, not sqlite3.Error: it must
    # still fail alone, as a JournalError, and leave the rest of its batch committed.
    bad = payment("000000000090", amount=2**64)
    good = [payment(f"00000000009{i}") for i in range(1, 4)]
    commits = journal.stats.commits
    results = await asyncio.gather(
        journal.insert_payment(good[0]),
        journal.insert_payment(bad),
        journal.insert_payment(good[1]),
        journal.insert_payment(good[2]),
        return_exceptions=True,
    )
    assert journal.stats.commits == commits + 1 and journal.stats.last_group == 4
    assert isinstance(results[1], JournalError)
    assert [results[0], results[2], results[3]] == [(p, True) for p in good]
    assert [p.payment_id for p in await journal.payments()] == [p.payment_id for p in good]


@pytest.mark.parametrize("amount", [1, 125_000, 999_999_999_999, 10**15, 2**63 - 1])
async def test_amounts_are_stored_as_sqlite_integers(
    journal: SqliteJournal, db_path: Path, amount: int
) -> None:
    rec, _ = await journal.insert_payment(payment("000000000100", amount=amount))
    await journal.insert_reversal(  # its original was not approved: 25
        reversal("000000000100", payment_id=rec.payment_id, response_code="25", amount=amount)
    )
    conn = sqlite3.connect(db_path)
    try:
        kinds = conn.execute(
            "SELECT typeof(amount) FROM payments UNION ALL SELECT typeof(amount) FROM reversals"
        ).fetchall()
    finally:
        conn.close()
    assert kinds == [("integer",), ("integer",)]


# -- a path that is no journal ------------------------------------------------------------------


async def test_open_on_unwritable_path_raises_journal_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the journal's directory should be")
    path = blocker / "journal" / "billhub.db"
    j = SqliteJournal(path)
    with pytest.raises(JournalError) as info:
        await j.open()
    assert str(path) in str(info.value)
    # A journal that failed to open answers later calls with JournalError, not a hang.
    with pytest.raises(JournalError):
        await asyncio.wait_for(j.insert_payment(payment("000000000130")), timeout=5)
    await j.close()


async def test_open_on_a_directory_raises_journal_error_naming_it(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path)  # a directory is no database file
    with pytest.raises(JournalError) as info:
        await j.open()
    assert str(tmp_path) in str(info.value)
    await j.close()


async def test_open_on_a_file_that_is_no_database_raises_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "billhub.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes " * 100)
    j = SqliteJournal(path)
    with pytest.raises(JournalError) as info:
        await j.open()
    assert str(path) in str(info.value)
    await j.close()


async def test_bills_held_by_payments_stay_held_after_the_upgrade_to_the_offered_index(
    db_path: Path,
) -> None:
    """A journal written before bills were marked taken: the upgrade marks those that
    payments hold, so a restart offers neither a paid bill nor hides a released one."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    migrate(conn, [m for m in MIGRATIONS if m[0] <= 5], "2026-11-01T00:00:00+00:00")
    rows = [
        ("100002", bill_id, "0200000001", "Rana", "202611", "2026-11-28", 1000, "open", "o", n, n)
        for n, bill_id in enumerate(("HELD", "RELEASED", "FREE"), start=1)
    ]
    conn.executemany("INSERT INTO bills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany(
        "INSERT INTO bill_claims VALUES ('100002', ?, ?, ?, ?)",
        [("HELD", "P1", 1, 4), ("RELEASED", "P2", 0, 5)],
    )
    conn.close()
    j = SqliteJournal(db_path)
    await j.open()
    try:
        store = SqliteBillsStore(j.db, j.next_seq)
        view = await store.view("100002")
        assert sorted(b.bill_id for b in view.bills) == ["FREE", "RELEASED"]
        assert j.next_seq() == 6  # the counter goes on after the last claim
    finally:
        await j.close()
