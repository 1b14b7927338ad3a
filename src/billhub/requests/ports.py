"""What the requests core needs from outside: storage, the payment facts, a code sender.

The web service implements them (journal database, the journal and the billers'
connectors, an SMS gateway or a development file); the core and its tests name
only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from billhub.requests.model import CitizenRequest, Finding, RequestType


@dataclass(frozen=True, slots=True)
class PaymentLine:
    """A payment the hub recorded for an account, as the citizen may see it."""

    paid_at: datetime
    amount: int
    channel: str
    receipt: str | None
    state: str  # approved | reversed | uncertain | declined


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    company: str | None
    action: str
    ticket: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class StaffUser:
    username: str
    company: str | None  # None for the ministry
    role: str  # clerk | supervisor | ministry
    password_hash: str
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Attachment:
    attachment_id: str
    ticket: str
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Query:
    """Which requests a list shows: ``company`` None means every company."""

    company: str | None = None
    account: str | None = None
    type: RequestType | None = None
    open_only: bool = False
    filed_from: datetime | None = None
    filed_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Handover:
    """A decision to hand to a company's billing system (specs/BILLERS-requests.md):
    ``pending`` until it answers, then ``accepted`` (its reference) or ``refused``."""

    ticket: str
    company: str
    state: str
    attempts: int
    next_at: datetime
    reference: str | None = None
    detail: str = ""


class HandoverRefused(Exception):
    """The company's system refused the decision (a 4xx of the extension's contract)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class DecisionSink(Protocol):
    """A company's billing system taking plans and corrections online."""

    async def hand_over(self, resource: str, ticket: str, body: dict[str, object]) -> str:
        """PUT the decision; its reference. Raises HandoverRefused, or anything else for
        "try again later" (time-out, connection, 5xx)."""
        ...


class Conflict(Exception):
    """The request changed since it was read (another clerk): read it again."""


class RequestStore(Protocol):
    """Requests, their history, staff, sessions, codes and the append-only audit trail."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, req: CitizenRequest, audit: AuditEntry) -> None:
        """Store a new request (``ticket`` unique) and its audit entry in one commit."""
        ...

    async def save(
        self, req: CitizenRequest, audit: AuditEntry, handover: Handover | None = None
    ) -> CitizenRequest:
        """Store a changed request if it is still at ``req.version`` (else Conflict);
        returns it at its new version. The audit entry (and a hand-over to do) land in
        the same commit."""
        ...

    async def due_handovers(self, now: datetime, limit: int = 50) -> list[Handover]: ...

    async def update_handover(self, h: Handover) -> None: ...

    async def handover(self, ticket: str) -> Handover | None: ...

    async def get(self, ticket: str) -> CitizenRequest | None: ...

    async def find(self, query: Query) -> list[CitizenRequest]:
        """Matching requests, soonest due first."""
        ...

    async def audit(
        self, *, company: str | None = None, ticket: str | None = None
    ) -> list[AuditEntry]: ...

    async def record(self, audit: AuditEntry) -> None:
        """An audit entry of an action that changes no request (a login, an export)."""
        ...

    async def add_staff(self, user: StaffUser) -> None: ...

    async def set_staff_disabled(self, username: str, disabled: bool) -> bool: ...

    async def staff(self, username: str) -> StaffUser | None: ...

    async def all_staff(self) -> list[StaffUser]: ...

    async def add_session(
        self, token_hash: str, username: str, csrf: str, expires: datetime
    ) -> None: ...

    async def session(self, token_hash: str, now: datetime) -> tuple[str, str] | None:
        """(username, csrf token) of a live session."""
        ...

    async def drop_session(self, token_hash: str) -> None: ...

    async def put_code(self, key: str, code_hash: str, expires: datetime) -> None: ...

    async def take_code(self, key: str, code_hash: str, now: datetime) -> bool:
        """True once for a live code (then it is gone); wrong codes count toward a limit."""
        ...

    async def add_attachment(self, att: Attachment) -> None: ...

    async def attachments(self, ticket: str) -> list[Attachment]: ...

    async def recent_payments(self, company: str, account: str, limit: int) -> list[PaymentLine]:
        """The hub's journal: payments to ``account`` of ``company``, newest first."""
        ...

    async def find_payment(
        self, company: str, account: str, reference: str, paid_on: date | None
    ) -> Finding:
        """The journal's view of the payment a complaint names (RRN or receipt)."""
        ...


class CodeSender(Protocol):
    """Sends a one-time code to a phone (an SMS gateway; a file in development)."""

    async def send(self, phone: str, text: str) -> None: ...
