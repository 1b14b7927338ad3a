"""The bills file of a batch biller (BILLERS.md section 3): its name and its rows; pure.

A bills file is loaded whole or not at all, so :func:`parse_bills_file` either
returns every row or raises one :class:`BillsFileError` naming the first bad row
(1-based, the header is row 1) and why it is bad. The rules are strict on purpose:
a file the hub half-understands would answer citizens with wrong amounts.

* UTF-8 without a byte order mark; the header is exactly :data:`BILLS_FILE_HEADER`.
* Every row has exactly seven fields; no field holds a control character; no blank rows.
* ``account``: 1-28 printable ASCII characters without spaces (DE 102 is ``ans ..28``).
* ``customer_name``: not blank.
* ``bill_id``: 1-20 of ``A-Z a-z 0-9 -`` (it goes into DE 48 ``BL`` as it is), at most
  once per file.
* ``period``: ``YYYYMM`` with a month 01-12; ``due_date``: a real ``YYYY-MM-DD``.
* ``amount``: minor units, ASCII digits only (no sign, no decimals), at most 12 digits
  (DE 4 is ``n 12``).
* ``status``: ``open``, ``paid``, ``cancelled`` or ``blocked``.

Error reasons never repeat a field's value: they end up in logs and ``.reason``
files, and a row holds a customer's name and account.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date

from billhub.errors import BillhubError
from billhub.pipeline.model import BillRow, BillStatus

__all__ = [
    "BILLS_FILE_HEADER",
    "BillRow",
    "BillStatus",
    "BillsFileError",
    "BillsFileName",
    "parse_bills_file",
    "parse_bills_file_name",
]

BILLS_FILE_HEADER: tuple[str, ...] = (
    "account",
    "customer_name",
    "bill_id",
    "period",
    "due_date",
    "amount",
    "status",
)

_STATUSES: dict[str, BillStatus] = {
    "open": "open",
    "paid": "paid",
    "cancelled": "cancelled",
    "blocked": "blocked",
}

_ACCOUNT_RE = re.compile(r"[\x21-\x7e]{1,28}")
_BILL_ID_RE = re.compile(r"[A-Za-z0-9-]{1,20}")
_PERIOD_RE = re.compile(r"[0-9]{4}(?:0[1-9]|1[0-2])")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_AMOUNT_RE = re.compile(r"[0-9]{1,12}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: A whole good row at once (its fields joined by U+001F, a control character no good
#: field holds): most rows of a file are good, and one match costs far less than a
#: check per field. A row it does not match is checked field by field for the reason.
_GOOD_ROW_RE = re.compile(
    r"[\x21-\x7e]{1,28}\x1f[^\x00-\x1f\x7f]*\x1f[A-Za-z0-9-]{1,20}\x1f"
    r"[0-9]{4}(?:0[1-9]|1[0-2])\x1f[0-9]{4}-[0-9]{2}-[0-9]{2}\x1f[0-9]{1,12}\x1f"
    r"(?:open|paid|cancelled|blocked)"
)
_NAME_RE = re.compile(r"bills-([A-Za-z0-9]{1,20})-([0-9]{8})-([1-9][0-9]{0,8})\.csv")


class BillsFileError(BillhubError):
    """A bills file is malformed; ``row`` is 1-based (the header is row 1)."""

    def __init__(self, row: int, reason: str) -> None:
        super().__init__(f"row {row}: {reason}")
        self.row = row
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BillsFileName:
    """What a bills file's name says: ``bills-<biller>-<YYYYMMDD>-<seq>.csv``."""

    biller: str
    day: date
    seq: int

    @property
    def order(self) -> tuple[date, int]:
        """Issue order: by day, then by ``seq`` as a number (``-10`` after ``-9``)."""
        return (self.day, self.seq)


def parse_bills_file_name(name: str) -> BillsFileName | None:
    """Read a bills file name; ``None`` if it does not follow the pattern (or the date
    is not a real date)."""
    m = _NAME_RE.fullmatch(name)
    if m is None:
        return None
    digits = m.group(2)
    try:
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
    return BillsFileName(m.group(1), day, int(m.group(3)))


def parse_bills_file(data: bytes | str) -> list[BillRow]:
    """Parse and check a whole bills file; return its rows in file order.

    Raises :class:`BillsFileError` (and nothing else) for the first problem found.
    """
    text = _decode(data) if isinstance(data, bytes) else data
    if text.startswith("\ufeff"):
        raise BillsFileError(1, "byte order mark not allowed (UTF-8 without BOM)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[BillRow] = []
    seen: set[str] = set()
    dates: dict[str, date] = {}  # a file has few distinct due dates
    number = 0
    try:
        for number, fields in enumerate(reader, start=1):
            if number == 1:
                if tuple(fields) != BILLS_FILE_HEADER:
                    raise BillsFileError(1, "header must be exactly " + ",".join(BILLS_FILE_HEADER))
                continue
            row = _good_row(number, fields, dates) or _parse_row(number, fields)
            if row.bill_id in seen:
                raise BillsFileError(number, "bill_id appears more than once in the file")
            seen.add(row.bill_id)
            rows.append(row)
    except csv.Error:
        raise BillsFileError(number + 1, "malformed CSV (quoting)") from None
    if number == 0:
        raise BillsFileError(1, "empty file: the header row is missing")
    return rows


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start) + 1
        raise BillsFileError(row, "not valid UTF-8") from None


def _good_row(number: int, fields: list[str], dates: dict[str, date]) -> BillRow | None:
    """The row if it is good as a whole (the common case), else None: then
    :func:`_parse_row` finds what is wrong with it."""
    if not _GOOD_ROW_RE.fullmatch("\x1f".join(fields)):
        return None
    account, customer_name, bill_id, period, due, amount, status = fields
    name = customer_name.strip()
    due_date = dates.get(due)
    if due_date is None:
        due_date = _parse_date(due)
        if due_date is None:
            return None
        dates[due] = due_date
    if not name:
        return None
    return BillRow(number, account, name, bill_id, period, due_date, int(amount), _STATUSES[status])


def _parse_row(number: int, fields: list[str]) -> BillRow:
    def bad(reason: str) -> BillsFileError:
        return BillsFileError(number, reason)

    if not fields:
        raise bad("blank row")
    if len(fields) != len(BILLS_FILE_HEADER):
        raise bad(f"expected {len(BILLS_FILE_HEADER)} fields, got {len(fields)}")
    for name, value in zip(BILLS_FILE_HEADER, fields, strict=True):
        if _CONTROL_RE.search(value):
            raise bad(f"{name} holds a control character")
    account, customer_name, bill_id, period, due, amount, status = fields
    if not _ACCOUNT_RE.fullmatch(account):
        raise bad("account must be 1-28 printable ASCII characters without spaces")
    if not customer_name.strip():
        raise bad("customer_name is empty")
    if not _BILL_ID_RE.fullmatch(bill_id):
        raise bad("bill_id must be 1-20 of A-Z a-z 0-9 -")
    if not _PERIOD_RE.fullmatch(period):
        raise bad("period must be YYYYMM")
    due_date = _parse_date(due)
    if due_date is None:
        raise bad("due_date must be a valid YYYY-MM-DD date")
    if not _AMOUNT_RE.fullmatch(amount):
        raise bad("amount must be a non-negative integer of minor units (at most 12 digits)")
    row_status = _STATUSES.get(status)
    if row_status is None:
        raise bad("status must be open, paid, cancelled or blocked")
    return BillRow(
        row=number,
        account=account,
        customer_name=customer_name.strip(),
        bill_id=bill_id,
        period=period,
        due_date=due_date,
        amount=int(amount),
        status=row_status,
    )


def _parse_date(text: str) -> date | None:
    if not _DATE_RE.fullmatch(text):
        return None
    try:
        return date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return None
