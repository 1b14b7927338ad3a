"""The ports the pipeline defines and its adapters implement.

The pipeline reaches billers, the journal and the clock only through these
(STYLE.md): connectors implement :class:`Biller`, journals :class:`Journal`,
the composition root supplies a :class:`Clock` and a :class:`BusinessCalendar`.
The network shell, in turn, asks the application through :class:`RequestHandler`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from typing import Protocol

from billhub.iso8583.message import Message
from billhub.pipeline.model import (
    AccountBills,
    BillRow,
    BillsChanges,
    BillsView,
    Claim,
    DayFile,
    DayFileEntry,
    FileLoad,
    InboxFile,
    PaymentKey,
    PaymentOrder,
    PaymentRecord,
    ResolverTask,
    ReversalRecord,
    StatusAnswer,
    TaskRecord,
)


class RequestHandler(Protocol):
    """Answer one request the link handed over; must not raise.

    The answer depends on the request alone: which link it came on is the shell's
    business (its logs and metrics name the link), not the application's.
    """

    async def handle(self, request: Message) -> Message: ...


class Clock(Protocol):
    """Time, injected: wall-clock UTC for records, monotonic seconds for budgets."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class BusinessCalendar(Protocol):
    """The settlement dates as the switch's cutovers move them (LINK-SPEC 3, 6.1)."""

    @property
    def current(self) -> date | None:
        """The open business day, or None before the first cutover."""
        ...

    def settlement_date(self, mmdd: str) -> date | None:
        """DE 15's date, its year nearest today; None if no nearby year has it."""
        ...

    def is_closed(self, day: date) -> bool:
        """Whether a cutover closed ``day`` (payments for it are declined `90`)."""
        ...


class ResolverWake(Protocol):
    """The resolver, as the pipeline sees it: told when new work is committed."""

    def wake(self) -> None: ...


class Biller(Protocol):
    """One company's billing system: BILLERS.md's four questions, and its life cycle.

    Life cycle, called the same way for every biller by the composition:
    :meth:`start` once before traffic, :meth:`poll` every few seconds (take in
    what the company dropped: bills files), :meth:`close_day` at a cutover
    (write what the closed days owe the company: payments files), :meth:`close`
    at shutdown. Online billers have nothing to do in the first three.

    The four questions. Every call may raise only
    :class:`~billhub.errors.BillerRejected` (a contract refusal, ``code`` as in the
    BILLERS.md error table: ``unknown_account``, ``account_blocked``,
    ``nothing_due``, ``bill_not_open``, ``amount_not_acceptable``,
    ``payment_id_conflict``, ``payment_cancelled``, ``unknown_payment``),
    :class:`~billhub.errors.BillerTimeout` or
    :class:`~billhub.errors.BillerUnavailable`. The pipeline bounds each call with
    its own time budget (cancellation); a connector's own time-outs must fit inside.
    """

    code: str
    #: True when a "unknown" payment status is final at once (the hub's own store,
    #: whose postings live and die with the hub); False for a remote system, where
    #: a late posting may still arrive. It decides how a payment is posted (see
    #: :attr:`~billhub.pipeline.routes.BillerRoute.online`) and when the resolver's
    #: "never posted" is final.
    status_is_authoritative: bool
    #: True when the biller exchanges files with the company (a bills inbox,
    #: payments files): its :meth:`poll` and :meth:`close_day` results are counted.
    exchanges_files: bool

    async def start(self, ledger: PaymentsLedger) -> None:
        """Before traffic: open what the connector keeps (the hub's own store builds
        its index of the bills no payment holds)."""
        ...

    async def poll(self) -> Sequence[InboxFile]:
        """Take in what the company dropped since the last poll (bills files)."""
        ...

    async def close_day(self, dates: Sequence[date], ledger: PaymentsLedger) -> Sequence[DayFile]:
        """At a cutover: write what each closed date owes the company (payments files).
        Writing a date again gives the same bytes."""
        ...

    async def open_bills(self, account: str) -> AccountBills: ...

    async def post_payment(self, order: PaymentOrder) -> str:
        """Post; returns the receipt. Idempotent on ``order.payment_id``."""
        ...

    def bills_taken(self, payment_id: str) -> tuple[str, ...]:
        """The bills of the hub's own store that :meth:`post_payment` took for this
        payment, which the journal writes with it (refusing a bill another payment
        holds); empty for a biller that keeps its own bills."""
        ...

    async def cancel_payment(self, payment_id: str) -> None:
        """Cancel a posted payment; idempotent. ``unknown_payment`` if never posted."""
        ...

    async def payment_status(self, payment_id: str) -> StatusAnswer: ...

    async def close(self) -> None: ...


class PaymentsLedger(Protocol):
    """What the journal tells a batch biller about its payments (files, store rebuild)."""

    async def approved_payments(self, biller: str, settlement_date: date) -> list[PaymentRecord]:
        """Payments approved for that settlement date, reversed later or not, oldest first."""
        ...

    async def reversals_booked(self, biller: str, booked_on: date) -> list[ReversalRecord]:
        """Reversals (answered `00`) booked on that business day, oldest first."""
        ...

    def payments_file_entries(
        self, biller: str, settlement_date: date
    ) -> AsyncIterator[Sequence[DayFileEntry]]:
        """The rows of the date's payments file, in pages of a few thousand: the
        approved payments of the date in journal order, then the ``00`` reversals
        booked on the date in journal order. A day of a million payments is never
        all in memory. Raises :class:`~billhub.errors.JournalError` when a reversed
        payment is missing from the journal."""
        ...

    async def held_payments(self, biller: str) -> list[PaymentRecord]:
        """Approved and not reversed: what the biller must hold."""
        ...

    async def get_payment_by_id(self, payment_id: str) -> PaymentRecord | None:
        """A payment by its hub payment id (a reversal's original, of any date)."""
        ...


class Journal(PaymentsLedger, Protocol):
    """Durable record of every financial request and its answer.

    Every write method returns only once its write is committed durably (group
    commit may share one commit among concurrent writes). Raises only
    :class:`~billhub.errors.JournalError`.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def insert_payment(self, record: PaymentRecord) -> tuple[PaymentRecord, bool]:
        """Insert a new payment as it is; returns ``(record, True)``.

        If its key exists, nothing is inserted and ``(existing, False)`` comes back:
        the caller answers as for a repeat. Raises, inserting nothing,
        :class:`~billhub.errors.KeyReversed` if a reversal of the key was recorded
        with no payment to reverse (LINK-SPEC 6.4), and
        :class:`~billhub.errors.DateClosed` for a ``POSTING`` or ``APPROVED`` record
        whose settlement date a cutover closed (LINK-SPEC 6.1). Both hold across hub
        instances: they are checked where the record is written.
        """
        ...

    async def finish_payment(
        self, record: PaymentRecord, *, task: ResolverTask | None = None
    ) -> None:
        """Write the payment's answer fields and state; with ``task``, add it in the
        same commit (an uncertain payment and its resolution cannot come apart).

        Only over a row still ``POSTING``; otherwise raise
        :class:`~billhub.errors.JournalError` and write nothing. A payment another
        instance (or recovery) took over as uncertain is being resolved, maybe
        cancelled at its biller: an approval written over it would be a ``00`` the
        biller no longer holds.
        """
        ...

    async def write_outcome(
        self, record: PaymentRecord, *, task: ResolverTask | None = None
    ) -> None:
        """Write a payment's answer whether or not its row exists yet, with ``task`` in
        the same commit: how an outcome held while the journal could not write is
        recorded later (:mod:`billhub.pipeline.unrecorded`). A row of the same key
        but another payment id is left as it is."""
        ...

    async def write_outcomes(
        self,
        outcomes: Sequence[tuple[PaymentRecord, ResolverTask | None]],
        *,
        if_posting: bool = False,
    ) -> list[PaymentRecord]:
        """:meth:`write_outcome` for each, all in one commit; returns those written.

        With ``if_posting``, a payment is written only while its row is still
        ``POSTING`` (recovery: of two instances taking over the same payment, one
        writes it and its task).
        """
        ...

    async def get_payment(self, key: PaymentKey) -> PaymentRecord | None: ...

    async def get_payment_by_id(self, payment_id: str) -> PaymentRecord | None: ...

    async def get_reversal(self, key: PaymentKey) -> ReversalRecord | None: ...

    async def insert_reversal(
        self, reversal: ReversalRecord, *, task: ResolverTask | None = None
    ) -> None:
        """Record a reversal; if it names a payment and is answered `00`, mark that
        payment reversed in the same commit, with its cancel task if any. One that
        names no payment raises :class:`~billhub.errors.KeyTaken`, writing nothing,
        if a payment of its key was recorded meanwhile (by another instance)."""
        ...

    async def due_tasks(self, now: datetime, limit: int = 100) -> list[ResolverTask]: ...

    async def reschedule_task(self, task: ResolverTask) -> None:
        """Save a task's attempts, next_at and detail after a failed try."""
        ...

    async def complete_task(
        self,
        task: ResolverTask,
        *,
        outcome: str,
        payment: PaymentRecord | None = None,
        reversal_key: PaymentKey | None = None,
    ) -> None:
        """Close a task; with ``payment``, save its resolution in the same commit;
        with ``reversal_key``, mark that reversal's cancel confirmed."""
        ...

    async def unfinished_payments(self) -> list[PaymentRecord]:
        """Payments left ``POSTING`` by a hub instance that is gone (a crash), oldest
        first: their biller may hold them although no answer was recorded. Never one
        of a running instance."""
        ...

    async def open_tasks(self) -> Sequence[ResolverTask]: ...


class JournalReader(Protocol):
    """What the operators' commands read: one transaction's whole story."""

    async def payments_by_rrn(
        self, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
    ) -> list[PaymentRecord]:
        """Payments whose DE 37 (trailing spaces ignored) is ``rrn``, oldest first."""
        ...

    async def reversals_by_rrn(
        self, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
    ) -> list[ReversalRecord]: ...

    async def task_history(self, payment_id: str) -> list[TaskRecord]:
        """Every resolver task of a payment, done or not, oldest first."""
        ...

    async def payments(self, *, biller: str | None = None) -> list[PaymentRecord]:
        """Every payment (optionally of one biller), oldest first: tests and the demo."""
        ...


class BillsStore(Protocol):
    """A batch biller's bills, in the journal's database (BILLERS.md section 3).

    Bills files are loaded here once (whichever hub instance sees a file first);
    which bills payments took is written by the journal with the payments
    themselves (:attr:`~billhub.pipeline.model.PaymentRecord.claims`). Every
    instance, and the web service, keeps a view in memory and follows the
    store's change feed, so all of them answer from the same store.
    """

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
        """Load a whole file in one transaction, or nothing if its name or bytes were
        loaded before. A row applies unless a newer file (by ``file_order``) set its
        bill already."""
        ...

    async def view(self, biller: str) -> BillsView: ...

    async def changes(self, biller: str, cursor: int) -> BillsChanges: ...

    async def claims_of(self, biller: str, payment_id: str) -> list[Claim]:
        """The bills a payment took (or took and released), by its hub payment id."""
        ...


class IdSource(Protocol):
    """Identifiers, injected: hub payment ids (unique forever) and approval codes."""

    def payment_id(self) -> str: ...

    def approval_code(self) -> str: ...


class PipelineObserver(Protocol):
    """What the pipeline reports for metrics: cheap calls that must not raise.

    ``operation`` is one of ``open_bills``, ``post_payment``, ``cancel_payment``,
    ``payment_status``; ``outcome`` one of ``ok``, ``rejected``, ``timeout``,
    ``unavailable``, ``error``.
    """

    def biller_call(self, biller: str, operation: str, seconds: float, outcome: str) -> None: ...


class NullPipelineObserver:
    def biller_call(self, biller: str, operation: str, seconds: float, outcome: str) -> None:
        pass
