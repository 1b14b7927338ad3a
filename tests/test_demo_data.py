"""The demo data is what every simulator test and benchmark agrees on: pin its shape."""

from __future__ import annotations

import csv
import re
from datetime import date
from pathlib import Path

import pytest

from billhub.simulator.demo_data import (
    BILLS_FILE_HEADER,
    GOVERNORATES,
    MAX_BILL_AMOUNT,
    MIN_BILL_AMOUNT,
    DemoAccount,
    DemoBill,
    bills_file_name,
    bills_file_rows,
    generate_accounts,
    write_bills_file,
)

TODAY = date(2026, 11, 24)
BILL_ID = re.compile(r"[A-Za-z0-9-]{1,20}")
ARABIC = re.compile(r"[\u0600-\u06FF]")


def all_bills(acc: DemoAccount) -> tuple[DemoBill, ...]:
    return acc.paid_bills + acc.cancelled_bills + acc.bills


@pytest.fixture(scope="module")
def accounts() -> list[DemoAccount]:
    return generate_accounts("01", 300, 42, today=TODAY)


def test_same_seed_gives_the_same_accounts() -> None:
    assert generate_accounts("01", 50, 7, today=TODAY) == generate_accounts(
        "01", 50, 7, today=TODAY
    )


def test_another_seed_gives_other_accounts() -> None:
    a = generate_accounts("01", 50, 7, today=TODAY)
    b = generate_accounts("01", 50, 8, today=TODAY)
    assert [x.account for x in a] != [x.account for x in b]


def test_today_moves_the_periods_but_not_the_subscribers() -> None:
    a = generate_accounts("01", 30, 7, today=TODAY)
    b = generate_accounts("01", 30, 7, today=date(2027, 3, 2))
    assert [(x.account, x.customer_name) for x in a] == [(x.account, x.customer_name) for x in b]
    assert a[0].bills[-1].period != b[0].bills[-1].period


def test_latest_period_is_this_month_from_the_20th() -> None:
    late = generate_accounts("01", 1, 1, today=date(2026, 11, 20))
    early = generate_accounts("01", 1, 1, today=date(2026, 11, 19))
    assert late[0].bills[-1].period == "202611"
    assert late[0].bills[-1].due_date == date(2026, 12, 15)
    assert early[0].bills[-1].period == "202610"


def test_zero_accounts() -> None:
    assert generate_accounts("01", 0, 1, today=TODAY) == []


@pytest.mark.parametrize("n", [6, 300])
def test_every_kind_of_subscriber_is_present(n: int) -> None:
    accs = generate_accounts("03", n, 5, today=TODAY)
    active = [a for a in accs if a.status == "active"]
    assert any(a.bills and not a.partial_allowed and len(a.bills) <= 12 for a in active)
    assert any(not a.bills for a in active), "fully paid: nothing due"
    assert any(a.status == "blocked" for a in accs)
    assert any(a.status == "closed" for a in accs)
    assert any(a.partial_allowed and a.min_payment > 0 and a.bills for a in active)
    assert any(len(a.bills) > 12 for a in active), "DE 48 BL truncation"


def test_accounts_are_ten_digits_with_the_prefix_and_unique(accounts: list[DemoAccount]) -> None:
    numbers = [a.account for a in accounts]
    assert len(set(numbers)) == len(numbers)
    for n in numbers:
        assert re.fullmatch(r"01[0-9]{8}", n)


def test_bill_ids_are_valid_and_unique(accounts: list[DemoAccount]) -> None:
    ids = [b.bill_id for a in accounts for b in all_bills(a)]
    assert len(set(ids)) == len(ids)
    for bill_id in ids:
        assert BILL_ID.fullmatch(bill_id), bill_id
        assert re.fullmatch(r"DM-[0-9]{4}-[0-9]{2}-[0-9]{6}", bill_id), bill_id


def test_bills_are_well_formed_and_oldest_first(accounts: list[DemoAccount]) -> None:
    for acc in accounts:
        periods = [b.period for b in acc.bills]
        assert periods == sorted(periods)
        assert len(set(periods)) == len(periods)
        for b in all_bills(acc):
            assert type(b.amount) is int
            assert MIN_BILL_AMOUNT <= b.amount <= MAX_BILL_AMOUNT
            assert b.amount % 100 == 0
            assert re.fullmatch(r"20[0-9]{2}(0[1-9]|1[0-2])", b.period)
            assert b.bill_id[3:10] == f"{b.period[:4]}-{b.period[4:]}"
            assert b.due_date > date(int(b.period[:4]), int(b.period[4:]), 28)
        assert acc.total_due == sum(b.amount for b in acc.bills)


def test_min_payment_only_with_partial(accounts: list[DemoAccount]) -> None:
    for acc in accounts:
        assert type(acc.min_payment) is int
        if acc.partial_allowed:
            assert acc.min_payment > 0
            assert acc.min_payment % 10_000 == 0
        else:
            assert acc.min_payment == 0


def test_names_are_arabic_and_varied(accounts: list[DemoAccount]) -> None:
    firsts = {a.customer_name.split()[0] for a in accounts}
    families = {a.customer_name.split()[-1] for a in accounts}
    assert len(firsts) >= 30
    assert len(families) >= 30
    for acc in accounts:
        assert ARABIC.search(acc.customer_name)
        assert "," not in acc.customer_name
        assert 2 <= len(acc.customer_name.split()) <= 5


def test_each_governorate_has_its_own_bill_code() -> None:
    codes = set()
    for prefix, gov in GOVERNORATES.items():
        acc = generate_accounts(prefix, 6, 1, today=TODAY)[0]
        assert acc.account.startswith(prefix)
        assert acc.bills[0].bill_id.startswith(f"{gov.code}-")
        codes.add(gov.code)
    assert len(codes) == len(GOVERNORATES) >= 10


def test_unknown_prefix_gets_a_generic_code() -> None:
    acc = generate_accounts("99", 1, 1, today=TODAY)[0]
    assert acc.bills[0].bill_id.startswith("G99-")
    assert BILL_ID.fullmatch(acc.bills[0].bill_id)


@pytest.mark.parametrize("prefix", ["1", "001", "A1", ""])
def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        generate_accounts(prefix, 1, 1, today=TODAY)


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        generate_accounts("01", -1, 1, today=TODAY)


def test_bills_file_name() -> None:
    assert bills_file_name("100001", date(2026, 11, 24), 1) == "bills-100001-20261124-1.csv"
    assert bills_file_name("100001", date(2026, 1, 2), 12) == "bills-100001-20260102-12.csv"


@pytest.mark.parametrize(("code", "seq"), [("", 1), ("10-01", 1), ("100001", 0)])
def test_bills_file_name_refuses_ambiguous_parts(code: str, seq: int) -> None:
    with pytest.raises(ValueError):
        bills_file_name(code, TODAY, seq)


def test_bills_file_round_trips(tmp_path: Path, accounts: list[DemoAccount]) -> None:
    path = write_bills_file(tmp_path, "100001", accounts, day=TODAY, seq=3)
    assert path == tmp_path / "bills-100001-20261124-3.csv"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file left"
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "no BOM"
    assert raw.split(b"\n", 1)[0] == b"account,customer_name,bill_id,period,due_date,amount,status"
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == BILLS_FILE_HEADER
        rows = list(reader)
    assert rows == list(bills_file_rows(accounts))

    by_account = {a.account: a for a in accounts}
    for row in rows:
        acc = by_account[row["account"]]
        assert row["customer_name"] == acc.customer_name
        assert int(row["amount"]) > 0
        assert date.fromisoformat(row["due_date"])
        if acc.status != "active":
            assert row["status"] == "blocked"
    assert {r["status"] for r in rows} == {"open", "paid", "cancelled", "blocked"}

    open_rows = [
        (r["account"], r["bill_id"], int(r["amount"])) for r in rows if r["status"] == "open"
    ]
    expected = [
        (a.account, b.bill_id, b.amount) for a in accounts if a.status == "active" for b in a.bills
    ]
    assert open_rows == expected


def test_bills_file_keeps_arabic_names_byte_exact(tmp_path: Path) -> None:
    acc = DemoAccount(
        account="0100123456",
        customer_name="محمد الأحمد",
        status="active",
        partial_allowed=False,
        min_payment=0,
        bills=(DemoBill("DM-2026-11-000187", "202611", date(2026, 12, 15), 1250000),),
    )
    path = write_bills_file(tmp_path, "100001", [acc], day=TODAY)
    assert (
        path.read_bytes()
        == (
            "account,customer_name,bill_id,period,due_date,amount,status\n"
            "0100123456,محمد الأحمد,DM-2026-11-000187,202611,2026-12-15,1250000,open\n"
        ).encode()
    )


def test_bills_file_without_history(tmp_path: Path, accounts: list[DemoAccount]) -> None:
    path = write_bills_file(tmp_path, "100001", accounts, day=TODAY, include_history=False)
    with path.open(encoding="utf-8", newline="") as fh:
        statuses = {r["status"] for r in csv.DictReader(fh)}
    assert statuses == {"open", "blocked"}


def test_write_replaces_an_existing_file(tmp_path: Path, accounts: list[DemoAccount]) -> None:
    first = write_bills_file(tmp_path, "100001", accounts[:3], day=TODAY)
    second = write_bills_file(tmp_path, "100001", accounts[:1], day=TODAY)
    assert first == second
    assert second.read_text(encoding="utf-8").count("\n") == 1 + len(
        list(bills_file_rows(accounts[:1]))
    )
