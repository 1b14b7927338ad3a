"""What clearing asks of the journal: totals, business days, reconciliations, findings.

The SQLite (and later PostgreSQL) journal implements it next to the
pipeline's :class:`~billhub.pipeline.ports.Journal`. Every write returns once
committed durably.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from billhub.pipeline.model import PaymentRecord, ReversalRecord
from billhub.settlement.model import DayGroup, Finding, ImportOutcome, Reconciliation, Totals


@dataclass(slots=True)
class CutoverRecord:
    """A cutover as the journal keeps it; ``closing`` until its files are written."""

    new_date: date
    previous_date: date | None
    closed_dates: list[date]
    state: str  # closing | closed
    requested_at: datetime
    closed_at: datetime | None = None


class SettlementStore(Protocol):
    async def day_totals(self, biller: str, settlement_date: date) -> Totals:
        """DE 74/86: approved payments of the date (reversed later or not); DE 75/87:
        reversals answered `00` of the date."""
        ...

    async def latest_cutover(self) -> CutoverRecord | None: ...

    async def begin_cutover(self, record: CutoverRecord) -> bool:
        """Record a cutover ``closing``; False (and nothing written) if one to the same
        date was recorded already (by another instance, or before a crash)."""
        ...

    async def posting_before(self, day: date) -> int:
        """Payments of settlement dates before ``day`` still ``POSTING`` (on any
        instance): what a cutover waits for before it may answer."""
        ...

    async def finish_cutover(self, new_date: date, closed_at: datetime) -> None: ...

    async def dates_with_activity(self, before: date) -> list[date]:
        """Settlement dates before ``before`` that have payments or reversals."""
        ...

    async def record_payments_file(
        self, biller: str, settlement_date: date, path: str, written_at: datetime
    ) -> None: ...

    async def record_reconciliation(
        self, reconciliation: Reconciliation, findings: list[Finding], at: datetime
    ) -> None: ...

    async def reconciliations(self, settlement_date: date) -> list[Reconciliation]: ...

    async def first_reconciled_at(self, biller: str, settlement_date: date) -> datetime | None:
        """When the date's first 0500 for the biller was answered (adjustments start then)."""
        ...

    async def findings(self, settlement_date: date) -> list[Finding]: ...

    async def record_import(self, outcome: ImportOutcome, at: datetime) -> bool:
        """Record an import and its findings in one commit; False (and nothing written)
        if a file with the same sha256 was imported before."""
        ...

    async def imported(self, sha256: str) -> bool:
        """Whether a settlement file with these bytes was imported before."""
        ...

    async def day_groups(self, settlement_date: date) -> list[DayGroup]:
        """The date's approved payments and ``00`` reversals summed per biller,
        acquirer and channel (a reversal's channel is its original's of the same
        date, else ``unknown``), in the database: a report of a million payments
        reads a few hundred rows."""
        ...

    async def payments_on(self, settlement_date: date) -> list[PaymentRecord]: ...

    async def reversals_on(self, settlement_date: date) -> list[ReversalRecord]: ...

    async def open_uncertain(self) -> list[PaymentRecord]:
        """Payments answered `91` whose resolution with the biller is not done yet."""
        ...
