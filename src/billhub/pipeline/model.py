"""The pipeline's domain: bills, payments, reversals, and what a biller says.

Plain frozen data shared by the pipeline, its ports and their adapters. Money
is ``int`` minor units everywhere; dates are ``date``/``datetime`` in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal, NamedTuple


class AccountStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Bill:
    """One open bill; ``amount`` is what is still due."""

    bill_id: str
    period: str  # YYYYMM
    due_date: date
    amount: int


@dataclass(frozen=True, slots=True)
class AccountBills:
    """BILLERS.md question 1: a subscriber's open bills, oldest first."""

    account: str
    customer_name: str
    status: AccountStatus
    partial_allowed: bool
    min_payment: int
    bills: tuple[Bill, ...]

    @property
    def total_due(self) -> int:
        return sum(b.amount for b in self.bills)


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    """BILLERS.md question 2: what the hub asks a biller to post."""

    payment_id: str
    account: str
    bill_id: str | None
    amount: int
    settlement_date: date
    acquirer: str
    rrn: str
    channel: str
    paid_at: datetime


class PostingStatus(StrEnum):
    POSTED = "posted"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    """BILLERS.md question 4: what a biller holds for a hub payment id."""

    status: PostingStatus
    receipt: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentKey:
    """LINK-SPEC 6.3: DE 32 + DE 37 + DE 15, as the switch sent them."""

    acquirer: str
    rrn: str
    settlement_mmdd: str


class PaymentState(StrEnum):
    """Where a payment stands in the journal.

    ``POSTING``: recorded before the biller is asked; a crash leaves it here and
    recovery makes it ``UNCERTAIN``. ``APPROVED`` (answered `00`), ``DECLINED``
    (any other code but a `91` with a posting in doubt), ``UNCERTAIN``
    (answered `91`, the resolver owns it until the biller holds nothing).
    """

    POSTING = "posting"
    APPROVED = "approved"
    DECLINED = "declined"
    UNCERTAIN = "uncertain"


class Resolution(StrEnum):
    """How an uncertain payment ended: cancelled at the biller, or never posted there."""

    CANCELLED = "cancelled"
    NEVER_POSTED = "never_posted"


@dataclass(slots=True)
class PaymentRecord:
    """One payment request and its answer, as the journal keeps it."""

    payment_id: str
    key: PaymentKey
    settlement_date: date
    biller: str
    account: str
    bill_id: str | None
    amount: int
    currency: str
    channel: str
    forwarder: str
    content: str  # the fields that make "the same content" (LINK-SPEC 6.3), joined
    received_at: datetime
    state: PaymentState = PaymentState.POSTING
    response_code: str | None = None
    approval_code: str | None = None
    answer_de48: str | None = None
    receipt: str | None = None
    customer_name: str | None = None
    answered_at: datetime | None = None
    reversed: bool = False
    resolution: Resolution | None = None
    #: The bills this payment took at the hub's own store (a batch biller), written
    #: with it in one commit so that no two payments, on any instance, take one bill.
    claims: tuple[str, ...] = ()


@dataclass(slots=True)
class ReversalRecord:
    """One reversal (0420/0421) and its answer; ``payment_id`` is None for an unknown original."""

    key: PaymentKey
    settlement_date: date
    biller: str
    amount: int
    received_at: datetime
    response_code: str
    payment_id: str | None = None
    booked_on: date | None = None  # the business day it was booked on (for payments files)
    cancel_state: str = "none"  # none | pending | confirmed | in_file


class TaskKind(StrEnum):
    RESOLVE = "resolve"  # an uncertain payment: status, then cancel if posted
    CANCEL = "cancel"  # a reversed payment of an online biller: cancel until confirmed


@dataclass(slots=True)
class ResolverTask:
    """Durable work for the resolver; survives a crash and a restart."""

    task_id: int
    kind: TaskKind
    payment_id: str
    biller: str
    attempts: int
    next_at: datetime
    created_at: datetime
    not_before_final: datetime | None = None  # "unknown" is final only after this
    detail: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A resolver task as the journal keeps its history: the task, when and how it ended."""

    task: ResolverTask
    done_at: datetime | None
    outcome: str | None


class InboxOutcome(StrEnum):
    LOADED = "loaded"  # committed; the file is now in loaded/
    DUPLICATE = "duplicate"  # its name or sha256 was loaded before; moved to loaded/
    REJECTED = "rejected"  # a bad row; nothing changed; moved to rejected/ with a .reason
    IGNORED = "ignored"  # not a bills file of this biller; left where it is


@dataclass(frozen=True, slots=True)
class InboxFile:
    """What a biller's :meth:`~billhub.pipeline.ports.Biller.poll` did with one file.

    ``row``/``reason``: the bad row (1-based, header = row 1) of a rejected file, or
    why a file was a duplicate or ignored. ``conflicts``: bill ids the file tried to
    change although a held payment paid them (they stay paid). ``stale``: bill ids
    not applied because a newer file (by name order) had set them already.
    ``path``: where the file is now.
    """

    name: str
    outcome: InboxOutcome
    rows: int = 0
    conflicts: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    row: int | None = None
    reason: str | None = None
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class DayFile:
    """A file a biller's :meth:`~billhub.pipeline.ports.Biller.close_day` wrote."""

    biller: str
    settlement_date: date
    path: Path


BillStatus = Literal["open", "paid", "cancelled", "blocked"]


@dataclass(frozen=True, slots=True)
class BillRow:
    """One row of a batch biller's bills file; ``row`` is its 1-based row number."""

    row: int
    account: str
    customer_name: str
    bill_id: str
    period: str
    due_date: date
    amount: int
    status: BillStatus


@dataclass(frozen=True, slots=True)
class StoredBill:
    """A bill as the hub's own store holds it: the row that set it last, and from which
    file (``order``: file order, row number; a later file supersedes an earlier)."""

    bill_id: str
    account: str
    customer_name: str
    period: str
    due_date: date
    amount: int
    status: BillStatus
    order: tuple[str, int]


@dataclass(frozen=True, slots=True)
class FileLoad:
    """What loading a bills file did: ``duplicate_of`` names the file already loaded with
    this name or these bytes (then nothing changed); ``stale``: rows a newer file had set
    already; ``conflicts``: bills a payment took that the file tried to reopen."""

    duplicate_of: str | None = None
    stale: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Claim:
    """Which payment holds a bill at the hub's own store (``active`` False: released)."""

    bill_id: str
    payment_id: str
    active: bool


@dataclass(frozen=True, slots=True)
class BillsView:
    """What a batch biller keeps in memory, from its store: every account's name, the
    bills that may still be paid (open or blocked, not taken), and the position in the
    store's change feed after which :meth:`~billhub.pipeline.ports.BillsStore.changes`
    continues."""

    names: tuple[tuple[str, str, tuple[str, int]], ...]  # (account, name, order)
    bills: tuple[StoredBill, ...]
    cursor: int


@dataclass(frozen=True, slots=True)
class BillsChanges:
    """What changed in a store since a cursor: bills set by files loaded since (any
    status), bills taken or released by payments since, the claims of the bills set
    (so a bill a payment holds stays taken whatever a file says), and the cursor to
    continue from."""

    bills: tuple[StoredBill, ...]
    claims: tuple[Claim, ...]
    cursor: int


class DayFileEntry(NamedTuple):
    """One row of a batch biller's payments file as the journal reads it: an approved
    payment of the date, or a ``00`` reversal booked on the date with its payment's
    fields (the payment's own settlement date, the reversed amount). ``receipt`` is
    the payment's, if the journal has one.

    A named tuple, not a frozen dataclass: a day's file is a million of them, and a
    tuple is made four times faster (no ``object.__setattr__`` per field)."""

    status: Literal["approved", "reversed"]
    payment_id: str
    settlement_date: date
    account: str
    bill_id: str | None
    amount: int
    acquirer: str
    rrn: str
    channel: str
    receipt: str | None
