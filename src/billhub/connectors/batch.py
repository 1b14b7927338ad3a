"""The batch (file exchange) connector: BILLERS.md section 3.

For a company whose system cannot answer online, the hub keeps the bills itself.
Where each piece of state lives, and why:

* **Bills** live in the journal's database (the :class:`~billhub.pipeline.ports.BillsStore`
  port: SQLite beside the journal, or the PostgreSQL that several hub instances
  share), with the registry of loaded files (name and sha256). Loading a bills file
  is one transaction, so a file is loaded whole, once, whichever instance sees it
  first.
* **Inquiries and payments** are answered from an index in memory (account ->
  bills), built from the store's view at :meth:`BatchConnector.start` and kept up
  to date by following the store's change feed (:meth:`BatchConnector.follow`,
  every second and after each load); they cost no I/O.
* **Payments** take bills in memory first; the pipeline then writes the payment
  with the bills it took (:meth:`BatchConnector.bills_taken`) in one journal
  commit, which refuses (``BillTaken``) a bill that another payment, on any
  instance, holds. A payment the journal never approved holds nothing, after a
  crash as before, which is why ``status_is_authoritative`` is true. An approved
  reversal releases its payment's bills in the same commit as the reversal.

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
before :meth:`start`, after :meth:`close`, or when the store cannot be read). The
file work of :meth:`load_inbox` and :meth:`write_payments_file` raises
:class:`~billhub.errors.BillerUnavailable` for an ``OSError`` or a store that cannot
write; ``write_payments_file`` raises :class:`~billhub.errors.JournalError` when a
reversed payment cannot be found. A load runs as a task the caller's cancellation
does not interrupt (a committed load always reaches the index).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TextIO, TypeVar

from billhub.config import BatchSettings
from billhub.connectors.billsfile import BillsFileError, parse_bills_file, parse_bills_file_name
from billhub.connectors.paymentsfile import (
    PaymentsFileWriter,
    payments_file_name,
)
from billhub.errors import BillerRejected, BillerUnavailable, JournalError
from billhub.pipeline.model import (
    AccountBills,
    AccountStatus,
    Bill,
    BillsChanges,
    Claim,
    DayFile,
    InboxFile,
    InboxOutcome,
    PaymentOrder,
    PostingStatus,
    StatusAnswer,
    StoredBill,
)
from billhub.pipeline.ports import BillsStore, PaymentsLedger

__all__ = ["BatchConnector", "LoadOutcome", "LoadResult"]

T = TypeVar("T")

_CODE_RE = re.compile(r"[A-Za-z0-9]{1,20}")
_RECEIPT_DIGITS = 15  # "B" + 15 base-36 digits: 16 characters, about 77 bits
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: How often the store's change feed is read: what other instances took, released
#: or loaded reaches this one's answers within about this long. (Two instances can
#: never both take a bill: the journal's commit refuses the second.)
FOLLOW_INTERVAL_S = 1.0

#: The connector's names for the port's inbox results (kept for its callers).
LoadOutcome = InboxOutcome
LoadResult = InboxFile


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
    bills: dict[str, StoredBill] = field(default_factory=dict)
    accounts: dict[str, _Account] = field(default_factory=dict)

    def name(self, account: str, name: str, order: tuple[str, int]) -> None:
        acc = self.accounts.get(account)
        if acc is None:
            self.accounts[account] = _Account(name, order)
        elif order >= acc.name_order:
            acc.customer_name, acc.name_order = name, order

    def put(self, bill: StoredBill) -> None:
        """Apply one row as the store holds it now (the store keeps the newest file's
        row). Only bills that may still be paid stay in memory: a paid or cancelled
        one is forgotten, its account's name kept."""
        self.drop(bill.bill_id)
        self.name(bill.account, bill.customer_name, bill.order)
        if bill.status in ("open", "blocked"):
            self.bills[bill.bill_id] = bill
            self.accounts[bill.account].bill_ids.add(bill.bill_id)

    def drop(self, bill_id: str) -> None:
        old = self.bills.pop(bill_id, None)
        if old is not None:
            self.accounts[old.account].bill_ids.discard(bill_id)


def _file_order(day: date, seq: int) -> str:
    return f"{day:%Y%m%d}-{seq:09d}"


def _sort_key(bill: StoredBill) -> tuple[str, date, str]:
    return (bill.period, bill.due_date, bill.bill_id)


class BatchConnector:
    """One file-exchange biller: a :class:`~billhub.pipeline.ports.Biller` over the
    hub's own store of its bills.

    ``follow_interval`` is how often the store's change feed is read (0: only on
    :meth:`poll`, after a load and after a cancel).
    """

    status_is_authoritative = True
    exchanges_files = True

    def __init__(
        self,
        code: str,
        settings: BatchSettings,
        store: BillsStore,
        *,
        today: Callable[[], date],
        follow_interval: float = FOLLOW_INTERVAL_S,
    ) -> None:
        if not _CODE_RE.fullmatch(code):
            raise ValueError("a batch biller code must be 1-20 ASCII letters or digits")
        self.code = code
        self.settings = settings
        self.store = store
        self._today = today
        self._follow_interval = follow_interval
        self._index = _Index()
        self._taken: dict[str, str] = {}  # bill_id -> payment_id, of any instance
        self._payments: dict[str, _Posting] = {}  # postings this process made
        self._cursor = 0
        self._started = False
        self._closed = False
        self._follow_lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._follower: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------------

    async def start(self, ledger: PaymentsLedger) -> None:
        """Build the index from the store's view: open and blocked bills no payment
        holds, and every account's name. Needs nothing from ``ledger``: what payments
        hold is in the store, written with the payments.

        Raises :class:`BillerUnavailable` if the store cannot be read.
        """
        if self._started or self._closed:
            raise BillerUnavailable("batch connector already started or closed")
        try:
            view = await self.store.view(self.code)
        except JournalError as exc:
            raise BillerUnavailable(f"cannot read the bills of {self.code}: {exc}") from None
        index = _Index()
        for account, name, order in view.names:
            index.name(account, name, order)
        for bill in view.bills:
            index.put(bill)
        self._index, self._cursor = index, view.cursor
        self._taken.clear()
        self._payments.clear()
        self._started = True
        if self._follow_interval > 0:
            self._follower = asyncio.get_running_loop().create_task(self._follow_periodically())

    async def close(self) -> None:
        """Stop following the store; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def follow(self) -> None:
        """Learn from the store's change feed what changed since the last look: bills
        set by files loaded (by any instance), bills taken or released by payments."""
        async with self._follow_lock:
            try:
                changes = await self.store.changes(self.code, self._cursor)
            except JournalError as exc:
                raise BillerUnavailable(f"cannot read the bills of {self.code}: {exc}") from None
            self._apply(changes)

    def _apply(self, changes: BillsChanges) -> None:
        """Bills set by files are put as the store has them; a bill a payment took
        (durably, on any instance) leaves memory, and so does this process's posting
        of it, so memory holds what may still be paid, not the day's payments; a
        released bill comes back with its row."""
        for bill in changes.bills:
            self._index.put(bill)
        for claim in changes.claims:
            if claim.active:
                self._index.drop(claim.bill_id)
                if self._taken.get(claim.bill_id) == claim.payment_id:
                    del self._taken[claim.bill_id]
                posting = self._payments.get(claim.payment_id)
                if posting is not None and not posting.cancelled:
                    del self._payments[claim.payment_id]
            elif self._taken.get(claim.bill_id) == claim.payment_id:
                del self._taken[claim.bill_id]
        self._cursor = max(self._cursor, changes.cursor)

    async def _follow_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._follow_interval)
            with contextlib.suppress(BillerUnavailable):  # the store is back next time
                await self.follow()

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
        """Take the bills (in memory) and return the receipt; idempotent on the id.

        The journal makes the taking durable, or refuses it, when it writes the
        payment with :meth:`bills_taken`. Refusals, checked in this order:
        ``payment_id_conflict`` (the id was used with other content),
        ``payment_cancelled``, ``unknown_account``, ``account_blocked``,
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
                return await self._posted_before(order, "bill_not_open", "bill is paid")
            targets = [bill]
        else:
            targets = self._open_of(acc)
            if not targets:
                return await self._posted_before(order, "nothing_due", "nothing left to pay")
        if order.amount != sum(b.amount for b in targets):
            raise BillerRejected("amount_not_acceptable", "amount must be the amount due")
        bill_ids = tuple(b.bill_id for b in targets)
        posting = _Posting(content, self.receipt_for(order.payment_id), bill_ids)
        self._payments[order.payment_id] = posting
        for bill_id in bill_ids:
            self._taken[bill_id] = order.payment_id
        return posting.receipt

    async def _posted_before(self, order: PaymentOrder, code: str, message: str) -> str:
        """A payment whose bills are taken may be this very payment, posted by an
        earlier run or another instance: then it is a repeat, with the same receipt."""
        if any(k.active for k in await self._claims_of(order.payment_id)):
            return self.receipt_for(order.payment_id)
        raise BillerRejected(code, message)

    def bills_taken(self, payment_id: str) -> tuple[str, ...]:
        """The bills :meth:`post_payment` took for this payment (for the journal)."""
        posting = self._payments.get(payment_id)
        return () if posting is None or posting.cancelled else posting.bills

    async def cancel_payment(self, payment_id: str) -> None:
        """Reopen the payment's bills; idempotent. ``unknown_payment`` if it never took
        any (on any instance). A payment of another instance, or of an earlier run, is
        found in the store; its bills come back through the change feed."""
        self._check_ready()
        posting = self._payments.get(payment_id)
        if posting is None:
            claims = await self._claims_of(payment_id)
            if not claims:
                raise BillerRejected("unknown_payment", "payment never posted")
            bills: tuple[str, ...] = tuple(k.bill_id for k in claims)
        elif posting.cancelled:
            return
        else:
            posting.cancelled = True
            bills = posting.bills
        for bill_id in bills:
            if self._taken.get(bill_id) == payment_id:
                del self._taken[bill_id]
        with contextlib.suppress(BillerUnavailable):  # the follower catches up later
            await self.follow()

    async def payment_status(self, payment_id: str) -> StatusAnswer:
        """Posted or cancelled with its receipt, or unknown (final: see the module doc)."""
        self._check_ready()
        posting = self._payments.get(payment_id)
        if posting is not None:
            status = PostingStatus.CANCELLED if posting.cancelled else PostingStatus.POSTED
            return StatusAnswer(status, posting.receipt)
        claims = await self._claims_of(payment_id)
        if not claims:
            return StatusAnswer(PostingStatus.UNKNOWN)
        active = any(k.active for k in claims)
        status = PostingStatus.POSTED if active else PostingStatus.CANCELLED
        return StatusAnswer(status, self.receipt_for(payment_id))

    async def _claims_of(self, payment_id: str) -> list[Claim]:
        try:
            return list(await self.store.claims_of(self.code, payment_id))
        except JournalError as exc:
            raise BillerUnavailable(f"cannot read the bills of {self.code}: {exc}") from None

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
        """The port's poll: :meth:`load_inbox`, then the change feed."""
        results = await self.load_inbox()
        await self.follow()
        return results

    async def close_day(self, dates: Sequence[date], ledger: PaymentsLedger) -> list[DayFile]:
        """The port's close of day: a payments file for each closed date, in order."""
        return [DayFile(self.code, d, await self.write_payments_file(d, ledger)) for d in dates]

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
        inbox = self.settings.inbox
        parsed = parse_bills_file_name(path.name)
        assert parsed is not None
        order = _file_order(parsed.day, parsed.seq)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:  # another instance took it in meanwhile
            return LoadResult(path.name, LoadOutcome.DUPLICATE, reason="taken in by another hub")
        except OSError as exc:
            raise BillerUnavailable(f"cannot load {path.name}: {exc}") from None
        try:
            rows = parse_bills_file(data)
        except BillsFileError as exc:
            moved = await self._move(path, inbox / "rejected", reason=f"{exc}\n")
            return LoadResult(
                path.name, LoadOutcome.REJECTED, row=exc.row, reason=exc.reason, path=moved
            )
        try:
            done = await self.store.load_file(
                self.code,
                name=path.name,
                sha256=hashlib.sha256(data).hexdigest(),
                file_order=order,
                rows=rows,
                loaded_on=self._today(),
            )
        except JournalError as exc:
            raise BillerUnavailable(f"batch store failed loading {path.name}: {exc}") from None
        if done.duplicate_of is not None:
            moved = await self._move(path, inbox / "loaded")
            return LoadResult(
                path.name,
                LoadOutcome.DUPLICATE,
                reason=f"already loaded as {done.duplicate_of}",
                path=moved,
            )
        # Committed: the index learns the rows whatever happens to the file.
        with contextlib.suppress(BillerUnavailable):  # the follower catches up later
            await self.follow()
        stale = set(done.stale)
        in_memory = (
            r.bill_id
            for r in rows
            if r.bill_id not in stale and r.bill_id in self._taken and r.status != "paid"
        )
        conflicts = tuple(sorted(set(done.conflicts) | set(in_memory)))
        reason = None
        try:
            moved = await self._move(path, inbox / "loaded")
        except BillerUnavailable as exc:
            moved, reason = path, f"loaded, but not moved to loaded/ ({exc})"
        return LoadResult(
            path.name,
            LoadOutcome.LOADED,
            rows=len(rows),
            conflicts=conflicts,
            stale=tuple(done.stale),
            reason=reason,
            path=moved,
        )

    async def _move(self, path: Path, directory: Path, *, reason: str | None = None) -> Path:
        try:
            return await asyncio.to_thread(_move_unique, path, directory, reason=reason)
        except FileNotFoundError:  # another instance moved it meanwhile
            return directory / path.name
        except OSError as exc:
            raise BillerUnavailable(f"cannot move {path.name}: {exc.strerror}") from None

    # -- payments files -----------------------------------------------------------------

    async def write_payments_file(self, settlement_date: date, ledger: PaymentsLedger) -> Path:
        """Write ``payments-<code>-<YYYYMMDD>.csv`` into the outbox, atomically; return it.

        Rows: one ``approved`` per payment approved for the date, in journal order,
        then one ``reversed`` per ``00`` reversal booked on the date (with the
        payment's fields and the reversed amount), then the trailer; streamed from
        the journal page by page, so the file's size, not memory, grows with the
        day. The same journal gives the same bytes. Raises :class:`JournalError`
        when a reversed payment cannot be found, :class:`BillerUnavailable` when the
        outbox cannot be written (no temporary file is left behind).
        """
        if self._closed:
            raise BillerUnavailable("batch connector is closed")
        target = self.settings.outbox / payments_file_name(self.code, settlement_date)
        async with self._write_lock:
            return await self._shielded(self._write_file(target, settlement_date, ledger))

    async def _write_file(self, target: Path, day: date, ledger: PaymentsLedger) -> Path:
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            fh = await asyncio.to_thread(_open_new, tmp)
        except OSError as exc:
            raise BillerUnavailable(f"cannot write {target.name}: {exc.strerror}") from None
        try:
            writer = PaymentsFileWriter(fh)
            async for page in ledger.payments_file_entries(self.code, day):
                await asyncio.to_thread(writer.entries, page, self.receipt_for)
            await asyncio.to_thread(_finish, fh, writer, tmp, target)
        except OSError as exc:
            _discard(fh, tmp)
            raise BillerUnavailable(f"cannot write {target.name}: {exc.strerror}") from None
        except BaseException:
            _discard(fh, tmp)
            raise
        return target

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

    def _is_open(self, bill: StoredBill) -> bool:
        return bill.status == "open" and bill.bill_id not in self._taken

    def _open_of(self, acc: _Account) -> list[StoredBill]:
        bills = (self._index.bills[b] for b in acc.bill_ids)
        return sorted((b for b in bills if self._is_open(b)), key=_sort_key)

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as a task the caller's cancellation does not interrupt: a load
        cannot be stopped halfway, so what it commits must reach the index."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that was cancelled cannot see it

    def _scan_inbox(self) -> tuple[list[Path], list[str]]:
        inbox = self.settings.inbox
        try:
            entries = [e for e in os.scandir(inbox) if e.is_file() and not e.name.startswith(".")]
        except OSError as exc:
            raise BillerUnavailable(
                f"biller {self.code}: cannot read its batch inbox {inbox}: {exc.strerror or exc}"
            ) from None
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


def _open_new(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8", newline="")


def _finish(fh: TextIO, writer: PaymentsFileWriter, tmp: Path, target: Path) -> None:
    """Trailer, fsync, rename over ``target``, fsync the folder: the file is whole or
    not there."""
    writer.trailer()
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    tmp.replace(target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(fh: TextIO, tmp: Path) -> None:
    with contextlib.suppress(OSError):
        fh.close()
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
