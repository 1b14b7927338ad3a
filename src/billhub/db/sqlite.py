"""Versioned schema migrations for billhub's SQLite files (the journal, batch stores).

One runner for every SQLite file billhub owns: each migration runs once, in a
transaction of its own, and is recorded in ``schema_version``; a file whose
schema is newer than this code knows is refused rather than written to, since
an older hub would misread it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence

from billhub.errors import SchemaTooNew

Migration = tuple[int, str, Sequence[str]]


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if there still is one.

    A COMMIT that fails (disk full, I/O error) may already have rolled the
    transaction back; a bare ROLLBACK would then raise "cannot rollback - no
    transaction is active" and hide the real reason, which is what callers must
    report.
    """
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def migrate(
    conn: sqlite3.Connection,
    migrations: Sequence[Migration],
    applied_at: str,
    table: str = "schema_version",
) -> int:
    """Bring ``conn`` (autocommit mode) to the latest migration; returns its version.

    ``table`` records the versions: stores sharing one file (the journal and the
    citizen requests) each keep their own, so each is versioned on its own.
    """
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} "
        "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done = {int(r[0]) for r in conn.execute(f"SELECT version FROM {table}")}  # noqa: S608
    known = migrations[-1][0] if migrations else 0
    if done and max(done) > known:
        raise SchemaTooNew(max(done), known)
    for version, description, statements in migrations:
        if version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.execute(
                f"INSERT INTO {table} VALUES (?, ?, ?)",  # noqa: S608 (a constant name)
                (version, description, applied_at),
            )
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
    return known
