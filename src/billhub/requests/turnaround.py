"""Turnaround times: working days per request type, set per company in the configuration.

A request is due the given number of working days after the day it was filed, at
the same time of day (specs/READINGS.md, citizen requests); weekends and public
holidays do not count (:class:`~billhub.settlement.calendar.WorkingCalendar`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from billhub.requests.model import RequestType
from billhub.settlement.calendar import WorkingCalendar

#: Working days when the configuration says nothing.
DEFAULT_DAYS: Mapping[str, int] = {
    RequestType.TRANSACTION_COMPLAINT.value: 3,
    RequestType.SERVICE_COMPLAINT.value: 15,
    RequestType.INSTALLMENT.value: 10,
    RequestType.CORRECTION.value: 10,
}


@dataclass(frozen=True, slots=True)
class TurnaroundPolicy:
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)
    defaults: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_DAYS))
    per_company: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def days(self, company: str, kind: RequestType) -> int:
        own = self.per_company.get(company, {})
        if kind.value in own:
            return own[kind.value]
        return self.defaults.get(kind.value, DEFAULT_DAYS[kind.value])

    def due_at(self, company: str, kind: RequestType, filed_at: datetime) -> datetime:
        day = self.calendar.add_working_days(filed_at.date(), self.days(company, kind))
        return datetime.combine(day, filed_at.timetz())
