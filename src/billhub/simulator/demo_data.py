"""Deterministic demo subscribers and bills for the simulated billers.

The demo billers, the benchmarks and the end-to-end tests must all agree on the
same subscribers without sharing state: a REST biller started as a subprocess and
the test that drives it each call :func:`generate_accounts` with the same prefix,
count, seed and ``today`` and get identical data.  Everything random comes from
one seeded :class:`random.Random`; nothing reads the clock (``today`` is passed
in), so a run can be replayed exactly.

The data is shaped to exercise the hub, not just to fill a table.  Every kind of
subscriber the hub must answer differently is present once ``n >= 6`` (the first
six accounts are one of each kind, the rest are drawn by weight):

* active with open bills (the common case, answered ``00``);
* active and fully paid: nothing due (``51``);
* blocked and closed (``58``);
* partial payment allowed, with a minimum (``PA``/``MN``, amount rules ``13``);
* more than twelve open bills, so DE 48 ``BL`` truncation is exercised.

Account numbers are 10 digits as printed on a bill: a 2-digit governorate
prefix and 8 digits.  Bill ids follow the companies' printed form
``DM-2026-11-000187`` (governorate code, year, month, serial): ASCII letters,
digits and ``-``, at most 20 characters, so they fit DE 48 ``BL`` as they are.
Amounts are ``int`` minor units (Syrian pounds x 100), never ``float``.
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, TextIO

from billhub.connectors.billsfile import BILLS_FILE_HEADER

__all__ = [
    "BILLS_FILE_HEADER",
    "GOVERNORATES",
    "AccountStatus",
    "DemoAccount",
    "DemoBill",
    "Governorate",
    "bills_file_name",
    "bills_file_rows",
    "bills_table_rows",
    "generate_accounts",
    "write_bills_file",
]

AccountStatus = Literal["active", "blocked", "closed"]
"""The account states of the biller contract (BILLERS.md, question 1)."""

BillRowStatus = Literal["open", "paid", "cancelled", "blocked"]

"""The bills file header of BILLERS.md section 3, in order; the loader checks it."""

MIN_BILL_AMOUNT = 150_000
"""1,500.00 SYP: a small household's bill; no generated bill is below it."""

MAX_BILL_AMOUNT = 5_000_000
"""50,000.00 SYP: a large household in winter; no generated bill is above it."""

BL_MAX_BILLS = 12
"""DE 48 ``BL`` lists at most this many bills; "many bills" accounts exceed it."""

_BILL_ID_RE = re.compile(r"[A-Za-z0-9-]{1,20}")
_PREFIX_RE = re.compile(r"[0-9]{2}")
_BILLER_CODE_RE = re.compile(r"[A-Za-z0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class Governorate:
    """A governorate's electricity company as the demo data names it.

    ``code`` starts every bill id of that company, the way the companies print it.
    """

    prefix: str
    code: str
    name_en: str
    name_ar: str


GOVERNORATES: Mapping[str, Governorate] = {
    g.prefix: g
    for g in (
        Governorate("01", "DM", "Damascus", "دمشق"),
        Governorate("02", "RD", "Rif Dimashq", "ريف دمشق"),
        Governorate("03", "AL", "Aleppo", "حلب"),
        Governorate("04", "HM", "Homs", "حمص"),
        Governorate("05", "HA", "Hama", "حماة"),
        Governorate("06", "LT", "Latakia", "اللاذقية"),
        Governorate("07", "TR", "Tartus", "طرطوس"),
        Governorate("08", "ID", "Idlib", "إدلب"),
        Governorate("09", "DZ", "Deir ez-Zor", "دير الزور"),
        Governorate("10", "RQ", "Raqqa", "الرقة"),
        Governorate("11", "HS", "Al-Hasakah", "الحسكة"),
        Governorate("12", "DR", "Daraa", "درعا"),
        Governorate("13", "SW", "As-Suwayda", "السويداء"),
        Governorate("14", "QN", "Quneitra", "القنيطرة"),
    )
}
"""Known account prefixes.  Another 2-digit prefix still works, with code ``G<prefix>``."""

_MALE_FIRST_NAMES: tuple[str, ...] = (
    "محمد", "أحمد", "علي", "حسن", "حسين", "خالد", "عمر", "محمود", "مصطفى",
    "إبراهيم", "يوسف", "عبد الله", "عبد الرحمن", "سامر", "باسل", "رامي", "فادي",
    "ماهر", "وائل", "عماد", "جورج", "إلياس", "ميشيل", "نبيل", "طارق", "زياد",
    "هيثم", "بشير", "غسان", "منير", "سليم", "كريم", "أنس", "معاذ", "عدنان",
    "فراس", "مازن", "نزار", "حازم", "رياض",
)  # fmt: skip

_FEMALE_FIRST_NAMES: tuple[str, ...] = (
    "فاطمة", "مريم", "زينب", "عائشة", "خديجة", "سعاد", "هدى", "رنا", "ريم",
    "لينا", "نور", "سلمى", "ديما", "رشا", "هبة", "منى", "سوسن", "ليلى", "جميلة",
    "سميرة", "رولا", "كندة", "لمى", "ياسمين", "نادية", "وفاء", "أمل", "غادة",
)  # fmt: skip

_FAMILY_NAMES: tuple[str, ...] = (
    "الأحمد", "الحلبي", "الشامي", "الحمصي", "الخطيب", "العلي", "الحسن", "الإدلبي",
    "الدمشقي", "القاسم", "السيد", "النجار", "الحداد", "العطار", "الصباغ", "الخياط",
    "الزعبي", "الحريري", "المقداد", "الأسعد", "البيطار", "الجابري", "الحموي",
    "الدروبي", "الأتاسي", "السباعي", "الكيالي", "المصري", "العمر", "الخليل",
    "قباني", "شاهين", "طرابيشي", "عيسى", "سليمان", "يوسف", "خوري", "نصر", "حداد",
    "مراد", "داود", "زيدان", "عثمان", "بكور",
)  # fmt: skip

_FIRST_NAMES = _MALE_FIRST_NAMES + _FEMALE_FIRST_NAMES

_Kind = Literal["open", "paid_up", "blocked", "closed", "partial", "many"]

_FIRST_KINDS: tuple[_Kind, ...] = ("open", "paid_up", "blocked", "closed", "partial", "many")
_KIND_WEIGHTS: tuple[tuple[_Kind, int], ...] = (
    ("open", 58),
    ("paid_up", 12),
    ("blocked", 6),
    ("closed", 6),
    ("partial", 12),
    ("many", 6),
)


@dataclass(frozen=True, slots=True)
class DemoBill:
    """One bill; ``amount`` is what is still due, in minor units."""

    bill_id: str
    period: str
    due_date: date
    amount: int


@dataclass(frozen=True, slots=True)
class DemoAccount:
    """A subscriber as the biller knows it.

    ``bills`` are the open bills, oldest first.  ``min_payment`` is 0 unless
    ``partial_allowed``.  ``paid_bills`` (settled at the company's counter) and
    ``cancelled_bills`` (voided and re-issued) are history: no biller offers them,
    but the bills file lists them so the hub's loader sees every row status.
    """

    account: str
    customer_name: str
    status: AccountStatus
    partial_allowed: bool
    min_payment: int
    bills: tuple[DemoBill, ...]
    paid_bills: tuple[DemoBill, ...] = ()
    cancelled_bills: tuple[DemoBill, ...] = ()

    @property
    def total_due(self) -> int:
        """What DE 4 of an inquiry carries: the sum over every open bill."""
        return sum(b.amount for b in self.bills)


def generate_accounts(biller_prefix: str, n: int, seed: int, *, today: date) -> list[DemoAccount]:
    """Return ``n`` subscribers of the biller whose accounts start with ``biller_prefix``.

    The same arguments always give the same list.  Account numbers and names
    depend only on ``biller_prefix``, ``n`` and ``seed``; ``today`` only moves the
    billing periods, so it must be passed (never read from the clock) for a
    subprocess and its driver to agree.  The latest period is ``today``'s month
    from the 20th on (bills are issued around then), else the month before.

    Raises ``ValueError`` for a prefix that is not 2 digits or for ``n`` < 0.
    """
    if not _PREFIX_RE.fullmatch(biller_prefix):
        raise ValueError("biller_prefix must be 2 digits")
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(f"billhub-demo:{biller_prefix}:{seed}")
    code = _bill_code(biller_prefix)
    latest = _month_index(today.year, today.month) - (0 if today.day >= 20 else 1)
    serials: dict[int, int] = {}
    numbers = rng.sample(range(10**8), n)
    accounts: list[DemoAccount] = []
    for i, number in enumerate(numbers):
        kind = _FIRST_KINDS[i] if i < len(_FIRST_KINDS) else _draw_kind(rng)
        accounts.append(
            _make_account(
                rng,
                f"{biller_prefix}{number:08d}",
                kind,
                code=code,
                latest=latest,
                serials=serials,
            )
        )
    return accounts


def bills_file_name(biller_code: str, day: date, seq: int) -> str:
    """Name a bills file as BILLERS.md section 3 does: ``bills-<biller>-<YYYYMMDD>-<seq>.csv``.

    ``seq`` orders several files of one day; it is written without padding.
    Raises ``ValueError`` for an empty or non-alphanumeric biller code (it would
    make the name ambiguous) or ``seq`` < 1.
    """
    if not _BILLER_CODE_RE.fullmatch(biller_code):
        raise ValueError("biller_code must be 1-20 ASCII letters or digits")
    if seq < 1:
        raise ValueError("seq must be >= 1")
    return f"bills-{biller_code}-{day:%Y%m%d}-{seq}.csv"


def bills_file_rows(
    accounts: Iterable[DemoAccount], *, include_history: bool = True
) -> Iterator[dict[str, str]]:
    """Yield the bills file rows of ``accounts``, keyed by :data:`BILLS_FILE_HEADER`.

    A blocked account's rows all say ``blocked``.  The batch format has no
    ``closed``, so a closed account's rows say ``blocked`` too: the hub answers
    ``58`` for both.  With ``include_history`` an active account's paid and
    cancelled bills come first, as ``paid`` and ``cancelled`` rows, so a loader
    sees rows it must not offer.
    """
    for acc in accounts:
        rows: list[tuple[DemoBill, BillRowStatus]] = []
        if acc.status == "active":
            if include_history:
                rows += [(b, "paid") for b in acc.paid_bills]
                rows += [(b, "cancelled") for b in acc.cancelled_bills]
            rows += [(b, "open") for b in acc.bills]
        else:
            rows += [(b, "blocked") for b in acc.bills]
        for bill, status in rows:
            yield {
                "account": acc.account,
                "customer_name": acc.customer_name,
                "bill_id": bill.bill_id,
                "period": bill.period,
                "due_date": bill.due_date.isoformat(),
                "amount": str(bill.amount),
                "status": status,
            }


def bills_table_rows(accounts: Iterable[DemoAccount]) -> Iterator[tuple[object, ...]]:
    """Yield the rows of the default biller database's ``bills`` table (BILLERS.md 2,
    ``specs/biller-database.md``), in its column order: ``bill_id, account,
    customer_name, account_status, partial_allowed, min_payment, period, due_date,
    amount, paid``.

    Open bills have ``paid`` 0; an active account's paid bills come first with
    ``paid = amount``, so a paid-up account is known and has nothing due (``51``),
    not unknown (``14``). Cancelled bills were voided and are not there. A closed
    account with no bill left has no row: that schema knows accounts only by their
    bills.
    """
    for acc in accounts:
        rows = [(b, b.amount) for b in acc.paid_bills] if acc.status == "active" else []
        rows += [(b, 0) for b in acc.bills]
        for bill, paid in rows:
            yield (
                bill.bill_id,
                acc.account,
                acc.customer_name,
                acc.status,
                acc.partial_allowed,
                acc.min_payment if acc.partial_allowed else 0,
                bill.period,
                bill.due_date,
                bill.amount,
                paid,
            )


def write_bills_file(
    directory: str | os.PathLike[str],
    biller_code: str,
    accounts: Iterable[DemoAccount],
    *,
    day: date,
    seq: int = 1,
    include_history: bool = True,
) -> Path:
    """Write the bills file of ``accounts`` into ``directory`` (a biller's inbox); return its path.

    The file is named by :func:`bills_file_name` and is UTF-8 without a BOM,
    ``\\n`` line ends, in the exact BILLERS.md section 3 format (rows as
    :func:`bills_file_rows`).  It is written under a hidden temporary name and
    renamed when complete, because the hub watches the inbox and would reject a
    half-written file.  An existing file of the same name is replaced.
    """
    target = Path(directory) / bills_file_name(biller_code, day, seq)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            _write_rows(fh, bills_file_rows(accounts, include_history=include_history))
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _write_rows(fh: TextIO, rows: Iterable[dict[str, str]]) -> None:
    writer = csv.DictWriter(fh, fieldnames=BILLS_FILE_HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _bill_code(prefix: str) -> str:
    gov = GOVERNORATES.get(prefix)
    return gov.code if gov is not None else f"G{prefix}"


def _draw_kind(rng: random.Random) -> _Kind:
    kinds = [k for k, _ in _KIND_WEIGHTS]
    weights = [w for _, w in _KIND_WEIGHTS]
    return rng.choices(kinds, weights)[0]


def _customer_name(rng: random.Random) -> str:
    first = rng.choice(_FIRST_NAMES)
    family = rng.choice(_FAMILY_NAMES)
    # Bills often print the father's name between the two, as the civil registry does.
    if rng.random() < 0.3:
        return f"{first} {rng.choice(_MALE_FIRST_NAMES)} {family}"
    return f"{first} {family}"


def _make_account(
    rng: random.Random,
    account: str,
    kind: _Kind,
    *,
    code: str,
    latest: int,
    serials: dict[int, int],
) -> DemoAccount:
    name = _customer_name(rng)
    # Each household has its own consumption level; log-uniform so that most
    # bills are modest and a few are large, as in a real billing run.
    base = math.exp(rng.uniform(math.log(300_000), math.log(2_400_000)))

    def bill(month: int) -> DemoBill:
        return _make_bill(rng, code, month, base, serials)

    def run(count: int, newest: int) -> tuple[DemoBill, ...]:
        return tuple(bill(m) for m in range(newest - count + 1, newest + 1))

    status: AccountStatus = "active"
    partial = False
    min_payment = 0
    open_bills: tuple[DemoBill, ...] = ()
    paid: tuple[DemoBill, ...] = ()
    cancelled: tuple[DemoBill, ...] = ()
    if kind == "open":
        n_open = rng.choices((1, 2, 3), (70, 20, 10))[0]
        paid = run(rng.randint(0, 3), latest - n_open)
        if rng.random() < 0.1:
            # A misread meter: the bill was voided and re-issued under a new id.
            cancelled = (bill(latest),)
        open_bills = run(n_open, latest)
    elif kind == "paid_up":
        paid = run(rng.randint(1, 3), latest)
    elif kind == "partial":
        partial = True
        min_payment = rng.randrange(50_000, 500_001, 10_000)
        open_bills = run(rng.randint(2, 6), latest)
    elif kind == "many":
        open_bills = run(rng.randint(BL_MAX_BILLS + 1, 36), latest)
    elif kind == "blocked":
        status = "blocked"
        open_bills = run(rng.randint(1, 8), latest)
    else:
        status = "closed"
        # The final bill of a closed account may still be unpaid.
        open_bills = run(rng.randint(0, 1), latest)
    return DemoAccount(
        account=account,
        customer_name=name,
        status=status,
        partial_allowed=partial,
        min_payment=min_payment,
        bills=open_bills,
        paid_bills=paid,
        cancelled_bills=cancelled,
    )


def _make_bill(
    rng: random.Random, code: str, month: int, base: float, serials: dict[int, int]
) -> DemoBill:
    year, mon = divmod(month, 12)
    mon += 1
    serial = serials.get(month)
    if serial is None:
        # Serials of a billing run do not start at 1 in the field either.
        serial = rng.randint(1, 999)
    serials[month] = serial + 1
    bill_id = f"{code}-{year:04d}-{mon:02d}-{serial:06d}"
    assert _BILL_ID_RE.fullmatch(bill_id), bill_id
    due_year, due_mon = divmod(month + 1, 12)
    raw = base * _SEASON[mon] * rng.uniform(0.85, 1.15)
    # Whole pounds: the companies do not bill piastres.
    amount = min(MAX_BILL_AMOUNT, max(MIN_BILL_AMOUNT, round(raw / 100) * 100))
    return DemoBill(
        bill_id=bill_id,
        period=f"{year:04d}{mon:02d}",
        due_date=date(due_year, due_mon + 1, 15),
        amount=amount,
    )


# Heating in winter and cooling in summer drive consumption.
_SEASON: Mapping[int, float] = {
    1: 1.45, 2: 1.35, 3: 1.1, 4: 0.9, 5: 0.85, 6: 1.0,
    7: 1.25, 8: 1.3, 9: 1.0, 10: 0.85, 11: 1.0, 12: 1.35,
}  # fmt: skip


def _month_index(year: int, month: int) -> int:
    return year * 12 + (month - 1)
