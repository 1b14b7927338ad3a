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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal, TextIO

from billhub.pipeline.model import PaymentRecord

__all__ = [
    "PAYMENTS_FILE_HEADER",
    "PaymentsFileRow",
    "PaymentsFileWriter",
    "RowStatus",
    "approved_row",
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
    """A payments file written row by row onto a text stream (header first, trailer
    last), so that a day of a million payments never needs to be in memory."""

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(PAYMENTS_FILE_HEADER)
        self.counts = {"approved": 0, "reversed": 0}
        self.sums = {"approved": 0, "reversed": 0}

    def rows(self, rows: Iterable[PaymentsFileRow]) -> None:
        """Raises ``ValueError`` for a negative amount (a programming error upstream)."""
        for r in rows:
            if r.amount < 0:
                raise ValueError("payments file amounts must be >= 0")
            self._writer.writerow(
                (
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
            )
            self.counts[r.status] += 1
            self.sums[r.status] += r.amount

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


def render(rows: Iterable[PaymentsFileRow]) -> str:
    """The whole file: header, ``rows`` in the order given, trailer.

    Raises ``ValueError`` for a negative amount (a programming error upstream).
    """
    out = io.StringIO(newline="")
    writer = PaymentsFileWriter(out)
    writer.rows(rows)
    writer.trailer()
    return out.getvalue()
