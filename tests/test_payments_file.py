"""The hub writes a day's payments file a page at a time with one format per line
(:meth:`PaymentsFileWriter.entries`); the company must get exactly the bytes the
plain CSV writer gives (:func:`render`), whatever the fields hold: commas, quotes
and line breaks inside a field are quoted as CSV quotes them, and the trailer's
counts and sums are those of the rows.
"""

from __future__ import annotations

import io
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billhub.connectors.paymentsfile import PaymentsFileWriter, file_row, render
from billhub.pipeline.model import DayFileEntry

DAYS = (date(2026, 11, 24), date(2026, 11, 23))


def receipt_for(payment_id: str) -> str:
    return f"B-{payment_id[::-1]}"


def written(pages: list[list[DayFileEntry]]) -> str:
    out = io.StringIO(newline="")
    writer = PaymentsFileWriter(out)
    for page in pages:
        writer.entries(page, receipt_for)
    writer.trailer()
    return out.getvalue()


def reference(pages: list[list[DayFileEntry]]) -> str:
    return render(file_row(e, receipt_for) for page in pages for e in page)


plain = st.text(alphabet="0123456789AZaz-", min_size=1, max_size=12)
tricky = st.text(alphabet='09Az ,"\r\n\u0633\u0644', min_size=0, max_size=8)
field = st.one_of(plain, plain, tricky)
entries = st.builds(
    DayFileEntry,
    status=st.sampled_from(["approved", "reversed"]),
    payment_id=plain,
    settlement_date=st.sampled_from(DAYS),
    account=field,
    bill_id=st.one_of(st.none(), field),
    amount=st.integers(min_value=0, max_value=10**15),
    acquirer=plain,
    rrn=plain,
    channel=field,
    receipt=st.one_of(st.none(), field),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(entries, max_size=6), max_size=4))
def test_pages_are_written_as_the_csv_writer_writes_the_rows(
    pages: list[list[DayFileEntry]],
) -> None:
    assert written(pages) == reference(pages)


def test_a_day_of_plain_rows_and_its_trailer() -> None:
    pages = [
        [
            DayFileEntry("approved", "P1", DAYS[0], "0100000001", None, 5, "600001",
                         "000000000001", "6013", None),
            DayFileEntry("approved", "P2", DAYS[0], "0100000002", "DM-7", 70, "600002",
                         "000000000002", "6010", "R2"),
        ],
        [
            DayFileEntry("reversed", "P0", DAYS[1], "0100000000", "DM-1", 30, "600001",
                         "000000000000", "6011", "R0"),
        ],
    ]  # fmt: skip
    assert written(pages) == (
        "payment_id,settlement_date,account,bill_id,amount,acquirer,rrn,channel,receipt,status\n"
        "P1,2026-11-24,0100000001,,5,600001,000000000001,6013,B-1P,approved\n"
        "P2,2026-11-24,0100000002,DM-7,70,600002,000000000002,6010,R2,approved\n"
        "P0,2026-11-23,0100000000,DM-1,30,600001,000000000000,6011,R0,reversed\n"
        "TOTAL,2,75,1,30\n"
    )
    assert written(pages) == reference(pages)


def test_a_field_with_a_comma_or_a_quote_is_quoted() -> None:
    page = [
        DayFileEntry("approved", "P1", DAYS[0], "01,2", None, 5, "600001", "1", "6013", 'R"1'),
    ]
    assert (
        written([page]).splitlines()[1] == 'P1,2026-11-24,"01,2",,5,600001,1,6013,"R""1",approved'
    )


def test_a_negative_amount_is_refused_before_the_page_is_written() -> None:
    out = io.StringIO(newline="")
    writer = PaymentsFileWriter(out)
    before = out.getvalue()
    page = [
        DayFileEntry("approved", "P1", DAYS[0], "01", None, 5, "600001", "1", "6013", "R1"),
        DayFileEntry("approved", "P2", DAYS[0], "02", None, -1, "600001", "2", "6013", "R2"),
    ]
    with pytest.raises(ValueError, match=">= 0"):
        writer.entries(page, receipt_for)
    assert out.getvalue() == before
    assert writer.counts == {"approved": 0, "reversed": 0}
