"""The rows of a batch biller's payments file, read from either journal in pages.

One SQL for both engines (through the settlement store's runner, ``?``
placeholders). Pages follow the journal's order (``seq``) with an index on
``(biller, settlement_date, state, seq)``, so each page is an index range and a
day of a million payments is read in constant memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Literal

from billhub.errors import JournalError
from billhub.journal import codec as c
from billhub.journal.codec import Row
from billhub.journal.settlement_sql import SqlRunner
from billhub.pipeline.model import DayFileEntry

#: Rows per page: large enough that the round trips do not count, small enough that
#: a page is a few MB.
PAGE_ROWS = 20_000

_APPROVED = (
    "SELECT seq, payment_id, settlement_date, account, bill_id, amount, acquirer, rrn, "
    "channel, receipt FROM payments WHERE biller=? AND settlement_date=? AND state='approved' "
    "AND seq > ? ORDER BY seq LIMIT ?"
)
_REVERSED = (
    "SELECT r.seq, p.payment_id, p.settlement_date, p.account, p.bill_id, r.amount, "
    "p.acquirer, p.rrn, p.channel, p.receipt FROM reversals r "
    "LEFT JOIN payments p ON p.payment_id = r.payment_id "
    "WHERE r.biller=? AND r.booked_on=? AND r.response_code='00' "
    "AND r.payment_id IS NOT NULL AND r.seq > ? ORDER BY r.seq LIMIT ?"
)


def _page(status: Literal["approved", "reversed"], rows: list[Row]) -> list[DayFileEntry]:
    """The entries of one page; one loop, one tuple per row, the date parsed once per
    distinct text (a page is nearly always one date)."""
    days: dict[str, date] = {}
    out: list[DayFileEntry] = []
    add = out.append
    for r in rows:
        if r[1] is None:
            raise JournalError("a reversed payment is missing from the journal")
        d = days.get(r[2])
        if d is None:
            d = days[r[2]] = date.fromisoformat(r[2])
        add(DayFileEntry(status, r[1], d, r[3], r[4], int(r[5]), r[6], r[7].strip(), r[8], r[9]))
    return out


async def payments_file_entries(
    db: SqlRunner, biller: str, settlement_date: date, *, page: int = PAGE_ROWS
) -> AsyncIterator[list[DayFileEntry]]:
    """Approved payments of the date, then ``00`` reversals booked on it, in pages."""
    day = c.day(settlement_date)
    for status, sql in (("approved", _APPROVED), ("reversed", _REVERSED)):
        last = 0
        while True:
            rows = await db.rows(sql, (biller, day, last, page))
            if not rows:
                break
            yield _page(status, rows)  # type: ignore[arg-type]
            if len(rows) < page:
                break
            last = int(rows[-1][0])
