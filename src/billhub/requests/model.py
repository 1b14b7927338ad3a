"""What a citizen request is: its type, status, history, details and decision.

Requests are immutable values; every change (:mod:`billhub.requests.states`)
returns a new one with one more history entry, so the store can keep the whole
story and the citizen can see each change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from billhub.errors import BillhubError


class RequestType(StrEnum):
    TRANSACTION_COMPLAINT = "transaction_complaint"
    SERVICE_COMPLAINT = "service_complaint"
    INSTALLMENT = "installment"
    CORRECTION = "correction"


class Status(StrEnum):
    RECEIVED = "received"
    IN_REVIEW = "in_review"
    WAITING_CITIZEN = "waiting_citizen"
    APPROVED = "approved"
    CORRECTED = "corrected"
    RESOLVED = "resolved"
    REFUSED = "refused"
    CLOSED = "closed"


#: A transaction complaint's disposition (BBPS): what the citizen says went wrong.
DISPOSITIONS = ("paid_still_due", "paid_twice", "wrong_amount", "wrong_account")
#: A service complaint's category.
CATEGORIES = ("billing", "meter", "supply", "staff", "other")
#: Why a bill should be corrected.
CORRECTION_REASONS = ("wrong_reading", "estimated_reading", "tariff", "other")
ROLES = ("clerk", "supervisor", "ministry")


class RequestError(BillhubError):
    """A request or a staff action the rules refuse; ``code`` is stable (API clients
    switch on it), the messages are for people, in Arabic and English."""

    def __init__(self, code: str, en: str, ar: str, field: str | None = None) -> None:
        super().__init__(en)
        self.code = code
        self.en = en
        self.ar = ar
        self.field = field


@dataclass(frozen=True, slots=True)
class Installment:
    number: int
    due_date: date
    amount: int  # minor units


@dataclass(frozen=True, slots=True)
class Finding:
    """What the hub found about the payment a transaction complaint names."""

    outcome: str  # posted | uncertain | reversed | declined | not_found
    payment_id: str | None = None
    receipt: str | None = None
    amount: int | None = None
    paid_at: datetime | None = None
    biller_status: str | None = None  # posted | cancelled | unknown | unavailable
    rrn: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status  # approved / corrected / resolved / refused
    note: str
    by: str
    at: datetime
    plan: tuple[Installment, ...] = ()
    new_amount: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a request's history: what happened, who did it, the status after."""

    at: datetime
    actor: str  # "citizen", "hub", or a staff user name
    action: str  # filed | status | assigned | comment | decided | escalated
    status: Status
    note: str = ""
    public: bool = True  # shown to the citizen (internal comments are not)


@dataclass(frozen=True, slots=True)
class Details:
    """The fields of each type; only those of the request's type are set."""

    # transaction complaint
    reference: str | None = None  # receipt or RRN
    paid_on: date | None = None
    disposition: str | None = None
    finding: Finding | None = None
    # service complaint
    category: str | None = None
    # installment and correction
    bill_ids: tuple[str, ...] = ()
    total: int | None = None  # minor units: the bills concerned, as the biller said
    installments: int | None = None
    reason: str | None = None
    reading: str | None = None


@dataclass(frozen=True, slots=True)
class CitizenRequest:
    ticket: str
    type: RequestType
    company: str  # biller code
    account: str
    phone: str
    description: str
    filed_at: datetime
    due_at: datetime
    status: Status = Status.RECEIVED
    details: Details = field(default_factory=Details)
    history: tuple[Change, ...] = ()
    assignee: str | None = None
    escalated_at: datetime | None = None
    decision: Decision | None = None
    attachments: tuple[str, ...] = ()
    version: int = 0

    @property
    def decided(self) -> bool:
        return self.decision is not None

    def overdue(self, now: datetime) -> bool:
        """Past its turnaround and not decided yet (a decision stops the clock)."""
        return self.decision is None and self.status != Status.CLOSED and now > self.due_at

    def public_history(self) -> tuple[Change, ...]:
        return tuple(c for c in self.history if c.public)
