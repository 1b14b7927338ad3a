"""In-memory stand-ins for the edges a test is not about: a biller, a clock, identifiers.

Each fake keeps the port's contract (the same refusals, idempotency and errors as
the real adapters), so a test of the pipeline that passes here tells the truth
about the pipeline; the adapters are tested against the same contracts elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from billhub.errors import BillerRejected, BillerUnavailable
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
    bills: tuple[str, ...]
    cancelled: bool = False


@dataclass
class MemoryBiller:
    """A remote biller held in memory, with the REST contract's answers (BILLERS.md 1).

    ``down`` makes every call raise :class:`BillerUnavailable`; ``posts`` counts
    post calls that reached it (repeats included), ``ledger`` what it holds.
    """

    code: str
    accounts: Sequence[MemoryAccount]
    down: bool = False
    status_is_authoritative: bool = False
    exchanges_files: bool = False
    posts: int = 0
    ledger: dict[str, _Posted] = field(default_factory=dict)

    def _check(self) -> None:
        if self.down:
            raise BillerUnavailable("biller is down")

    def _account(self, account: str) -> MemoryAccount:
        for a in self.accounts:
            if a.account == account:
                return a
        raise BillerRejected("unknown_account", "no such account")

    def _paid(self) -> set[str]:
        return {b for p in self.ledger.values() if not p.cancelled for b in p.bills}

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
        paid = self._paid()
        bills = tuple(b for b in a.bills if b.bill_id not in paid)
        return AccountBills(
            a.account, a.customer_name, a.status, a.partial_allowed, a.min_payment, bills
        )

    async def post_payment(self, order: PaymentOrder) -> str:
        self._check()
        self.posts += 1
        known = self.ledger.get(order.payment_id)
        if known is not None:
            if known.order.amount != order.amount or known.order.account != order.account:
                raise BillerRejected("payment_id_conflict", "other content")
            if known.cancelled:
                raise BillerRejected("payment_cancelled", "cancelled")
            return known.receipt
        bills = await self.open_bills(order.account)
        if bills.status is not AccountStatus.ACTIVE:
            raise BillerRejected("account_blocked", "blocked")
        targets = [b for b in bills.bills if order.bill_id in (None, b.bill_id)]
        if not targets:
            raise BillerRejected("nothing_due" if order.bill_id is None else "bill_not_open")
        if order.amount != sum(b.amount for b in targets):
            raise BillerRejected("amount_not_acceptable", "not the amount due")
        receipt = f"R{len(self.ledger) + 1:05d}"
        self.ledger[order.payment_id] = _Posted(order, receipt, tuple(b.bill_id for b in targets))
        return receipt

    def bills_taken(self, payment_id: str) -> tuple[str, ...]:
        """None: the company's system keeps its own bills."""
        return ()

    async def cancel_payment(self, payment_id: str) -> None:
        self._check()
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
