"""The switch's settlement file: parsed whole or rejected whole, then matched against the hub.

Parsing: a good file gives its lines; every malformed file is refused with the line
(the header is line 1) and the reason, and the reason never repeats the account.
Matching: a file with one line of each kind of difference, clean lines and noise
the hub must not count (declined, uncertain, other dates, a reversal answered 25),
classified exactly.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from billhub.pipeline.model import PaymentKey, PaymentRecord, PaymentState, ReversalRecord
from billhub.settlement.importfile import (
    HEADER,
    SettlementFileError,
    match_lines,
    parse_settlement_file,
)
from billhub.settlement.model import Finding, FindingKind, LineType, SettlementLine

SDATE = date(2025, 3, 14)
T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
HEAD = ",".join(HEADER)
SECRET = "0100SECRET99"  # the account on every line: no error may repeat it
FILE = "settle-20250314.csv"


def line(
    rrn: str = "000000000001",
    amount: str = "150000",
    kind: str = "payment",
    *,
    sdate: str = "2025-03-14",
    acquirer: str = "600001",
    stan: str = "000123",
    biller: str = "100001",
    account: str = SECRET,
) -> str:
    return ",".join((sdate, acquirer, rrn, stan, biller, account, amount, kind))


def csv_file(*lines: str, end: str = "\n") -> bytes:
    return (end.join((HEAD, *lines)) + end).encode()


# -- parsing -----------------------------------------------------------------------------


def test_good_file_parses_every_line_in_order() -> None:
    data = csv_file(
        line("000000000001", "150000"),
        line("AB12 CD34   ", "2500050", acquirer="600002", biller="100002", stan="999999"),
        line("000000000001", "150000", "reversal"),
        line("7", "1", sdate="2025-03-13", account="A-1/2_x~!"),
    )
    lines = parse_settlement_file(data)
    assert lines == [
        SettlementLine(
            2, SDATE, "600001", "000000000001", "000123", "100001", SECRET, 150000, LineType.PAYMENT
        ),
        SettlementLine(
            3,
            SDATE,
            "600002",
            "AB12 CD34   ",
            "999999",
            "100002",
            SECRET,
            2500050,
            LineType.PAYMENT,
        ),
        SettlementLine(
            4,
            SDATE,
            "600001",
            "000000000001",
            "000123",
            "100001",
            SECRET,
            150000,
            LineType.REVERSAL,
        ),
        SettlementLine(
            5,
            date(2025, 3, 13),
            "600001",
            "7",
            "000123",
            "100001",
            "A-1/2_x~!",
            1,
            LineType.PAYMENT,
        ),
    ]


def test_header_only_file_has_no_lines() -> None:
    assert parse_settlement_file(f"{HEAD}\n".encode()) == []
    assert parse_settlement_file(HEAD.encode()) == []


def test_crlf_bom_quoting_and_no_final_newline_are_tolerated() -> None:
    data = ("\ufeff" + HEAD + "\r\n" + line() + "\r\n" + line("2", account='"a,b""c"')).encode()
    lines = parse_settlement_file(data)
    assert [(x.line_no, x.rrn, x.account) for x in lines] == [
        (2, "000000000001", SECRET),
        (3, "2", 'a,b"c'),
    ]


MALFORMED = [
    # (case, file, line, reason fragment)
    ("empty file", b"", 1, "header is missing"),
    ("only a line end", b"\n", 1, "header is missing"),
    ("only a byte-order mark", "\ufeff".encode(), 1, "header is missing"),
    ("old Mac line ends", (HEAD + "\r" + line()).encode(), 1, "stray carriage return"),
    (
        "header missing a column",
        b"settlement_date,acquirer,rrn,stan,biller,account,amount\n" + line().encode(),
        1,
        "header must be exactly",
    ),
    (
        "header in another order",
        ("acquirer,settlement_date,rrn,stan,biller,account,amount,type\n" + line()).encode(),
        1,
        "header must be exactly",
    ),
    ("header in capitals", (HEAD.upper() + "\n" + line()).encode(), 1, "header must be exactly"),
    ("data instead of header", csv_file()[len(HEAD) + 1 :] + line().encode(), 1, "header"),
    (
        "bad date: no such day",
        csv_file(line(), line("2", sdate="2025-02-30")),
        3,
        "settlement_date: is not a calendar date",
    ),
    (
        "bad date: other format",
        csv_file(line(sdate="14/03/2025")),
        2,
        "settlement_date: must be YYYY-MM-DD",
    ),
    (
        "bad date: compact ISO",
        csv_file(line(sdate="20250314")),
        2,
        "settlement_date: must be YYYY-MM-DD",
    ),
    (
        "letters in amount",
        csv_file(line(), line("2"), line("3", "12a00")),
        4,
        "amount: must be a positive integer",
    ),
    ("negative amount", csv_file(line(amount="-100")), 2, "amount: must be a positive integer"),
    ("decimal amount", csv_file(line(amount="1500.00")), 2, "amount: must be a positive integer"),
    (
        "amount with a space",
        csv_file(line(amount="1 500")),
        2,
        "amount: must be a positive integer",
    ),
    ("amount with a plus", csv_file(line(amount="+1500")), 2, "amount: must be a positive integer"),
    (
        "amount with Arabic-Indic digits",
        csv_file(line(amount="١٥٠٠")),
        2,
        "amount: must be a positive integer",
    ),
    ("zero amount", csv_file(line(amount="000")), 2, "amount: must be greater than zero"),
    (
        "amount beyond DE 4",
        csv_file(line(amount="1234567890123")),
        2,
        "amount: must be a positive integer",
    ),
    ("unknown type", csv_file(line(kind="refund")), 2, "type: must be payment or reversal"),
    ("type in capitals", csv_file(line(kind="Payment")), 2, "type: must be payment or reversal"),
    ("duplicate line", csv_file(line(), line("2"), line()), 4, "duplicate of line 2"),
    (
        "duplicate up to trailing spaces",
        csv_file(line("ABC"), line("ABC   ", "99")),
        3,
        "duplicate of line 2",
    ),
    (
        "bad UTF-8",
        csv_file(line(), line("2"))[:-3] + b"\xff\xfe\n" + line("3").encode() + b"\n",
        3,
        "not valid UTF-8",
    ),
    ("too few fields", csv_file(line().rsplit(",", 1)[0]), 2, "expected 8 fields, found 7"),
    ("too many fields", csv_file(line() + ",x"), 2, "expected 8 fields, found 9"),
    ("blank line", csv_file(line(), "", line("2")), 3, "empty line"),
    ("trailing blank line", csv_file(line()) + b"\n", 3, "empty line"),
    ("stray quote", csv_file(line(account='"ab"c')), 2, "quoting"),
    ("unclosed quote", csv_file(line(account='"abc')), 2, "quoting"),
    (
        "acquirer too long",
        csv_file(line(acquirer="123456789012")),
        2,
        "acquirer: must be 1 to 11 digits",
    ),
    (
        "acquirer with letters",
        csv_file(line(acquirer="60000A")),
        2,
        "acquirer: must be 1 to 11 digits",
    ),
    ("biller missing", csv_file(line(biller="")), 2, "biller: must be 1 to 11 digits"),
    ("rrn too long", csv_file(line("0000000000001")), 2, "rrn: must be 1 to 12"),
    ("rrn with a dash", csv_file(line("0000-0001")), 2, "rrn: must be 1 to 12"),
    ("rrn blank", csv_file(line("   ")), 2, "rrn: is blank"),
    ("stan of 5 digits", csv_file(line(stan="12345")), 2, "stan: must be 6 digits"),
    (
        "account with a space",
        csv_file(line(account="0100 SECRET99")),
        2,
        "account: must be 1 to 28",
    ),
    ("account too long", csv_file(line(account=SECRET * 3)), 2, "account: must be 1 to 28"),
    ("account not ASCII", csv_file(line(account=SECRET + "é")), 2, "account: must be 1 to 28"),
    ("account empty", csv_file(line(account="")), 2, "account: must be 1 to 28"),
    ("space around a field", csv_file(line(amount=" 1500")), 2, "amount:"),
]


@pytest.mark.parametrize(
    ("case", "data", "line_no", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_file_is_rejected_whole_naming_line_and_reason(
    case: str, data: bytes, line_no: int, reason: str
) -> None:
    with pytest.raises(SettlementFileError) as info:
        parse_settlement_file(data)
    err = info.value
    assert err.line_no == line_no, case
    assert reason in err.reason, case
    assert str(err) == f"line {line_no}: {err.reason}"
    assert "SECRET" not in str(err), "an error message must not repeat the account"


def test_first_bad_line_is_the_one_named() -> None:
    data = csv_file(line(), line("2", "1x"), line("3", kind="refund"))
    with pytest.raises(SettlementFileError, match=r"^line 3: amount"):
        parse_settlement_file(data)


# -- matching ----------------------------------------------------------------------------


def pay(
    rrn: str,
    amount: int,
    *,
    acquirer: str = "600001",
    biller: str = "100001",
    state: PaymentState = PaymentState.APPROVED,
    code: str | None = "00",
    sdate: date = SDATE,
    reversed_: bool = False,
) -> PaymentRecord:
    return PaymentRecord(
        payment_id=f"P-{acquirer}-{rrn.strip()}",
        key=PaymentKey(acquirer, rrn, sdate.strftime("%m%d")),
        settlement_date=sdate,
        biller=biller,
        account=SECRET,
        bill_id=None,
        amount=amount,
        currency="760",
        channel="6012",
        forwarder="700001",
        content="",
        received_at=T0,
        state=state,
        response_code=code,
        reversed=reversed_,
    )


def rev(p: PaymentRecord, *, code: str = "00", amount: int | None = None) -> ReversalRecord:
    return ReversalRecord(
        key=p.key,
        settlement_date=p.settlement_date,
        biller=p.biller,
        amount=p.amount if amount is None else amount,
        received_at=T0 + timedelta(minutes=5),
        response_code=code,
        payment_id=p.payment_id if code == "00" else None,
        booked_on=SDATE,
    )


def test_one_difference_of_each_kind_is_classified_exactly() -> None:
    clean = pay("000000000001", 150_000)
    clean_other_acq = pay("000000000001", 99_000, acquirer="600002", biller="100002")
    padded = pay("RRN7        ", 70_000)  # DE 37 space-filled on the hub's side
    both_reversed = pay("000000000002", 200_000, reversed_=True)
    differs = pay("000000000003", 10_000)
    hub_only = pay("000000000004", 40_000, biller="100002")
    reversed_by_switch = pay("000000000005", 55_500)
    declined = pay("000000000006", 60_000, state=PaymentState.DECLINED, code="13")
    uncertain = pay("000000000007", 70_000, state=PaymentState.UNCERTAIN, code="91")
    next_day = pay("000000000008", 80_000, sdate=SDATE + timedelta(days=1))
    payments = [
        clean,
        clean_other_acq,
        padded,
        both_reversed,
        differs,
        hub_only,
        reversed_by_switch,
        declined,
        uncertain,
        next_day,
    ]
    reversals = [
        rev(both_reversed),
        rev(declined, code="25"),  # refused: not a reversal for the totals
    ]
    data = csv_file(
        line("000000000001", "150000"),  # 2 clean
        line("000000000001", "99000", acquirer="600002", biller="100002"),  # 3 clean
        line("RRN7", "70000"),  # 4 clean
        line("000000000002", "200000"),  # 5 clean
        line("000000000002", "200000", "reversal"),  # 6 clean
        line("000000000003", "10100"),  # 7 amount differs
        line("000000000005", "55500"),  # 8 clean
        line("000000000005", "55500", "reversal"),  # 9 reversed on the switch only
        line("000000000006", "60000", biller="100003"),  # 10 switch only: hub declined it
        line("000000000009", "1", sdate="2025-03-15"),  # 11 another date: not this match
    )
    lines = parse_settlement_file(data)
    matched, findings = match_lines(lines, payments, reversals, SDATE, file_name=FILE)

    assert matched == 6
    got = {f.kind: f for f in findings}
    # One finding per kind, in a deterministic order: payment lines in file order,
    # the hub's payments missing from the file, then the same for reversals.
    assert [f.kind for f in findings] == [
        FindingKind.AMOUNT_DIFFERS,
        FindingKind.SWITCH_ONLY,
        FindingKind.HUB_ONLY,
        FindingKind.REVERSED_ONE_SIDE,
    ]

    def strip(f: Finding) -> tuple[object, ...]:
        return (f.kind, f.settlement_date, f.biller, f.acquirer, f.rrn, f.hub, f.switch, f.source)

    assert strip(got[FindingKind.AMOUNT_DIFFERS]) == (
        FindingKind.AMOUNT_DIFFERS,
        SDATE,
        "100001",
        "600001",
        "000000000003",
        "100.00 SYP",
        "101.00 SYP",
        f"file:{FILE}#7",
    )
    assert "differ by 1.00 SYP" in got[FindingKind.AMOUNT_DIFFERS].detail
    assert strip(got[FindingKind.SWITCH_ONLY]) == (
        FindingKind.SWITCH_ONLY,
        SDATE,
        "100003",
        "600001",
        "000000000006",
        "",
        "600.00 SYP",
        f"file:{FILE}#10",
    )
    assert "the hub has it declined (13)" in got[FindingKind.SWITCH_ONLY].detail
    assert strip(got[FindingKind.HUB_ONLY]) == (
        FindingKind.HUB_ONLY,
        SDATE,
        "100002",
        "600001",
        "000000000004",
        "400.00 SYP",
        "",
        "",
    )
    assert "not in the switch's settlement file" in got[FindingKind.HUB_ONLY].detail
    assert strip(got[FindingKind.REVERSED_ONE_SIDE]) == (
        FindingKind.REVERSED_ONE_SIDE,
        SDATE,
        "100001",
        "600001",
        "000000000005",
        "",
        "555.00 SYP",
        f"file:{FILE}#9",
    )
    assert "not reversed" in got[FindingKind.REVERSED_ONE_SIDE].detail
    for f in findings:
        assert SECRET not in f.detail


def test_hub_reversal_missing_from_the_file_is_reversed_on_one_side() -> None:
    p = pay("000000000004", 40_000, reversed_=True)
    data = csv_file(line("000000000004", "40000"))
    matched, findings = match_lines(
        parse_settlement_file(data), [p], [rev(p)], SDATE, file_name=FILE
    )
    assert matched == 1
    [f] = findings
    assert (f.kind, f.biller, f.acquirer, f.rrn, f.hub, f.switch, f.source) == (
        FindingKind.REVERSED_ONE_SIDE,
        "100001",
        "600001",
        "000000000004",
        "400.00 SYP",
        "",
        "",
    )
    assert "reversed by the hub only" in f.detail


def test_every_kind_in_one_file_exactly_once() -> None:
    """Exactly one line or record of each mismatch kind, plus clean ones."""
    clean = pay("1", 100)
    differs = pay("2", 200)
    hub_only = pay("3", 300)
    rev_switch = pay("4", 400)
    data = csv_file(
        line("1", "100"),
        line("2", "201"),
        line("4", "400"),
        line("4", "400", "reversal"),
        line("5", "500"),
    )
    matched, findings = match_lines(
        parse_settlement_file(data),
        [clean, differs, hub_only, rev_switch],
        [],
        SDATE,
        file_name=FILE,
    )
    assert matched == 2
    assert sorted((f.kind.value, f.rrn, f.hub, f.switch, f.source) for f in findings) == [
        ("amount_differs", "2", "2.00 SYP", "2.01 SYP", f"file:{FILE}#3"),
        ("hub_only", "3", "3.00 SYP", "", ""),
        ("reversed_one_side", "4", "", "4.00 SYP", f"file:{FILE}#5"),
        ("switch_only", "5", "", "5.00 SYP", f"file:{FILE}#6"),
    ]


def test_reversal_amounts_that_differ() -> None:
    p = pay("9", 90_000, reversed_=True)
    data = csv_file(line("9", "90000"), line("9", "9000", "reversal"))
    matched, findings = match_lines(
        parse_settlement_file(data), [p], [rev(p)], SDATE, file_name=FILE
    )
    assert matched == 1
    [f] = findings
    assert (f.kind, f.hub, f.switch, f.source) == (
        FindingKind.AMOUNT_DIFFERS,
        "900.00 SYP",
        "90.00 SYP",
        f"file:{FILE}#3",
    )
    assert "reversal amounts differ by -810.00 SYP" in f.detail


def test_same_key_for_another_biller_is_reported_for_both_companies() -> None:
    p = pay("1", 5_000, biller="100001")
    data = csv_file(line("1", "5000", biller="100002"))
    matched, findings = match_lines(parse_settlement_file(data), [p], [], SDATE, file_name=FILE)
    assert matched == 0
    assert [(f.kind, f.biller, f.hub, f.switch) for f in findings] == [
        (FindingKind.SWITCH_ONLY, "100002", "", "50.00 SYP"),
        (FindingKind.HUB_ONLY, "100001", "50.00 SYP", ""),
    ]
    assert "biller 100001" in findings[0].detail and "biller 100002" in findings[1].detail


def test_same_rrn_at_another_acquirer_is_another_payment() -> None:
    p = pay("1", 5_000, acquirer="600001")
    data = csv_file(line("1", "5000", acquirer="600002"))
    matched, findings = match_lines(parse_settlement_file(data), [p], [], SDATE, file_name=FILE)
    assert matched == 0
    assert sorted((f.kind.value, f.acquirer) for f in findings) == [
        ("hub_only", "600001"),
        ("switch_only", "600002"),
    ]


def test_a_file_that_agrees_has_no_finding() -> None:
    ps = [pay(str(i), 1_000 * i) for i in range(1, 30)]
    rs = [rev(p) for p in ps[::7]]
    body = [line(p.key.rrn, str(p.amount)) for p in ps] + [
        line(r.key.rrn, str(r.amount), "reversal") for r in rs
    ]
    matched, findings = match_lines(
        parse_settlement_file(csv_file(*body)), ps, rs, SDATE, file_name=FILE
    )
    assert (matched, findings) == (len(ps) + len(rs), [])


def test_empty_file_against_an_empty_day() -> None:
    assert match_lines([], [], [], SDATE, file_name=FILE) == (0, [])
