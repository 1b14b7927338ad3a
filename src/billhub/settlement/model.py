"""Clearing data: totals, reconciliation outcomes, findings, the switch's settlement lines.

Plain data shared by reconciliation, the settlement-file import and the
reports. Money is ``int`` minor units; a date is a settlement date (DE 15).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Totals:
    """DE 74/86 (approved payments, later reversed or not) and DE 75/87 (reversals)."""

    count: int = 0
    amount: int = 0
    reversal_count: int = 0
    reversal_amount: int = 0

    @property
    def net(self) -> int:
        """DE 97: what the company is owed for the date (may be negative)."""
        return self.amount - self.reversal_amount


class FindingKind(StrEnum):
    RECONCILIATION = "reconciliation"  # a 0500 whose totals differ from the hub's
    SWITCH_ONLY = "switch_only"  # in the switch's settlement file, not approved by the hub
    HUB_ONLY = "hub_only"  # approved by the hub, missing from the switch's file
    AMOUNT_DIFFERS = "amount_differs"
    REVERSED_ONE_SIDE = "reversed_one_side"  # reversed by one side only


@dataclass(frozen=True, slots=True)
class Finding:
    """A disagreement to clear by hand; both sides' figures, never silently corrected."""

    kind: FindingKind
    settlement_date: date
    biller: str
    detail: str
    hub: str = ""  # the hub's figures, as text for people
    switch: str = ""  # the switch's figures
    acquirer: str | None = None
    rrn: str | None = None
    source: str = ""  # "0500", or "file:<name>#<line>"


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One 0500 and its 0510: both sides' totals and the code answered."""

    biller: str
    settlement_date: date
    switch: Totals
    hub: Totals
    response_code: str
    answered_at: datetime


class LineType(StrEnum):
    PAYMENT = "payment"
    REVERSAL = "reversal"


@dataclass(frozen=True, slots=True)
class SettlementLine:
    """One line of the switch's daily settlement file (CSV)."""

    line_no: int
    settlement_date: date
    acquirer: str
    rrn: str
    stan: str
    biller: str
    account: str
    amount: int
    type: LineType


@dataclass(slots=True)
class ImportOutcome:
    """What importing a settlement file did."""

    file_name: str
    sha256: str
    already_imported: bool
    lines: int = 0
    matched: int = 0
    findings: list[Finding] = field(default_factory=list)


#: The channel of a reversal whose original payment (of the same date) is not known.
UNKNOWN_CHANNEL = "unknown"


@dataclass(frozen=True, slots=True)
class DayGroup:
    """What counts for a settlement date (approved payments, ``00`` reversals), summed
    per biller, acquirer and channel: all a day's report needs, however many payments
    the day had (the journal sums them where they are)."""

    biller: str
    acquirer: str
    channel: str
    totals: Totals
