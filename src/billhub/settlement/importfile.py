"""The switch's daily settlement file: parse it whole, then match it against the hub.

Pure: bytes in, :class:`SettlementLine` out; lines and journal records in,
:class:`Finding` out. Reading the file, hashing it, querying the journal and
storing the outcome (so that importing the same file twice changes nothing)
belong to the caller.

The file (issue 4): CSV, UTF-8, header exactly
``settlement_date,acquirer,rrn,stan,biller,account,amount,type``. A malformed
file is rejected whole with :class:`SettlementFileError` naming the first bad
line (line 1 is the header) and what is wrong with it. Reasons name the column
and the rule, never the value: a line carries a subscriber's account number and
error messages end up in logs.

Tolerated, because every spreadsheet and CSV library produces them: CRLF line
ends, one final line end, a UTF-8 byte-order mark, and RFC 4180 quoting of a
field. Anything else is a format error: a blank line, a field count other than 8,
surrounding spaces, non-ASCII digits.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from billhub.errors import BillhubError
from billhub.iso8583 import codes as rc
from billhub.money import Amount
from billhub.pipeline.model import PaymentRecord, PaymentState, ReversalRecord
from billhub.settlement.model import Finding, FindingKind, LineType, SettlementLine

HEADER = ("settlement_date", "acquirer", "rrn", "stan", "biller", "account", "amount", "type")

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INSTITUTION = re.compile(r"[0-9]{1,11}")  # DE 32 / DE 100: LLVAR n ..11
_RRN = re.compile(r"[A-Za-z0-9 ]{1,12}")  # DE 37: an 12 (READINGS 6)
_STAN = re.compile(r"[0-9]{6}")  # DE 11: n 6
_ACCOUNT = re.compile(r"[\x21-\x7e]{1,28}")  # DE 102: ans ..28, no spaces (READINGS 13)
_AMOUNT = re.compile(r"[0-9]{1,12}")  # DE 4: n 12 minor units
_TYPES = {t.value: t for t in LineType}


class SettlementFileError(BillhubError):
    """The settlement file is malformed; nothing of it was taken.

    ``line_no`` is 1-based, the header being line 1; ``reason`` never carries a
    value from the file.
    """

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"line {line_no}: {reason}")
        self.line_no = line_no
        self.reason = reason


def parse_settlement_file(data: bytes) -> list[SettlementLine]:
    """Every line of the file, in order; raises :class:`SettlementFileError` on the first bad one.

    A header-only file is valid and yields no line. The same (acquirer, RRN
    right-stripped, settlement date, type) twice is a malformed file: DE 37 is
    unique per acquirer and settlement date.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettlementFileError(data.count(b"\n", 0, exc.start) + 1, "not valid UTF-8") from None
    raw_lines = text.removeprefix("\ufeff").split("\n")
    if raw_lines[-1] == "":
        raw_lines.pop()  # the final line end
    if raw_lines in ([], [""]):
        raise SettlementFileError(1, "empty file: the header is missing")
    seen: dict[tuple[str, str, date, LineType], int] = {}
    dates: dict[str, date] = {}  # a file holds one or two dates: parse each once
    out: list[SettlementLine] = []
    for index, raw in enumerate(raw_lines):
        line_no = index + 1
        fields = _split(raw.removesuffix("\r"), line_no)
        if line_no == 1:
            if tuple(fields) != HEADER:
                raise SettlementFileError(1, "header must be exactly " + ",".join(HEADER))
            continue
        line = _parse_line(fields, line_no, dates)
        dup_key = (line.acquirer, line.rrn.rstrip(), line.settlement_date, line.type)
        if (first := seen.get(dup_key)) is not None:
            raise SettlementFileError(
                line_no, f"duplicate of line {first} (same acquirer, rrn, settlement_date, type)"
            )
        seen[dup_key] = line_no
        out.append(line)
    return out


def _split(raw: str, line_no: int) -> list[str]:
    if raw == "":
        raise SettlementFileError(line_no, "empty line")
    if "\r" in raw:
        raise SettlementFileError(line_no, "stray carriage return")
    if '"' not in raw:
        return raw.split(",")  # no quoting: the csv module would give the same, slower
    try:
        rows = list(csv.reader([raw], strict=True))
    except csv.Error:
        raise SettlementFileError(line_no, "not a valid CSV line (quoting)") from None
    if len(rows) != 1:  # pragma: no cover - one physical line is one record here
        raise SettlementFileError(line_no, "not a valid CSV line")
    return rows[0]


def _parse_line(fields: list[str], line_no: int, dates: dict[str, date]) -> SettlementLine:
    if len(fields) != len(HEADER):
        raise SettlementFileError(line_no, f"expected {len(HEADER)} fields, found {len(fields)}")
    sdate, acquirer, rrn, stan, biller, account, amount, kind = fields

    settlement_date = dates.get(sdate)
    if settlement_date is None:
        if not _DATE.fullmatch(sdate):
            raise _bad(line_no, "settlement_date", "must be YYYY-MM-DD")
        try:
            settlement_date = dates[sdate] = date.fromisoformat(sdate)
        except ValueError:
            raise _bad(line_no, "settlement_date", "is not a calendar date") from None
    if not _INSTITUTION.fullmatch(acquirer):
        raise _bad(line_no, "acquirer", "must be 1 to 11 digits")
    if not _RRN.fullmatch(rrn):
        raise _bad(line_no, "rrn", "must be 1 to 12 letters, digits or spaces")
    if rrn.strip() == "":
        raise _bad(line_no, "rrn", "is blank")
    if not _STAN.fullmatch(stan):
        raise _bad(line_no, "stan", "must be 6 digits")
    if not _INSTITUTION.fullmatch(biller):
        raise _bad(line_no, "biller", "must be 1 to 11 digits")
    if not _ACCOUNT.fullmatch(account):
        raise _bad(line_no, "account", "must be 1 to 28 printable ASCII characters without spaces")
    if not _AMOUNT.fullmatch(amount):
        raise _bad(
            line_no, "amount", "must be a positive integer of minor units (digits only, at most 12)"
        )
    minor = int(amount)
    if minor == 0:
        raise _bad(line_no, "amount", "must be greater than zero")
    line_type = _TYPES.get(kind)
    if line_type is None:
        raise _bad(line_no, "type", "must be payment or reversal")
    return SettlementLine(
        line_no=line_no,
        settlement_date=settlement_date,
        acquirer=acquirer,
        rrn=rrn,
        stan=stan,
        biller=biller,
        account=account,
        amount=minor,
        type=line_type,
    )


def _bad(line_no: int, column: str, rule: str) -> SettlementFileError:
    return SettlementFileError(line_no, f"{column}: {rule}")


# -- matching -------------------------------------------------------------------------

_Key = tuple[str, str]  # (acquirer, rrn right-stripped)


@dataclass(frozen=True, slots=True)
class _Side:
    """One side's view of a key: who, how much, and where it came from."""

    biller: str
    amount: int
    line_no: int | None = None  # the file's line, for the switch side


def match_lines(
    lines: Iterable[SettlementLine],
    payments: Iterable[PaymentRecord],
    reversals: Iterable[ReversalRecord],
    settlement_date: date,
    *,
    file_name: str,
) -> tuple[int, list[Finding]]:
    """Compare the switch's lines of ``settlement_date`` with the hub's; (clean lines, findings).

    The hub's side: payments ``approved`` for that date (later reversed or not,
    as DE 74/86 count them) and reversals answered ``00`` for that date (DE 75/87).
    Lines, payments and reversals of other dates are ignored, so a caller with a
    file of several dates calls this once per date. Keys are (DE 32, DE 37
    right-stripped); DE 37 is unique per acquirer and settlement date.

    Every difference is one finding, never a correction:

    - ``switch_only``: a payment line without an approved hub payment (the
      detail says what the hub has instead, if anything);
    - ``hub_only``: an approved hub payment without a payment line;
    - ``amount_differs``: both sides have the payment, or the reversal, with
      other amounts;
    - ``reversed_one_side``: a reversal line without a hub reversal, or a hub
      reversal without a reversal line.

    A key that both sides have for different billers is money cleared to the
    wrong company: it is reported as one side's for each biller (``switch_only``
    and ``hub_only``, or ``reversed_one_side`` twice), so each company's
    exceptions are complete. The account is not compared: it moves no money.
    Findings come out in file order, then the hub's in key order, so the result
    is deterministic.
    """
    source_prefix = f"file:{file_name}#"
    pay_lines: dict[_Key, SettlementLine] = {}
    rev_lines: dict[_Key, SettlementLine] = {}
    for line in lines:
        if line.settlement_date != settlement_date:
            continue
        key = (line.acquirer, line.rrn.rstrip())
        (pay_lines if line.type is LineType.PAYMENT else rev_lines)[key] = line

    hub_any: dict[_Key, PaymentRecord] = {}  # any state, for the details
    hub_pay: dict[_Key, PaymentRecord] = {}
    for record in payments:
        if record.settlement_date != settlement_date:
            continue
        key = (record.key.acquirer, record.key.rrn.rstrip())
        hub_any[key] = record
        if record.state is PaymentState.APPROVED:
            hub_pay[key] = record
    hub_rev_any: dict[_Key, ReversalRecord] = {}
    hub_rev: dict[_Key, ReversalRecord] = {}
    for reversal in reversals:
        if reversal.settlement_date != settlement_date:
            continue
        key = (reversal.key.acquirer, reversal.key.rrn.rstrip())
        hub_rev_any[key] = reversal
        if reversal.response_code == rc.APPROVED:
            hub_rev[key] = reversal

    findings: list[Finding] = []
    clean = 0

    def finding(
        kind: FindingKind,
        key: _Key,
        biller: str,
        detail: str,
        *,
        hub: int | None = None,
        switch: int | None = None,
        line: SettlementLine | None = None,
    ) -> Finding:
        return Finding(
            kind=kind,
            settlement_date=settlement_date,
            biller=biller,
            detail=detail,
            hub=_fmt(hub),
            switch=_fmt(switch),
            acquirer=key[0],
            rrn=key[1],
            source=f"{source_prefix}{line.line_no}" if line is not None else "",
        )

    def compare(
        side_lines: dict[_Key, SettlementLine],
        hub: Mapping[_Key, PaymentRecord | ReversalRecord],
        *,
        noun: str,
        switch_wrong_biller: str,
        hub_wrong_biller: str,
        switch_only: FindingKind,
        hub_only: FindingKind,
        switch_only_detail: Callable[[_Key], str],
        hub_only_detail: Callable[[PaymentRecord | ReversalRecord], str],
    ) -> int:
        """One kind of line (payments, or reversals) against the hub's; returns clean lines."""
        ok = 0
        for key, line in sorted(side_lines.items(), key=lambda kv: kv[1].line_no):
            h = hub.get(key)
            if h is None:
                findings.append(
                    finding(
                        switch_only,
                        key,
                        line.biller,
                        switch_only_detail(key),
                        switch=line.amount,
                        line=line,
                    )
                )
            elif h.biller != line.biller:  # cleared to another company: each one's exception
                findings.append(
                    finding(
                        switch_only,
                        key,
                        line.biller,
                        switch_wrong_biller.format(other=h.biller),
                        switch=line.amount,
                        line=line,
                    )
                )
                findings.append(
                    finding(
                        hub_only,
                        key,
                        h.biller,
                        hub_wrong_biller.format(other=line.biller),
                        hub=h.amount,
                        line=line,
                    )
                )
            elif h.amount != line.amount:
                findings.append(
                    finding(
                        FindingKind.AMOUNT_DIFFERS,
                        key,
                        h.biller,
                        f"{noun} amounts differ by {_fmt(line.amount - h.amount)} (switch - hub)",
                        hub=h.amount,
                        switch=line.amount,
                        line=line,
                    )
                )
            else:
                ok += 1
        for key in sorted(hub.keys() - side_lines.keys()):
            h = hub[key]
            findings.append(finding(hub_only, key, h.biller, hub_only_detail(h), hub=h.amount))
        return ok

    clean += compare(
        pay_lines,
        hub_pay,
        noun="payment",
        switch_wrong_biller="payment settled by the switch for this biller; the hub approved it "
        "for biller {other}",
        hub_wrong_biller="payment approved by the hub for this biller; the switch settled it "
        "for biller {other}",
        switch_only=FindingKind.SWITCH_ONLY,
        hub_only=FindingKind.HUB_ONLY,
        switch_only_detail=lambda key: (
            "payment settled by the switch; " + _hub_payment_state(hub_any.get(key))
        ),
        hub_only_detail=lambda h: (
            "payment approved by the hub, not in the switch's settlement "
            "file" + ("; the hub has it reversed" if getattr(h, "reversed", False) else "")
        ),
    )
    clean += compare(
        rev_lines,
        hub_rev,
        noun="reversal",
        switch_wrong_biller="reversed by the switch for this biller; the hub reversed it for "
        "biller {other}",
        hub_wrong_biller="reversed by the hub for this biller; the switch reversed it for "
        "biller {other}",
        switch_only=FindingKind.REVERSED_ONE_SIDE,
        hub_only=FindingKind.REVERSED_ONE_SIDE,
        switch_only_detail=lambda key: (
            "reversed by the switch only; "
            + _hub_reversal_state(hub_rev_any.get(key), hub_any.get(key))
        ),
        hub_only_detail=lambda h: (
            "reversed by the hub only; the switch's settlement file has no reversal line"
        ),
    )
    return clean, findings


def _fmt(minor: int | None) -> str:
    """As the 0500 findings write amounts: ``1,234.50 SYP``; empty for a missing side."""
    return "" if minor is None else f"{Amount(minor).format()} SYP"


def _hub_payment_state(p: PaymentRecord | None) -> str:
    if p is None:
        return "the hub has no payment with this key"
    code = f" ({p.response_code})" if p.response_code else ""
    return f"the hub has it {p.state.value}{code}"


def _hub_reversal_state(r: ReversalRecord | None, p: PaymentRecord | None) -> str:
    if r is not None:
        return f"the hub answered the reversal {r.response_code}"
    if p is not None and p.state is PaymentState.APPROVED:
        return "the hub has the payment approved and not reversed"
    return "the hub has no reversal with this key"
