"""DE 48 bill data: tag-length-value subfields and the 46-byte ``BL`` records.

The one place that reads and writes DE 48 (LINK-SPEC 4). Lengths count UTF-8
bytes, because customer names are Arabic. Unknown tags are kept and ignored, as
the contract asks of a receiver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from billhub.errors import DecodeError, LocalProtocolError

_TAG = re.compile(rb"[A-Z0-9]{2}")
_BILL_ID = re.compile(r"[A-Za-z0-9-]{1,20}")
_RECEIPT = re.compile(r"[A-Za-z0-9-]{1,20}")
BILL_RECORD_LEN = 46
MAX_BILLS = 12


@dataclass(frozen=True, slots=True)
class BillRecord:
    """One open bill as DE 48 ``BL`` lists it; ``amount`` in minor units."""

    bill_id: str
    period: str  # YYYYMM
    due_date: str  # YYYYMMDD
    amount: int


def _bad(tag: str, offset: int, expected: str) -> DecodeError:
    return DecodeError(f"DE 48 {tag}".rstrip(), offset, expected)


def parse_tlv(value: str) -> dict[str, str]:
    """Split DE 48 into its subfields; raise :class:`DecodeError` naming tag and offset.

    A repeated tag keeps its first value: the contract gives each tag once.
    """
    raw = value.encode("utf-8")
    out: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        if len(raw) - pos < 5:
            raise _bad("", pos, "a tag and a 3-digit length")
        tag_b, len_b = raw[pos : pos + 2], raw[pos + 2 : pos + 5]
        if not _TAG.fullmatch(tag_b):
            raise _bad("", pos, "a 2-character tag")
        tag = tag_b.decode("ascii")
        if not len_b.isdigit():
            raise _bad(tag, pos + 2, "a 3-digit length")
        n = int(len_b)
        start = pos + 5
        if start + n > len(raw):
            raise _bad(tag, start, f"{n} bytes of value")
        try:
            text = raw[start : start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(tag, start, "UTF-8 text (length splits a character)") from None
        out.setdefault(tag, text)
        pos = start + n
    return out


def build_tlv(items: list[tuple[str, str]]) -> str:
    """Join subfields in the given order; raise :class:`LocalProtocolError` if one cannot fit."""
    parts = []
    for tag, text in items:
        if not _TAG.fullmatch(tag.encode("ascii", "replace")):
            raise LocalProtocolError(f"DE 48 tag {tag!r} is not 2 characters")
        n = len(text.encode("utf-8"))
        if n > 999:
            raise LocalProtocolError(f"DE 48 {tag} longer than 999 bytes")
        parts.append(f"{tag}{n:03d}{text}")
    return "".join(parts)


def format_bills(bills: list[BillRecord]) -> str:
    """The ``BL`` value: at most the 12 oldest bills (the caller orders them oldest first)."""
    out = []
    for b in bills[:MAX_BILLS]:
        if not _BILL_ID.fullmatch(b.bill_id):
            raise LocalProtocolError("bill id must be 1-20 of A-Z a-z 0-9 -")
        if not (len(b.period) == 6 and b.period.isascii() and b.period.isdigit()):
            raise LocalProtocolError("bill period must be YYYYMM")
        if not (len(b.due_date) == 8 and b.due_date.isascii() and b.due_date.isdigit()):
            raise LocalProtocolError("bill due date must be YYYYMMDD")
        if not 0 <= b.amount < 10**12:
            raise LocalProtocolError("bill amount must fit n 12")
        out.append(f"{b.bill_id:<20}{b.period}{b.due_date}{b.amount:012d}")
    return "".join(out)


def parse_bills(value: str) -> list[BillRecord]:
    """Read a ``BL`` value back into records; raise :class:`DecodeError` on a bad record."""
    if len(value) % BILL_RECORD_LEN:
        raise _bad("BL", len(value) - len(value) % BILL_RECORD_LEN, "46-byte records")
    bills = []
    for i in range(0, len(value), BILL_RECORD_LEN):
        rec = value[i : i + BILL_RECORD_LEN]
        bill_id, period, due, amount = rec[:20].rstrip(" "), rec[20:26], rec[26:34], rec[34:46]
        digits = period + due + amount  # ASCII only: str.isdigit() also takes '²' and '٣'
        if not _BILL_ID.fullmatch(bill_id) or not (digits.isascii() and digits.isdigit()):
            raise _bad("BL", i, "bill id (ans 20) + YYYYMM + YYYYMMDD + n 12")
        bills.append(BillRecord(bill_id, period, due, int(amount)))
    return bills


def valid_bill_id(value: str) -> bool:
    """Whether a ``BI`` value is a well-formed bill id."""
    return _BILL_ID.fullmatch(value) is not None


def valid_receipt(value: str) -> bool:
    """Whether a receipt fits ``RN`` (1-20 of A-Z a-z 0-9 -)."""
    return _RECEIPT.fullmatch(value) is not None
