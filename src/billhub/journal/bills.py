"""The batch billers' stores in the journal's database (the ``BillsStore`` port).

Bills files, the bills they set, every account's latest name, and which bills
payments took (``bill_claims``, written by the journal with each payment, so a
bill is taken once whatever instance took it). Every change carries a position
in a change feed, so that each instance and the web service can follow the
store from its view in memory:

- SQLite: one process writes, through one thread; the position is the journal's
  own counter (``seq``), and everything below it is visible.
- PostgreSQL: several instances write at once, and a row may become visible
  after a row written later; the position is the transaction id (``xid``) of the
  writer, and a reader continues from the oldest transaction still running when
  it last read (the snapshot's ``xmin``). Rows may so be read twice; applying
  them is idempotent.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import Any

from billhub.journal.codec import Row
from billhub.journal.pg_db import PgConn, PgDatabase, numbered
from billhub.journal.sqlite_db import SqliteDatabase
from billhub.pipeline.model import (
    BillRow,
    BillsChanges,
    BillStatus,
    BillsView,
    Claim,
    FileLoad,
    StoredBill,
)

_BILL_COLUMNS = (
    "bill_id, account, customer_name, period, due_date, amount, status, file_order, row_no"
)
_DUPLICATE = (
    "SELECT name FROM bills_files WHERE biller = ? AND (name = ? OR sha256 = ?) "
    "ORDER BY file_id LIMIT 1"
)
_INSERT_FILE = (
    "INSERT INTO bills_files (biller, name, sha256, file_order, row_count, loaded_on, seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
#: The page cache (KiB) while a bills file is loaded into SQLite.
_LOAD_CACHE_KIB = 64 * 1024
#: Rows per statement when a bills file is loaded into PostgreSQL.
_LOAD_SLICE = 5_000
_UPSERT_BILL = (
    "INSERT INTO bills (biller, bill_id, account, customer_name, period, due_date, amount, "
    "status, file_order, row_no, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (biller, bill_id) DO UPDATE SET account = excluded.account, "
    "customer_name = excluded.customer_name, period = excluded.period, "
    "due_date = excluded.due_date, amount = excluded.amount, status = excluded.status, "
    "file_order = excluded.file_order, row_no = excluded.row_no, seq = excluded.seq{XID} "
    "WHERE excluded.file_order >= bills.file_order"
)
_UPSERT_NAME = (
    "INSERT INTO bill_accounts (biller, account, customer_name, name_order) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (biller, account) DO UPDATE SET customer_name = excluded.customer_name, "
    "name_order = excluded.name_order WHERE excluded.name_order >= bill_accounts.name_order"
)
_APPLIED = "SELECT bill_id FROM bills WHERE biller = ? AND seq = ?"
_CONFLICTS = (
    "SELECT b.bill_id FROM bills b JOIN bill_claims k ON k.biller = b.biller "
    "AND k.bill_id = b.bill_id WHERE b.biller = ? AND b.seq = ? AND k.active = 1 "
    "AND b.status <> 'paid' ORDER BY b.bill_id"
)
_VIEW_NAMES = "SELECT account, customer_name, name_order FROM bill_accounts WHERE biller = ?"
#: The bills that may be paid: read through the partial index ``bills_offered`` (the
#: claims keep ``taken`` up to date by trigger), so the cost follows the bills still
#: offered, not every bill ever paid; the claim is still checked for each of those.
_VIEW_BILLS = (
    f"SELECT {_BILL_COLUMNS} FROM bills b{{OFFERED}} WHERE b.biller = ? "
    "AND b.status IN ('open', 'blocked') AND b.taken = 0 AND NOT EXISTS (SELECT 1 "
    "FROM bill_claims k WHERE k.biller = b.biller "
    "AND k.bill_id = b.bill_id AND k.active = 1)"
)
#: SQLite's planner, without statistics, prefers ``bills_status`` (every open bill
#: ever loaded): it is told.
_SQLITE_VIEW_BILLS = _VIEW_BILLS.replace("{OFFERED}", " INDEXED BY bills_offered")
_PG_VIEW_BILLS = numbered(_VIEW_BILLS.replace("{OFFERED}", ""))
_CLAIMS_OF = (
    "SELECT bill_id, payment_id, active FROM bill_claims WHERE biller = ? AND payment_id = ?"
)

#: Claims of a payment's bills, as the journals write them with the payment.
CLAIM_BILL = (
    "INSERT INTO bill_claims (biller, bill_id, payment_id, active, seq) VALUES (?, ?, ?, 1, ?) "
    "ON CONFLICT (biller, bill_id) DO UPDATE SET payment_id = excluded.payment_id, active = 1, "
    "seq = excluded.seq{XID} WHERE bill_claims.active = 0 "
    "OR bill_claims.payment_id = excluded.payment_id"
)
RELEASE_BILLS = (
    "UPDATE bill_claims SET active = 0, seq = ?{XID} WHERE biller = ? AND payment_id = ? "
    "AND active = 1"
)
_PG_XID = ", xid = pg_current_xact_id()"


def sql_for(template: str, *, postgres: bool) -> str:
    """A statement of this module for SQLite (``?``) or PostgreSQL (``$n``, with xid)."""
    if postgres:
        return numbered(template.replace("{XID}", _PG_XID))
    return template.replace("{XID}", "")


def _bill(biller: str, r: BillRow, order: str, seq: int) -> tuple[Any, ...]:
    return (
        biller,
        r.bill_id,
        r.account,
        r.customer_name,
        r.period,
        r.due_date.isoformat(),
        r.amount,
        r.status,
        order,
        r.row,
        seq,
    )


def _bills_in_key_order(
    biller: str, rows: Sequence[BillRow], order: str, seq: int
) -> Iterator[tuple[Any, ...]]:
    """The rows as the upsert takes them, in the order of the table's key (bill ids are
    unique in a file, so the order changes nothing else): each insert then lands next
    to the one before in every index, instead of at a random page of a large one."""
    for r in sorted(rows, key=_by_bill_id):
        yield _bill(biller, r, order, seq)


def _by_bill_id(r: BillRow) -> str:
    return r.bill_id


@contextlib.contextmanager
def _load_cache(conn: sqlite3.Connection) -> Iterator[None]:
    """A larger page cache for one file's load (the indexes of a large store do not fit
    the default 2 MiB), back to what it was afterwards, so it is not kept for the
    process's life."""
    before = int(conn.execute("PRAGMA cache_size").fetchone()[0])
    conn.execute(f"PRAGMA cache_size={-_LOAD_CACHE_KIB}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cache_size={before}")
        conn.execute("PRAGMA shrink_memory")


def _names(biller: str, rows: Sequence[BillRow], order: str) -> list[tuple[Any, ...]]:
    """Each account's name as the file's last row for it says, with its order."""
    last: dict[str, BillRow] = {}
    for r in rows:
        last[r.account] = r
    return [(biller, a, r.customer_name, _name_order(order, r.row)) for a, r in last.items()]


def _name_order(file_order: str, row: int) -> str:
    return f"{file_order}:{row:09d}"


def _order(name_order: str) -> tuple[str, int]:
    file_order, _, row = name_order.rpartition(":")
    return file_order, int(row)


_STATUS: dict[str, BillStatus] = {
    "open": "open",
    "paid": "paid",
    "cancelled": "cancelled",
    "blocked": "blocked",
}


def stored_bills(rows: Sequence[Row]) -> tuple[StoredBill, ...]:
    """The rows as bills, the values many bills repeat (a customer's name, the period,
    due date, status and file) shared rather than one object per row: the batch
    connectors keep every bill still offered in memory."""
    same: dict[Any, Any] = {}
    days: dict[str, date] = {}
    out = []
    for r in rows:
        due = days.get(r[4])
        if due is None:
            due = days[r[4]] = date.fromisoformat(r[4])
        out.append(
            StoredBill(
                r[0],
                r[1],
                same.setdefault(r[2], r[2]),
                same.setdefault(r[3], r[3]),
                due,
                int(r[5]),
                _STATUS[r[6]],
                (same.setdefault(r[7], r[7]), int(r[8])),
            )
        )
    return tuple(out)


def _view(names: Sequence[Row], bills: Sequence[Row], cursor: int) -> BillsView:
    return BillsView(
        tuple((n[0], n[1], _order(n[2])) for n in names),
        stored_bills(bills),
        cursor,
    )


def _load_result(
    duplicate: str | None,
    rows: Sequence[BillRow],
    applied: set[str] | None,
    conflicts: Sequence[str],
) -> FileLoad:
    """``applied``: the bills the file set, None for all of them."""
    if duplicate is not None:
        return FileLoad(duplicate_of=duplicate)
    stale = () if applied is None else tuple(r.bill_id for r in rows if r.bill_id not in applied)
    return FileLoad(stale=stale, conflicts=tuple(conflicts))


def _changes_sql(*, postgres: bool) -> tuple[str, str]:
    """The change feed's two queries (bills set since a position, with the bills whose
    claim was released since; the claims of both), for SQLite (``seq`` after the
    position) or PostgreSQL (``xid`` from the snapshot's ``xmin`` on)."""

    def since(table: str) -> str:
        return f"{table}.xid >= ?::text::xid8" if postgres else f"{table}.seq > ?"

    columns = ", ".join("b." + x for x in _BILL_COLUMNS.split(", "))
    bills = (
        f"SELECT {columns} FROM bills b WHERE b.biller = ? AND {since('b')} "
        f"UNION ALL SELECT {columns} FROM bills b JOIN bill_claims k ON k.biller = b.biller "
        f"AND k.bill_id = b.bill_id WHERE k.biller = ? AND {since('k')} AND k.active = 0"
    )
    # Two halves, each read by its index from the position on: one query with an OR
    # read every claim of the biller, every second, however old. UNION ALL: a row in
    # both halves is applied twice, which changes nothing, and a file's load is not
    # sorted to find them.
    claims = (
        "SELECT k.bill_id, k.payment_id, k.active FROM bill_claims k WHERE k.biller = ? "
        f"AND {since('k')} UNION ALL SELECT k.bill_id, k.payment_id, k.active FROM bills b "
        "JOIN bill_claims k ON k.biller = b.biller AND k.bill_id = b.bill_id "
        f"WHERE b.biller = ? AND {since('b')}"
    )
    return (numbered(bills), numbered(claims)) if postgres else (bills, claims)


def _changes(bills: Sequence[Row], claims: Sequence[Row], cursor: int) -> BillsChanges:
    return BillsChanges(
        stored_bills(bills),
        tuple(Claim(k[0], k[1], bool(k[2])) for k in claims),
        cursor,
    )


def _sqlite_cursor(conn: sqlite3.Connection, biller: str) -> int:
    """The last position of a biller's store, read in the same transaction as the rows
    (so a read-only reader, such as the web service, follows the writer's counter)."""
    row = conn.execute(
        "SELECT max(s) FROM (SELECT max(seq) AS s FROM bills WHERE biller = ? "
        "UNION ALL SELECT max(seq) FROM bill_claims WHERE biller = ?)",
        (biller, biller),
    ).fetchone()
    return int(row[0] or 0)


class SqliteBillsStore:
    """The batch billers' stores in the SQLite journal's file, on its writer thread."""

    def __init__(self, db: SqliteDatabase, next_seq: Callable[[], int]) -> None:
        self.db = db
        self._next_seq = next_seq  # the journal's counter: on the writer thread only

    async def load_file(
        self,
        biller: str,
        *,
        name: str,
        sha256: str,
        file_order: str,
        rows: Sequence[BillRow],
        loaded_on: date,
    ) -> FileLoad:
        def op(conn: sqlite3.Connection) -> FileLoad:
            seen = conn.execute(_DUPLICATE, (biller, name, sha256)).fetchone()
            if seen is not None:
                return FileLoad(duplicate_of=seen[0])
            seq = self._next_seq()
            conn.execute(
                _INSERT_FILE,
                (biller, name, sha256, file_order, len(rows), loaded_on.isoformat(), seq),
            )
            with _load_cache(conn):
                set_rows = conn.executemany(
                    sql_for(_UPSERT_BILL, postgres=False),
                    _bills_in_key_order(biller, rows, file_order, seq),
                ).rowcount
                conn.executemany(_UPSERT_NAME, sorted(_names(biller, rows, file_order)))
                # Every row set (the common case): no row was stale, nothing to look up.
                applied = (
                    None
                    if set_rows == len(rows)
                    else {r[0] for r in conn.execute(_APPLIED, (biller, seq))}
                )
                conflicts = [r[0] for r in conn.execute(_CONFLICTS, (biller, seq))]
            return _load_result(None, rows, applied, conflicts)

        result: FileLoad = await self.db.submit(op)
        return result

    async def view(self, biller: str) -> BillsView:
        def op(conn: sqlite3.Connection) -> BillsView:
            cursor = _sqlite_cursor(conn, biller)
            names = conn.execute(_VIEW_NAMES, (biller,)).fetchall()
            bills = conn.execute(_SQLITE_VIEW_BILLS, (biller,)).fetchall()
            return _view(names, bills, cursor)

        result: BillsView = await self.db.submit(op)
        return result

    async def changes(self, biller: str, cursor: int) -> BillsChanges:
        def op(conn: sqlite3.Connection) -> BillsChanges:
            now = _sqlite_cursor(conn, biller)
            sql_bills, sql_claims = _changes_sql(postgres=False)
            bills = conn.execute(sql_bills, (biller, cursor, biller, cursor)).fetchall()
            claims = conn.execute(sql_claims, (biller, cursor, biller, cursor)).fetchall()
            return _changes(bills, claims, now)

        result: BillsChanges = await self.db.submit(op)
        return result

    async def claims_of(self, biller: str, payment_id: str) -> list[Claim]:
        rows = await self.db.read(_CLAIMS_OF, (biller, payment_id))
        return [Claim(r[0], r[1], bool(r[2])) for r in rows]


class PgBillsStore:
    """The batch billers' stores in the PostgreSQL journal, shared by every instance."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def load_file(
        self,
        biller: str,
        *,
        name: str,
        sha256: str,
        file_order: str,
        rows: Sequence[BillRow],
        loaded_on: date,
    ) -> FileLoad:
        async def op(conn: PgConn) -> FileLoad:
            # One load of a biller's files at a time, on every instance: the second to
            # come finds the first's file and is a duplicate.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))", biller)
            seen = await conn.fetchval(numbered(_DUPLICATE), biller, name, sha256)
            if seen is not None:
                return FileLoad(duplicate_of=str(seen))
            seq = int(await conn.fetchval("SELECT nextval('bills_seq_numbers')"))
            await conn.execute(
                numbered(_INSERT_FILE),
                biller,
                name,
                sha256,
                file_order,
                len(rows),
                loaded_on.isoformat(),
                seq,
            )
            # In slices: the statement time-out bounds each call, and a ministry's bills
            # file (100,000 rows and more) as one call outlasted it on a busy server.
            bills = [_bill(biller, r, file_order, seq) for r in rows]
            for i in range(0, len(bills), _LOAD_SLICE):
                upsert = sql_for(_UPSERT_BILL, postgres=True)
                await conn.executemany(upsert, bills[i : i + _LOAD_SLICE])
            names = _names(biller, rows, file_order)
            for i in range(0, len(names), _LOAD_SLICE):
                await conn.executemany(numbered(_UPSERT_NAME), names[i : i + _LOAD_SLICE])
            applied = {r[0] for r in await conn.fetch(numbered(_APPLIED), biller, seq)}
            conflicts = [r[0] for r in await conn.fetch(numbered(_CONFLICTS), biller, seq)]
            return _load_result(None, rows, applied, conflicts)

        result: FileLoad = await self.db.submit(op)
        return result

    async def view(self, biller: str) -> BillsView:
        async def op(conn: PgConn) -> BillsView:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                cursor = int(await conn.fetchval(_XMIN))
                names = await conn.fetch(numbered(_VIEW_NAMES), biller)
                bills = await conn.fetch(_PG_VIEW_BILLS, biller)
            return _view(names, bills, cursor)

        view: BillsView = await self.db.with_connection(op)
        return view

    async def changes(self, biller: str, cursor: int) -> BillsChanges:
        async def op(conn: PgConn) -> BillsChanges:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                now = int(await conn.fetchval(_XMIN))
                sql_bills, sql_claims = _changes_sql(postgres=True)
                since = str(cursor)
                bills = await conn.fetch(sql_bills, biller, since, biller, since)
                claims = await conn.fetch(sql_claims, biller, since, biller, since)
            return _changes(bills, claims, now)

        changed: BillsChanges = await self.db.with_connection(op)
        return changed

    async def claims_of(self, biller: str, payment_id: str) -> list[Claim]:
        rows = await self.db.fetch(numbered(_CLAIMS_OF), biller, payment_id)
        return [Claim(r[0], r[1], bool(r[2])) for r in rows]


_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
