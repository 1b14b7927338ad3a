"""The payments file of a batch biller (BILLERS.md section 3): rows to text; pure.

The hub writes one file per closed settlement date::

    payment_id,settlement_date,account,bill_id,amount,acquirer,rrn,channel,receipt,status
    ...one row per payment approved for the date (status "approved")...
    ...one row per reversal booked on the date (status "reversed")...
    TOTAL,<count approved>,<sum approved>,<count reversed>,<sum reversed>

:func:`render` is deterministic (same rows, same text: ``\\n`` line ends, dates as
``YYYY-MM-DD``, amounts as integers, a payment without a bill id has an empty
``bill_id``), so writing a date's file twice gives the same bytes. The trailer lets
the company check it received the whole file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal, TextIO

from billhub.pipeline.model import DayFileEntry, PaymentRecord

__all__ = [
    "PAYMENTS_FILE_HEADER",
    "PaymentsFileRow",
    "PaymentsFileWriter",
    "RowStatus",
    "approved_row",
    "file_row",
    "payments_file_name",
    "render",
    "reversed_row",
]

PAYMENTS_FILE_HEADER: tuple[str, ...] = (
    "payment_id",
    "settlement_date",
    "account",
    "bill_id",
    "amount",
    "acquirer",
    "rrn",
    "channel",
    "receipt",
    "status",
)

RowStatus = Literal["approved", "reversed"]


@dataclass(frozen=True, slots=True)
class PaymentsFileRow:
    """One row of a payments file; ``bill_id`` ``None`` means "all open bills"."""

    payment_id: str
    settlement_date: date
    account: str
    bill_id: str | None
    amount: int
    acquirer: str
    rrn: str
    channel: str
    receipt: str
    status: RowStatus


def payments_file_name(biller_code: str, settlement_date: date) -> str:
    """``payments-<biller>-<YYYYMMDD>.csv``."""
    return f"payments-{biller_code}-{settlement_date:%Y%m%d}.csv"


def approved_row(record: PaymentRecord, receipt: str) -> PaymentsFileRow:
    """The ``approved`` row of an approved payment (the RRN as the biller was sent it)."""
    return PaymentsFileRow(
        payment_id=record.payment_id,
        settlement_date=record.settlement_date,
        account=record.account,
        bill_id=record.bill_id,
        amount=record.amount,
        acquirer=record.key.acquirer,
        rrn=record.key.rrn.strip(),
        channel=record.channel,
        receipt=receipt,
        status="approved",
    )


def reversed_row(record: PaymentRecord, receipt: str, amount: int) -> PaymentsFileRow:
    """The ``reversed`` row of a reversal of ``record``: the payment's own fields (its
    settlement date too, which may be earlier than the file's) and the reversed amount."""
    return PaymentsFileRow(
        payment_id=record.payment_id,
        settlement_date=record.settlement_date,
        account=record.account,
        bill_id=record.bill_id,
        amount=amount,
        acquirer=record.key.acquirer,
        rrn=record.key.rrn.strip(),
        channel=record.channel,
        receipt=receipt,
        status="reversed",
    )


class PaymentsFileWriter:
    """A payments file written page by page onto a text stream (header first, trailer
    last), so that a day of a million payments never needs to be in memory.

    :meth:`entries` is the hub's path (a page of journal entries at a time, one
    formatted string, one write); :meth:`rows` is the plain one, kept as the
    reference the tests hold :meth:`entries` to, byte for byte.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(PAYMENTS_FILE_HEADER)
        self.counts = {"approved": 0, "reversed": 0}
        self.sums = {"approved": 0, "reversed": 0}
        self._days: dict[date, str] = {}

    def rows(self, rows: Iterable[PaymentsFileRow]) -> None:
        """Raises ``ValueError`` for a negative amount (a programming error upstream)."""
        for r in rows:
            if r.amount < 0:
                raise ValueError("payments file amounts must be >= 0")
            self._writer.writerow(_cells(r))
            self.counts[r.status] += 1
            self.sums[r.status] += r.amount

    def entries(self, page: Sequence[DayFileEntry], receipt_for: Callable[[str], str]) -> None:
        """One page of the journal's entries, as :meth:`rows` would write them (a
        receipt the journal does not have is ``receipt_for(payment_id)``).

        Each line is one f-string; a page whose text has a character CSV would quote
        (``,`` inside a field, ``"``, a line break) is written through the CSV writer
        instead, so the bytes are the CSV writer's either way. Raises ``ValueError``
        for a negative amount, before writing anything of the page.
        """
        days = self._days
        lines: list[str] = []
        add = lines.append
        n_approved = n_reversed = sum_approved = sum_reversed = 0
        for status, pid, day, account, bill_id, amount, acquirer, rrn, channel, receipt in page:
            if amount < 0:
                raise ValueError("payments file amounts must be >= 0")
            iso = days.get(day)
            if iso is None:
                iso = days[day] = day.isoformat()
            add(
                f"{pid},{iso},{account},{bill_id or ''},{amount},{acquirer},{rrn},{channel},"
                f"{receipt or receipt_for(pid)},{status}\n"
            )
            if status == "approved":
                n_approved += 1
                sum_approved += amount
            else:
                n_reversed += 1
                sum_reversed += amount
        text = "".join(lines)
        if (
            text.count(",") != _COMMAS * len(lines)
            or text.count("\n") != len(lines)
            or '"' in text
            or "\r" in text
        ):
            buf = io.StringIO(newline="")
            csv.writer(buf, lineterminator="\n").writerows(
                _cells(file_row(e, receipt_for)) for e in page
            )
            text = buf.getvalue()
        self._out.write(text)
        self.counts["approved"] += n_approved
        self.counts["reversed"] += n_reversed
        self.sums["approved"] += sum_approved
        self.sums["reversed"] += sum_reversed

    def trailer(self) -> None:
        self._writer.writerow(
            (
                "TOTAL",
                str(self.counts["approved"]),
                str(self.sums["approved"]),
                str(self.counts["reversed"]),
                str(self.sums["reversed"]),
            )
        )


_COMMAS = len(PAYMENTS_FILE_HEADER) - 1  # per line, when no field holds one


def _cells(r: PaymentsFileRow) -> tuple[str, ...]:
    return (
        r.payment_id,
        r.settlement_date.isoformat(),
        r.account,
        r.bill_id or "",
        str(r.amount),
        r.acquirer,
        r.rrn,
        r.channel,
        r.receipt,
        r.status,
    )


def file_row(entry: DayFileEntry, receipt_for: Callable[[str], str]) -> PaymentsFileRow:
    """The row of a journal entry (its receipt, or ``receipt_for(payment_id)``)."""
    return PaymentsFileRow(
        payment_id=entry.payment_id,
        settlement_date=entry.settlement_date,
        account=entry.account,
        bill_id=entry.bill_id,
        amount=entry.amount,
        acquirer=entry.acquirer,
        rrn=entry.rrn,
        channel=entry.channel,
        receipt=entry.receipt or receipt_for(entry.payment_id),
        status=entry.status,
    )


def render(rows: Iterable[PaymentsFileRow]) -> str:
    """The whole file: header, ``rows`` in the order given, trailer.

    Raises ``ValueError`` for a negative amount (a programming error upstream).
    """
    out = io.StringIO(newline="")
    writer = PaymentsFileWriter(out)
    writer.rows(rows)
    writer.trailer()
    return out.getvalue()
