"""Settlement dates: the year of an MMDD, and the open business day.

LINK-SPEC 3: a DE 15 date's year is the one that puts it nearest the hub's
current date (so ``0101`` seen on 31 December is next year). Pure: today's
date is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from billhub.iso8583 import codes as rc


def resolve_mmdd(mmdd: str, today: date) -> date:
    """The date of an MMDD nearest to ``today``; raises ``ValueError`` if no year has it.

    ``0229`` takes the nearest leap year among the previous, this and next year.
    """
    month, day = int(mmdd[:2]), int(mmdd[2:])
    best: date | None = None
    for year in (today.year - 1, today.year, today.year + 1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if best is None or abs((candidate - today).days) < abs((best - today).days):
            best = candidate
    if best is None:
        raise ValueError(f"{mmdd} is not a calendar date")
    return best


def parse_day(text: str) -> date:
    """A date typed by a person: ``YYYY-MM-DD`` only, the one format of the command line.

    Raises ``ValueError`` with a one-line reason that repeats what was typed.
    """
    value = text.strip()
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise ValueError(f"{value!r} is not a date: write YYYY-MM-DD, e.g. 2026-11-24")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a calendar date (YYYY-MM-DD)") from None


def parse_settlement_mmdd(text: str) -> str:
    """A settlement date typed by a person, as the wire's MMDD (DE 15).

    ``YYYY-MM-DD`` like every date of the command line, or ``MMDD`` as the switch sends
    it (``1124``), because an operator copying DE 15 from a log has that. Raises
    ``ValueError`` with a one-line reason.
    """
    value = text.strip()
    if len(value) == 4 and value.isdigit():
        try:
            date(2024, int(value[:2]), int(value[2:]))  # a leap year: 0229 is an MMDD
        except ValueError:
            raise ValueError(f"{value!r} is not a month and day (MMDD)") from None
        return value
    try:
        return parse_day(value).strftime("%m%d")
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date: write YYYY-MM-DD (or MMDD as in DE 15)"
        ) from None


@dataclass(frozen=True, slots=True)
class CutoverOutcome:
    """How a cutover request is answered, and the new open day if it moved."""

    code: str
    new_date: date | None


class BusinessDay:
    """The current settlement date as cutovers move it (LINK-SPEC 6.1): the pipeline's
    :class:`~billhub.pipeline.ports.BusinessCalendar`.

    ``current`` is ``None`` until the first cutover; persistence of the day and
    the closing of payments belong to :mod:`billhub.settlement.dayclose`.
    ``today`` (the UTC date) is injected.
    """

    def __init__(self, today: Callable[[], date], current: date | None = None) -> None:
        self.today = today
        self.current = current

    def settlement_date(self, mmdd: str) -> date | None:
        """DE 15's date, its year nearest today; None if no nearby year has it."""
        try:
            return resolve_mmdd(mmdd, self.today())
        except ValueError:
            return None

    def is_closed(self, day: date) -> bool:
        return self.current is not None and day < self.current

    def cutover(self, mmdd: str) -> CutoverOutcome:
        """`00` moving to a later date, `00` and nothing for the same, `30` for an earlier."""
        new = self.settlement_date(mmdd)
        if new is None:
            return CutoverOutcome(rc.FORMAT_ERROR, None)
        if self.current is None or new > self.current:
            self.current = new
            return CutoverOutcome(rc.APPROVED, new)
        if new == self.current:
            return CutoverOutcome(rc.APPROVED, None)
        return CutoverOutcome(rc.FORMAT_ERROR, None)


#: Syria's weekend: Friday and Saturday (``date.weekday()`` numbers).
DEFAULT_WEEKEND: frozenset[int] = frozenset({4, 5})


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """Working days: not a weekend day, not a public holiday (both from configuration).

    Turnaround times are promised in working days ("15 working days for a billing
    complaint"), so a deadline counts only these. Pure: dates in, dates out.
    """

    holidays: frozenset[date] = frozenset()
    weekend: frozenset[int] = DEFAULT_WEEKEND

    def is_working_day(self, day: date) -> bool:
        return day.weekday() not in self.weekend and day not in self.holidays

    def add_working_days(self, start: date, days: int) -> date:
        """The ``days``-th working day after ``start`` (``start`` itself never counts).

        ``days == 0`` is ``start`` itself when it is a working day, else the next one.
        Raises ``ValueError`` for a negative count or a calendar with no working day.
        """
        if days < 0:
            raise ValueError("days must be >= 0")
        if len(self.weekend) >= 7:
            raise ValueError("a calendar needs at least one working weekday")
        current = start
        if days == 0:
            while not self.is_working_day(current):
                current += timedelta(days=1)
            return current
        left = days
        while left:
            current += timedelta(days=1)
            if self.is_working_day(current):
                left -= 1
        return current

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end`` (0 if ``end <= start``)."""
        n = 0
        current = start
        while current < end:
            current += timedelta(days=1)
            if self.is_working_day(current):
                n += 1
        return n
