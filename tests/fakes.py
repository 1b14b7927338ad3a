"""In-memory stand-ins for the edges a test is not about: a biller, a clock, identifiers.

Each fake keeps the port's contract (the same refusals, idempotency and errors as
the real adapters), so a test of the pipeline that passes here tells the truth
about the pipeline; the adapters are tested against the same contracts elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from billhub.errors import BillerRejected, BillerTimeout, BillerUnavailable
from billhub.pipeline.model import (
    AccountBills,
    AccountStatus,
    Bill,
    DayFile,
    InboxFile,
    PaymentOrder,
    PostingStatus,
    StatusAnswer,
)
from billhub.pipeline.ports import PaymentsLedger


class ManualClock:
    """A clock that moves only when told: ``advance(seconds)``."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


class FixedIds:
    """Payment ids ``P1, P2, ...`` and approval codes ``A00001, ...``: deterministic.
    ``prefix`` tells two hub instances' ids apart (as real ids are unique everywhere)."""

    def __init__(self, prefix: str = "P") -> None:
        self.n = 0
        self.prefix = prefix

    def payment_id(self) -> str:
        self.n += 1
        return f"{self.prefix}{self.n}"

    def approval_code(self) -> str:
        return f"A{self.n:05d}"


@dataclass
class MemoryAccount:
    account: str
    customer_name: str
    bills: list[Bill]
    status: AccountStatus = AccountStatus.ACTIVE
    partial_allowed: bool = False
    min_payment: int = 0


def memory_account(account: str, *amounts: int, name: str = "محمد الأحمد") -> MemoryAccount:
    bills = [
        Bill(f"B-{account}-{i}", f"2026{i + 1:02d}", date(2026, i + 1, 28), a)
        for i, a in enumerate(amounts)
    ]
    return MemoryAccount(account, name, bills)


@dataclass
class _Posted:
    order: PaymentOrder
    receipt: str
    #: (bill id, amount taken) in the order the bills were paid (oldest first).
    allocations: tuple[tuple[str, int], ...]
    cancelled: bool = False

    @property
    def bills(self) -> tuple[str, ...]:
        return tuple(b for b, _ in self.allocations)


def _content(o: PaymentOrder) -> tuple[object, ...]:
    """What makes two posts of one payment id "the same payment" (``paid_at`` excluded)."""
    return (o.account, o.bill_id, o.amount, o.settlement_date, o.acquirer, o.rrn, o.channel)


@dataclass
class MemoryBiller:
    """A remote biller held in memory, with the REST contract's answers (BILLERS.md 1):
    the same refusals, in the same order, partial payments where the account allows
    them (oldest bill first), and idempotency on the payment id. The biller contract
    suite (``tests/contracts/test_biller_contract.py``) runs it beside the connectors.

    ``down`` makes every call raise :class:`BillerUnavailable`. ``post_fault`` makes
    the next posts fail: ``"unavailable"`` or ``"timeout"`` before anything is posted,
    ``"lost_answer"`` after the posting is applied (the biller holds it, the hub never
    heard: a `91` for the resolver). ``posts`` counts post calls that reached it
    (repeats included), ``cancels`` the cancel calls, ``ledger`` what it holds.
    """

    code: str
    accounts: Sequence[MemoryAccount]
    down: bool = False
    post_fault: str | None = None
    status_is_authoritative: bool = False
    exchanges_files: bool = False
    posts: int = 0
    cancels: int = 0
    ledger: dict[str, _Posted] = field(default_factory=dict)

    def _check(self) -> None:
        if self.down:
            raise BillerUnavailable("biller is down")

    def _account(self, account: str) -> MemoryAccount:
        for a in self.accounts:
            if a.account == account:
                return a
        raise BillerRejected("unknown_account", "no such account")

    def _remaining(self, bill: Bill) -> int:
        taken = sum(
            amount
            for p in self.ledger.values()
            if not p.cancelled
            for bill_id, amount in p.allocations
            if bill_id == bill.bill_id
        )
        return bill.amount - taken

    def _open(self, a: MemoryAccount) -> list[Bill]:
        bills = [replace(b, amount=self._remaining(b)) for b in a.bills]
        return [b for b in bills if b.amount > 0]

    async def start(self, ledger: PaymentsLedger) -> None:
        return None

    async def poll(self) -> list[InboxFile]:
        return []

    async def close_day(self, dates: Sequence[date], ledger: PaymentsLedger) -> list[DayFile]:
        return []

    async def close(self) -> None:
        return None

    async def open_bills(self, account: str) -> AccountBills:
        self._check()
        a = self._account(account)
        min_payment = a.min_payment if a.partial_allowed else 0
        return AccountBills(
            a.account, a.customer_name, a.status, a.partial_allowed, min_payment,
            tuple(self._open(a)),
        )  # fmt: skip

    async def post_payment(self, order: PaymentOrder) -> str:
        self._check()
        fault = self.post_fault
        if fault == "unavailable":
            raise BillerUnavailable("connection refused")
        if fault == "timeout":
            raise BillerTimeout("no answer in time")
        self.posts += 1
        known = self.ledger.get(order.payment_id)
        if known is not None:
            if _content(known.order) != _content(order):
                raise BillerRejected("payment_id_conflict", "other content")
            if known.cancelled:
                raise BillerRejected("payment_cancelled", "cancelled")
            return known.receipt
        a = self._account(order.account)
        if a.status is not AccountStatus.ACTIVE:
            raise BillerRejected("account_blocked", f"account is {a.status}")
        open_bills = self._open(a)
        if order.bill_id is not None:
            targets = [b for b in open_bills if b.bill_id == order.bill_id]
            if not targets:
                raise BillerRejected("bill_not_open", "bill is paid or not this account's")
        else:
            targets = open_bills
            if not targets:
                raise BillerRejected("nothing_due", "nothing left to pay")
        due = sum(b.amount for b in targets)
        if a.partial_allowed:
            acceptable = min(a.min_payment, due) <= order.amount <= due
        else:
            acceptable = order.amount == due
        if not acceptable:
            raise BillerRejected("amount_not_acceptable", "not the amount due")
        allocations, left = [], order.amount
        for b in targets:  # oldest first
            take = min(left, b.amount)
            if take == 0:
                break
            allocations.append((b.bill_id, take))
            left -= take
        receipt = f"R{len(self.ledger) + 1:05d}"
        self.ledger[order.payment_id] = _Posted(order, receipt, tuple(allocations))
        if fault == "lost_answer":
            raise BillerTimeout("posted, but the answer was lost")
        return receipt

    def bills_taken(self, payment_id: str) -> tuple[str, ...]:
        """None: the company's system keeps its own bills."""
        return ()

    async def cancel_payment(self, payment_id: str) -> None:
        self._check()
        self.cancels += 1
        posted = self.ledger.get(payment_id)
        if posted is None:
            raise BillerRejected("unknown_payment", "never posted")
        posted.cancelled = True

    async def payment_status(self, payment_id: str) -> StatusAnswer:
        self._check()
        posted = self.ledger.get(payment_id)
        if posted is None:
            return StatusAnswer(PostingStatus.UNKNOWN)
        state = PostingStatus.CANCELLED if posted.cancelled else PostingStatus.POSTED
        return StatusAnswer(state, posted.receipt)
