"""The batch (file exchange) connector: BILLERS.md section 3.

For a company whose system cannot answer online, the hub keeps the bills itself.
Where each piece of state lives, and why:

* **Bills** live in the connector's own SQLite file (``<state_dir>/batch-<code>.db``,
  WAL, ``synchronous=FULL``) together with the registry of loaded files (name and
  sha256). Loading a bills file is one transaction: its rows and its registry entry
  commit together or not at all, so a file is loaded whole, once.
* **Inquiries and payments** are answered from an in-memory index (account -> bills)
  built from that file at :meth:`BatchConnector.start`; they cost no I/O. The index
  changes only after a load's commit.
* **Payments** mark bills paid *in memory only*. The durable record of a payment is
  the hub's journal, written by the pipeline after :meth:`~BatchConnector.post_payment`
  returns; at start the connector re-marks the bills of
  ``ledger.held_payments(code)`` (approved and not reversed). A payment the journal
  never approved is, after a restart, simply not held, which is why
  ``status_is_authoritative`` is true.

Which bills a payment *without* a bill id covered is not in the journal. The
connector remembers it in an ``allocations`` table of its own file, written lazily
(in each bills file load's own transaction, after a load, at start and at
:meth:`~BatchConnector.close`; never by ``post_payment``). Since a load writes the
allocations taken so far before it changes any bill, a payment whose allocation is
missing after a crash was taken against the store as it still is (the one exception:
a payment taken while a file was committing, with a crash before the write that
follows the load). At start such a payment is re-allocated to the account's oldest
open bills whose running total equals its amount, which are the bills it paid.
Anything that cannot be placed so is listed in :attr:`BatchConnector.rebuild_warnings`
and left unmarked, never guessed.

Rules of the bills store (BILLERS.md section 3):

* A later file supersedes an earlier one row by row (by ``bill_id``). "Later" is the
  order of the file names (day, then ``seq`` as a number): a late-arriving older file
  does not overwrite rows a newer file already set (they are reported as ``stale``).
* A bill the hub took a payment for stays paid whatever a later file says; a later
  row for it with any status but ``paid`` is reported in ``LoadResult.conflicts``.
* An account with any ``blocked`` row is blocked (inquiries answer ``BLOCKED``,
  payments ``account_blocked``); ``paid`` and ``cancelled`` rows are never offered.
* Partial payment is never offered: ``partial_allowed=False``, ``min_payment=0``; a
  payment must be exactly the bill's amount, or the total of all open bills.

Errors: the :class:`~billhub.pipeline.ports.Biller` calls raise only
:class:`~billhub.errors.BillerRejected` (and :class:`~billhub.errors.BillerUnavailable`
before :meth:`start` or after :meth:`close`). The file and database work of
:meth:`start`, :meth:`load_inbox`, :meth:`write_payments_file` and :meth:`close` raise
:class:`~billhub.errors.BillerUnavailable` for an ``OSError`` or ``sqlite3.Error``;
``write_payments_file`` raises :class:`~billhub.errors.JournalError` when a reversed
payment cannot be found. That blocking work runs in a thread, as a task the caller's
cancellation does not interrupt (a committed load always reaches the index).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from billhub.config import BatchSettings
from billhub.connectors.billsfile import (
    BillRow,
    BillsFileError,
    BillStatus,
    parse_bills_file,
    parse_bills_file_name,
)
from billhub.connectors.paymentsfile import (
    PaymentsFileRow,
    approved_row,
    payments_file_name,
    render,
    reversed_row,
)
from billhub.db.sqlite import migrate, rollback
from billhub.errors import BillerRejected, BillerUnavailable, JournalError, SchemaTooNew
from billhub.pipeline.model import (
    AccountBills,
    AccountStatus,
    Bill,
    DayFile,
    InboxFile,
    InboxOutcome,
    PaymentOrder,
    PaymentRecord,
    PostingStatus,
    StatusAnswer,
)
from billhub.pipeline.ports import PaymentsLedger

__all__ = ["SCHEMA_VERSION", "BatchConnector", "LoadOutcome", "LoadResult", "PaymentLookup"]

T = TypeVar("T")

#: Looks a payment up by its hub payment id (the journal's ``get_payment_by_id``).
PaymentLookup = Callable[[str], Awaitable[PaymentRecord | None]]

_CODE_RE = re.compile(r"[A-Za-z0-9]{1,20}")
_RECEIPT_DIGITS = 15  # "B" + 15 base-36 digits: 16 characters, about 77 bits
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_STATUSES: dict[str, BillStatus] = {
    "open": "open",
    "paid": "paid",
    "cancelled": "cancelled",
    "blocked": "blocked",
}

#: Versioned migrations, in order; each runs once, in one transaction. A released
#: migration is never edited: a change is a new one.
_MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "bills, loaded files, payment allocations",
        [
            """CREATE TABLE files (
                file_id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                sha256 TEXT NOT NULL UNIQUE,
                file_order TEXT NOT NULL,
                row_count INTEGER NOT NULL,
                loaded_on TEXT NOT NULL
            )""",
            """CREATE TABLE bills (
                bill_id TEXT PRIMARY KEY,
                account TEXT NOT NULL,
                customer_name TEXT NOT NULL,
                period TEXT NOT NULL,
                due_date TEXT NOT NULL,
                amount INTEGER NOT NULL CHECK (amount >= 0),
                status TEXT NOT NULL CHECK (status IN ('open', 'paid', 'cancelled', 'blocked')),
                file_id INTEGER NOT NULL REFERENCES files (file_id),
                file_order TEXT NOT NULL,
                row_no INTEGER NOT NULL
            )""",
            "CREATE INDEX bills_account ON bills (account)",
            """CREATE TABLE allocations (
                payment_id TEXT NOT NULL,
                bill_id TEXT NOT NULL,
                PRIMARY KEY (payment_id, bill_id)
            )""",
        ],
    ),
]
SCHEMA_VERSION = _MIGRATIONS[-1][0]


#: The connector's names for the port's inbox results (kept for its callers).
LoadOutcome = InboxOutcome
LoadResult = InboxFile


@dataclass(slots=True)
class _StoredBill:
    bill_id: str
    account: str
    period: str
    due_date: date
    amount: int
    status: BillStatus
    order: tuple[str, int]  # (file_order, row_no): which row wrote it


@dataclass(slots=True)
class _Account:
    customer_name: str
    name_order: tuple[str, int]
    bill_ids: set[str] = field(default_factory=set)


_Content = tuple[str, str | None, int, date, str, str, str]


@dataclass(slots=True)
class _Posting:
    content: _Content
    receipt: str
    bills: tuple[str, ...]
    cancelled: bool = False


@dataclass(slots=True)
class _Index:
    bills: dict[str, _StoredBill] = field(default_factory=dict)
    accounts: dict[str, _Account] = field(default_factory=dict)

    def put(self, account: str, name: str, bill: _StoredBill) -> bool:
        """Apply one row unless a newer row already set this bill; True if applied."""
        old = self.bills.get(bill.bill_id)
        if old is not None:
            if old.order[0] > bill.order[0]:
                return False
            if old.account != account:
                self.accounts[old.account].bill_ids.discard(bill.bill_id)
        self.bills[bill.bill_id] = bill
        acc = self.accounts.get(account)
        if acc is None:
            acc = self.accounts[account] = _Account(name, bill.order)
        elif bill.order >= acc.name_order:
            acc.customer_name, acc.name_order = name, bill.order
        acc.bill_ids.add(bill.bill_id)
        return True


@dataclass(slots=True)
class _FileDone:
    """What the worker thread did with one file; the loop then updates the index."""

    outcome: LoadOutcome
    path: Path
    rows: list[BillRow] = field(default_factory=list)
    file_order: str = ""
    row: int | None = None
    reason: str | None = None


def _file_order(day: date, seq: int) -> str:
    return f"{day:%Y%m%d}-{seq:09d}"


def _sort_key(bill: _StoredBill) -> tuple[str, date, str]:
    return (bill.period, bill.due_date, bill.bill_id)


class BatchConnector:
    """One file-exchange biller: a :class:`~billhub.pipeline.ports.Biller` over its own store.

    ``payments_by_id`` finds the payment of a reversal booked on a later date than the
    payment was settled (the journal's ``get_payment_by_id``); without it,
    :meth:`write_payments_file` uses the ledger's own ``get_payment_by_id`` if it has one.
    """

    status_is_authoritative = True
    exchanges_files = True

    def __init__(
        self,
        code: str,
        settings: BatchSettings,
        state_dir: Path,
        *,
        today: Callable[[], date],
        payments_by_id: PaymentLookup | None = None,
    ) -> None:
        if not _CODE_RE.fullmatch(code):
            raise ValueError("a batch biller code must be 1-20 ASCII letters or digits")
        self.code = code
        self.settings = settings
        self.db_path = Path(state_dir) / f"batch-{code}.db"
        self._today = today
        self._payments_by_id = payments_by_id
        self._conn: sqlite3.Connection | None = None
        self._index = _Index()
        self._paid_by: dict[str, str] = {}  # bill_id -> payment_id
        self._payments: dict[str, _Posting] = {}
        self._unwritten: dict[str, tuple[str, ...]] = {}  # allocations not yet in the file
        self._started = False
        self._closed = False
        self._db_lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: What the last :meth:`start` could not rebuild exactly (no account numbers).
        self.rebuild_warnings: list[str] = []

    # -- life cycle ---------------------------------------------------------------------

    async def start(self, ledger: PaymentsLedger) -> None:
        """Open (or create) the store, build the index, re-mark the held payments.

        Raises :class:`BillerUnavailable` if the store cannot be opened or is of a newer
        schema; whatever ``ledger.held_payments`` raises (the connector stays unstarted).
        """
        if self._started or self._closed:
            raise BillerUnavailable("batch connector already started or closed")
        index, memo = await self._in_thread(self._open_sync)
        try:
            held = await ledger.held_payments(self.code)
        except BaseException:
            await self._in_thread(self._close_sync)
            raise
        self._index = index
        self._paid_by.clear()
        self._payments.clear()
        self.rebuild_warnings = []
        for record in held:
            self._hold(record, memo)
        self._started = True
        await self._write_allocations()

    async def close(self) -> None:
        """Write the pending allocations and close the store; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._write_allocations()
        finally:
            await self._in_thread(self._close_sync)

    # -- the Biller port ----------------------------------------------------------------

    async def open_bills(self, account: str) -> AccountBills:
        """The account's open bills, oldest first (period, due date, bill id).

        Raises ``BillerRejected("unknown_account")`` for an account no file named.
        """
        self._check_ready()
        acc = self._account(account)
        if self._blocked(acc):
            return AccountBills(
                account, acc.customer_name, AccountStatus.BLOCKED, False, 0, bills=()
            )
        bills = tuple(Bill(b.bill_id, b.period, b.due_date, b.amount) for b in self._open_of(acc))
        return AccountBills(account, acc.customer_name, AccountStatus.ACTIVE, False, 0, bills)

    async def post_payment(self, order: PaymentOrder) -> str:
        """Mark the bills paid (in memory) and return the receipt; idempotent on the id.

        Refusals, checked in this order: ``payment_id_conflict`` (the id was used with
        other content), ``payment_cancelled``, ``unknown_account``, ``account_blocked``,
        ``bill_not_open`` (with a bill id: not open or not this account's),
        ``nothing_due`` (without), ``amount_not_acceptable`` (not exactly the bill's
        amount, or the total of all open bills).
        """
        self._check_ready()
        content = _order_content(order)
        existing = self._payments.get(order.payment_id)
        if existing is not None:
            if existing.content != content:
                raise BillerRejected("payment_id_conflict", "payment id used with other content")
            if existing.cancelled:
                raise BillerRejected("payment_cancelled", "payment was cancelled")
            return existing.receipt
        acc = self._account(order.account)
        if self._blocked(acc):
            raise BillerRejected("account_blocked", "account is blocked")
        if order.bill_id is not None:
            bill = self._index.bills.get(order.bill_id)
            if bill is None or bill.account != order.account or not self._is_open(bill):
                raise BillerRejected("bill_not_open", "bill is paid or not this account's")
            targets = [bill]
        else:
            targets = self._open_of(acc)
            if not targets:
                raise BillerRejected("nothing_due", "nothing left to pay")
        if order.amount != sum(b.amount for b in targets):
            raise BillerRejected("amount_not_acceptable", "amount must be the amount due")
        bill_ids = tuple(b.bill_id for b in targets)
        posting = _Posting(content, self.receipt_for(order.payment_id), bill_ids)
        self._payments[order.payment_id] = posting
        for bill_id in bill_ids:
            self._paid_by[bill_id] = order.payment_id
        if order.bill_id is None:
            self._unwritten[order.payment_id] = bill_ids
        return posting.receipt

    async def cancel_payment(self, payment_id: str) -> None:
        """Reopen the payment's bills; idempotent. ``unknown_payment`` if never posted
        (or, after a restart, not held)."""
        self._check_ready()
        posting = self._payments.get(payment_id)
        if posting is None:
            raise BillerRejected("unknown_payment", "payment never posted")
        if posting.cancelled:
            return
        posting.cancelled = True
        for bill_id in posting.bills:
            if self._paid_by.get(bill_id) == payment_id:
                del self._paid_by[bill_id]
        self._unwritten.pop(payment_id, None)

    async def payment_status(self, payment_id: str) -> StatusAnswer:
        """Posted or cancelled with its receipt, or unknown (final: see the module doc)."""
        self._check_ready()
        posting = self._payments.get(payment_id)
        if posting is None:
            return StatusAnswer(PostingStatus.UNKNOWN)
        status = PostingStatus.CANCELLED if posting.cancelled else PostingStatus.POSTED
        return StatusAnswer(status, posting.receipt)

    def receipt_for(self, payment_id: str) -> str:
        """The receipt of a payment: ``B`` + 15 base-36 digits of a digest of the biller
        code and payment id, so a repeat, or a restart, gives the same one."""
        digest = hashlib.sha256(f"{self.code}\x00{payment_id}".encode()).digest()
        n = int.from_bytes(digest[:12], "big")
        digits = []
        for _ in range(_RECEIPT_DIGITS):
            n, d = divmod(n, 36)
            digits.append(_B36[d])
        return "B" + "".join(digits)

    # -- the life cycle of the port: poll the inbox, close a day ------------------------

    async def poll(self) -> list[LoadResult]:
        """The port's poll: :meth:`load_inbox`."""
        return await self.load_inbox()

    async def close_day(self, dates: Sequence[date], ledger: PaymentsLedger) -> list[DayFile]:
        """The port's close of day: a payments file for each closed date, in order."""
        return [
            DayFile(self.code, d, await self.write_payments_file(d, ledger)) for d in dates
        ]

    # -- bills files --------------------------------------------------------------------

    async def load_inbox(self) -> list[LoadResult]:
        """Load every bills file of this biller in the inbox, in name order (day, then
        seq). One result per file: loaded, duplicate, rejected, or ignored (a name
        that is not ``bills-<code>-<YYYYMMDD>-<seq>.csv``; hidden files are skipped).

        Raises :class:`BillerUnavailable` if the inbox is missing or a file or the store
        fails; the files before it are loaded, it and those after it are left.
        """
        self._check_ready()
        return await self._shielded(self._load_inbox())

    async def _load_inbox(self) -> list[LoadResult]:
        async with self._load_lock:
            candidates, ignored = await asyncio.to_thread(self._scan_inbox)
            results: list[LoadResult] = []
            for path in candidates:
                results.append(await self._load_one(path))
            # Payments taken while a file was committing: write theirs now too.
            await self._write_allocations()
            results += [
                LoadResult(
                    name,
                    LoadOutcome.IGNORED,
                    reason=f"not named bills-{self.code}-<YYYYMMDD>-<seq>.csv",
                    path=self.settings.inbox / name,
                )
                for name in ignored
            ]
            return results

    async def _load_one(self, path: Path) -> LoadResult:
        pending = dict(self._unwritten)
        async with self._db_lock:
            if self._conn is None:
                raise BillerUnavailable("batch store is closed")
            done = await asyncio.to_thread(self._load_file_sync, self._conn, path, pending)
        if done.outcome is not LoadOutcome.LOADED:
            return LoadResult(
                path.name, done.outcome, row=done.row, reason=done.reason, path=done.path
            )
        self._forget_written(pending)
        conflicts: list[str] = []
        stale: list[str] = []
        for r in done.rows:
            stored = _StoredBill(
                r.bill_id,
                r.account,
                r.period,
                r.due_date,
                r.amount,
                r.status,
                (done.file_order, r.row),
            )
            if not self._index.put(r.account, r.customer_name, stored):
                stale.append(r.bill_id)
            elif r.bill_id in self._paid_by and r.status != "paid":
                conflicts.append(r.bill_id)
        return LoadResult(
            path.name,
            LoadOutcome.LOADED,
            rows=len(done.rows),
            conflicts=tuple(conflicts),
            stale=tuple(stale),
            reason=done.reason,
            path=done.path,
        )

    # -- payments files -----------------------------------------------------------------

    async def write_payments_file(self, settlement_date: date, ledger: PaymentsLedger) -> Path:
        """Write ``payments-<code>-<YYYYMMDD>.csv`` into the outbox, atomically; return it.

        Rows: one ``approved`` per ``ledger.approved_payments`` (in the ledger's order),
        then one ``reversed`` per ``ledger.reversals_booked`` on that date that names a
        payment (with the payment's fields and the reversed amount), then the trailer.
        The same ledger gives the same bytes. Raises :class:`JournalError` when a
        reversed payment cannot be found, :class:`BillerUnavailable` when the outbox
        cannot be written (no temporary file is left behind).
        """
        if self._closed:
            raise BillerUnavailable("batch connector is closed")
        approved = await ledger.approved_payments(self.code, settlement_date)
        reversals = await ledger.reversals_booked(self.code, settlement_date)
        rows: list[PaymentsFileRow] = [approved_row(p, self._receipt_of(p)) for p in approved]
        by_id = {p.payment_id: p for p in approved}
        for reversal in reversals:
            if reversal.payment_id is None:
                continue  # no original: nothing was ever paid to the biller
            payment = by_id.get(reversal.payment_id)
            if payment is None:
                payment = await self._find_payment(ledger, reversal.payment_id)
            if payment is None:
                raise JournalError("a reversed payment is missing from the journal")
            rows.append(reversed_row(payment, self._receipt_of(payment), reversal.amount))
        data = render(rows).encode("utf-8")
        target = self.settings.outbox / payments_file_name(self.code, settlement_date)
        async with self._write_lock:
            return await self._in_thread(_write_atomic, target, data)

    async def _find_payment(self, ledger: PaymentsLedger, payment_id: str) -> PaymentRecord | None:
        if self._payments_by_id is not None:
            return await self._payments_by_id(payment_id)
        return await ledger.get_payment_by_id(payment_id)

    def _receipt_of(self, payment: PaymentRecord) -> str:
        return payment.receipt or self.receipt_for(payment.payment_id)

    # -- the in-memory side -------------------------------------------------------------

    def _check_ready(self) -> None:
        if not self._started or self._closed:
            raise BillerUnavailable("batch connector is not started")

    def _account(self, account: str) -> _Account:
        acc = self._index.accounts.get(account)
        if acc is None:
            raise BillerRejected("unknown_account", "no such account")
        return acc

    def _blocked(self, acc: _Account) -> bool:
        return any(self._index.bills[b].status == "blocked" for b in acc.bill_ids)

    def _is_open(self, bill: _StoredBill) -> bool:
        return bill.status == "open" and bill.bill_id not in self._paid_by

    def _open_of(self, acc: _Account) -> list[_StoredBill]:
        bills = (self._index.bills[b] for b in acc.bill_ids)
        return sorted((b for b in bills if self._is_open(b)), key=_sort_key)

    def _hold(self, record: PaymentRecord, memo: dict[str, tuple[str, ...]]) -> None:
        """Re-mark the bills of one held payment (at start, oldest payment first)."""
        if record.payment_id in self._payments:
            return
        bills = self._allocation_of(record, memo)
        for bill_id in bills:
            if bill_id in self._paid_by:
                self.rebuild_warnings.append(
                    f"bill {bill_id} is held by two payments: "
                    f"{self._paid_by[bill_id]} and {record.payment_id}"
                )
            self._paid_by[bill_id] = record.payment_id
        self._payments[record.payment_id] = _Posting(
            _record_content(record), self._receipt_of(record), bills
        )
        if record.bill_id is None and bills and record.payment_id not in memo:
            self._unwritten[record.payment_id] = bills

    def _allocation_of(
        self, record: PaymentRecord, memo: dict[str, tuple[str, ...]]
    ) -> tuple[str, ...]:
        written = memo.get(record.payment_id)
        if written is not None:
            return tuple(b for b in written if b in self._index.bills)
        if record.bill_id is not None:
            if record.bill_id in self._index.bills:
                return (record.bill_id,)
            self.rebuild_warnings.append(
                f"payment {record.payment_id}: its bill is not in the store"
            )
            return ()
        acc = self._index.accounts.get(record.account)
        running = 0
        taken: list[str] = []
        for bill in self._open_of(acc) if acc is not None else []:
            running += bill.amount
            taken.append(bill.bill_id)
            if running >= record.amount:
                break
        if taken and running == record.amount:
            return tuple(taken)
        self.rebuild_warnings.append(
            f"payment {record.payment_id}: no open bills of its account add up to its amount"
        )
        return ()

    # -- the blocking side (runs in a worker thread) ------------------------------------

    async def _in_thread(self, func: Callable[..., T], *args: object) -> T:
        async def run() -> T:
            async with self._db_lock:
                return await asyncio.to_thread(func, *args)

        return await self._shielded(run())

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as a task the caller's cancellation does not interrupt: a thread
        cannot be stopped halfway, so what it commits must reach the index."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    async def _write_allocations(self) -> None:
        """Write the allocations of payments without a bill id that are not in the file."""
        if not self._unwritten or self._conn is None:
            return
        pending = dict(self._unwritten)
        await self._in_thread(self._write_allocations_sync, pending)
        self._forget_written(pending)

    def _forget_written(self, written: dict[str, tuple[str, ...]]) -> None:
        for payment_id, bill_ids in written.items():
            if self._unwritten.get(payment_id) == bill_ids:
                del self._unwritten[payment_id]

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that was cancelled cannot see it

    def _open_sync(self) -> tuple[_Index, dict[str, tuple[str, ...]]]:
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise BillerUnavailable(f"cannot open batch store {self.db_path}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate(conn)
            index = _Index()
            for row in conn.execute(
                "SELECT bill_id, account, customer_name, period, due_date, amount, status, "
                "file_order, row_no FROM bills ORDER BY file_order, row_no"
            ):
                bill_id, account, name, period, due, amount, status, order, row_no = row
                index.put(
                    account,
                    name,
                    _StoredBill(
                        bill_id,
                        account,
                        period,
                        date.fromisoformat(due),
                        int(amount),
                        _STATUSES[status],
                        (order, int(row_no)),
                    ),
                )
            memo: dict[str, list[str]] = {}
            for payment_id, bill_id in conn.execute(
                "SELECT payment_id, bill_id FROM allocations ORDER BY payment_id, bill_id"
            ):
                memo.setdefault(payment_id, []).append(bill_id)
        except (sqlite3.Error, OSError, ValueError, KeyError) as exc:
            conn.close()
            raise BillerUnavailable(f"cannot open batch store {self.db_path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return index, {k: tuple(v) for k, v in memo.items()}

    def _migrate(self, conn: sqlite3.Connection) -> None:
        try:
            migrate(conn, _MIGRATIONS, self._today().isoformat())
        except SchemaTooNew as exc:
            raise BillerUnavailable(f"batch store {self.db_path}: {exc}") from None

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _write_allocations_sync(self, pending: dict[str, tuple[str, ...]]) -> None:
        if self._conn is None:
            raise BillerUnavailable("batch store is closed")
        try:
            _insert_allocations(self._conn, pending)
        except sqlite3.Error as exc:
            raise BillerUnavailable(f"cannot write batch store: {exc}") from None

    def _scan_inbox(self) -> tuple[list[Path], list[str]]:
        inbox = self.settings.inbox
        try:
            entries = [e for e in os.scandir(inbox) if e.is_file() and not e.name.startswith(".")]
        except OSError as exc:
            raise BillerUnavailable(f"cannot read batch inbox {inbox}: {exc}") from None
        ours: list[tuple[tuple[date, int], str]] = []
        ignored: list[str] = []
        for entry in entries:
            parsed = parse_bills_file_name(entry.name)
            if parsed is None or parsed.biller != self.code:
                ignored.append(entry.name)
            else:
                ours.append((parsed.order, entry.name))
        ours.sort()
        return [inbox / name for _, name in ours], sorted(ignored)

    def _load_file_sync(
        self, conn: sqlite3.Connection, path: Path, pending: dict[str, tuple[str, ...]]
    ) -> _FileDone:
        inbox = self.settings.inbox
        parsed = parse_bills_file_name(path.name)
        assert parsed is not None
        order = _file_order(parsed.day, parsed.seq)
        try:
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            seen = conn.execute(
                "SELECT name FROM files WHERE name = ? OR sha256 = ? ORDER BY file_id LIMIT 1",
                (path.name, sha),
            ).fetchone()
            if seen is not None:
                moved = _move_unique(path, inbox / "loaded")
                return _FileDone(
                    LoadOutcome.DUPLICATE, moved, reason=f"already loaded as {seen[0]}"
                )
            try:
                rows = parse_bills_file(data)
            except BillsFileError as exc:
                moved = _move_unique(path, inbox / "rejected", reason=f"{exc}\n")
                return _FileDone(LoadOutcome.REJECTED, moved, row=exc.row, reason=exc.reason)
            conn.execute("BEGIN IMMEDIATE")
            try:
                _insert_allocations(conn, pending, transaction=False)
                file_id = conn.execute(
                    "INSERT INTO files (name, sha256, file_order, row_count, loaded_on) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (path.name, sha, order, len(rows), self._today().isoformat()),
                ).lastrowid
                conn.executemany(
                    "INSERT INTO bills (bill_id, account, customer_name, period, due_date, "
                    "amount, status, file_id, file_order, row_no) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (bill_id) DO UPDATE SET account = excluded.account, "
                    "customer_name = excluded.customer_name, period = excluded.period, "
                    "due_date = excluded.due_date, amount = excluded.amount, "
                    "status = excluded.status, file_id = excluded.file_id, "
                    "file_order = excluded.file_order, row_no = excluded.row_no "
                    "WHERE excluded.file_order >= bills.file_order",
                    [
                        (
                            r.bill_id,
                            r.account,
                            r.customer_name,
                            r.period,
                            r.due_date.isoformat(),
                            r.amount,
                            r.status,
                            file_id,
                            order,
                            r.row,
                        )
                        for r in rows
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except sqlite3.Error as exc:
            raise BillerUnavailable(f"batch store failed loading {path.name}: {exc}") from None
        except OSError as exc:
            raise BillerUnavailable(f"cannot load {path.name}: {exc}") from None
        # Committed: the index must now learn the rows whatever happens to the file.
        try:
            moved = _move_unique(path, inbox / "loaded")
        except OSError as exc:
            return _FileDone(
                LoadOutcome.LOADED,
                path,
                rows,
                order,
                reason=f"loaded, but not moved to loaded/ ({exc.__class__.__name__})",
            )
        return _FileDone(LoadOutcome.LOADED, moved, rows, order)


def _order_content(order: PaymentOrder) -> _Content:
    return (
        order.account,
        order.bill_id,
        order.amount,
        order.settlement_date,
        order.acquirer,
        order.rrn,
        order.channel,
    )


def _record_content(record: PaymentRecord) -> _Content:
    """What the pipeline put into the order of this payment (see ``PipelineService._post``)."""
    return (
        record.account,
        record.bill_id,
        record.amount,
        record.settlement_date,
        record.key.acquirer,
        record.key.rrn.strip(),
        record.channel,
    )


def _insert_allocations(
    conn: sqlite3.Connection,
    allocations: dict[str, tuple[str, ...]],
    *,
    transaction: bool = True,
) -> None:
    pairs = [(p, b) for p, bills in allocations.items() for b in bills]
    if not pairs:
        return
    sql = "INSERT OR IGNORE INTO allocations (payment_id, bill_id) VALUES (?, ?)"
    if not transaction:
        conn.executemany(sql, pairs)
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(sql, pairs)
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def _move_unique(src: Path, directory: Path, *, reason: str | None = None) -> Path:
    """Move ``src`` into ``directory`` without overwriting a different file there.

    The same bytes already there: ``src`` is just removed. Another file of that name:
    ``<name>.1``, ``<name>.2``... With ``reason``, ``<final name>.reason`` is written
    first (atomically), so a rejected file is never without its reason.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / src.name
    n = 0
    while target.exists():
        if reason is None and target.read_bytes() == src.read_bytes():
            src.unlink()
            return target
        n += 1
        target = directory / f"{src.name}.{n}"
    if reason is not None:
        note = target.with_name(target.name + ".reason")
        tmp = note.with_name(f".{note.name}.tmp")
        tmp.write_text(reason, encoding="utf-8")
        tmp.replace(note)
    src.rename(target)
    return target


def _write_atomic(target: Path, data: bytes) -> Path:
    """Write ``data`` to a hidden temporary name beside ``target``, fsync, rename, fsync
    the directory. Nothing is left behind on failure."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise BillerUnavailable(f"cannot write {target.name}: {exc}") from None
    return target
