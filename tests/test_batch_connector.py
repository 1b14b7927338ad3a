"""The batch connector (BILLERS.md section 3): bills files in, payments files out.

Bills files are written by the simulator's own writer (the exact format), except the
malformed ones, which are written by hand. The bills store is the real one, in a real
SQLite journal; the payments the journal tells the connector about (for payments
files) are faked by :class:`FakeLedger`. A payment is "approved" only when a test
says so (:meth:`Env.approve`), as the pipeline does after ``post_payment`` returns:
the journal then writes it with the bills it took.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import pytest

from billhub.config import BatchSettings, BillerConfig, JournalConfig
from billhub.connectors.batch import BatchConnector, LoadOutcome, LoadResult
from billhub.connectors.billsfile import (
    BillsFileError,
    parse_bills_file,
    parse_bills_file_name,
)
from billhub.connectors.paymentsfile import PaymentsFileRow, render
from billhub.connectors.registry import ConnectorContext, build_biller
from billhub.errors import BillerRejected, BillerUnavailable, BillTaken, ConfigError, JournalError
from billhub.journal.dayfile_sql import payments_file_entries
from billhub.journal.factory import JournalSet, build_journal
from billhub.pipeline.model import (
    AccountStatus,
    DayFileEntry,
    PaymentKey,
    PaymentOrder,
    PaymentRecord,
    PaymentState,
    PostingStatus,
    ReversalRecord,
)
from billhub.pipeline.ports import Biller, PaymentsLedger
from billhub.simulator.demo_data import (
    DemoAccount,
    DemoBill,
    bills_file_name,
    generate_accounts,
    write_bills_file,
)

CODE = "100001"
TODAY = date(2026, 11, 24)
DAY1 = date(2026, 11, 20)
DAY2 = date(2026, 11, 21)
PAID_AT = datetime(2026, 11, 24, 9, 45, 12, tzinfo=UTC)
RECEIPT = re.compile(r"[A-Za-z0-9-]{1,20}")
HEADER = "account,customer_name,bill_id,period,due_date,amount,status\n"


# --------------------------------------------------------------------------- helpers


def bill(bill_id: str, period: str, amount: int, due: date | None = None) -> DemoBill:
    if due is None:
        due = date(int(period[:4]), int(period[4:]), 28)
    return DemoBill(bill_id, period, due, amount)


def account(
    number: str,
    *bills: DemoBill,
    name: str = "محمد الأحمد",
    status: str = "active",
    paid: tuple[DemoBill, ...] = (),
    cancelled: tuple[DemoBill, ...] = (),
) -> DemoAccount:
    return DemoAccount(
        account=number,
        customer_name=name,
        status=status,  # type: ignore[arg-type]
        partial_allowed=False,
        min_payment=0,
        bills=tuple(bills),
        paid_bills=paid,
        cancelled_bills=cancelled,
    )


A1 = bill("DM-2026-09-000101", "202609", 150_000)
A2 = bill("DM-2026-10-000101", "202610", 200_000)
B1 = bill("DM-2026-10-000102", "202610", 300_000)
C1 = bill("DM-2026-10-000103", "202610", 400_000)
H1 = bill("DM-2026-08-000101", "202608", 90_000)
X1 = bill("DM-2026-09-000104", "202609", 110_000)

ALICE = account("0100000001", A1, A2, paid=(H1,), cancelled=(X1,))
BOB = account("0100000002", B1, name="رنا الحلبي")
CAROL = account("0100000003", C1, status="blocked")
PAID_UP = account("0100000004", paid=(bill("DM-2026-10-000104", "202610", 50_000),))
FIRST = [ALICE, BOB, CAROL, PAID_UP]


def order(
    payment_id: str,
    acct: str,
    amount: int,
    bill_id: str | None = None,
    *,
    rrn: str = "000000000001",
    paid_at: datetime = PAID_AT,
) -> PaymentOrder:
    return PaymentOrder(
        payment_id=payment_id,
        account=acct,
        bill_id=bill_id,
        amount=amount,
        settlement_date=TODAY,
        acquirer="600001",
        rrn=rrn,
        channel="6013",
        paid_at=paid_at,
    )


def record_of(o: PaymentOrder, receipt: str | None) -> PaymentRecord:
    return PaymentRecord(
        payment_id=o.payment_id,
        key=PaymentKey(o.acquirer, o.rrn, f"{o.settlement_date:%m%d}"),
        settlement_date=o.settlement_date,
        biller=CODE,
        account=o.account,
        bill_id=o.bill_id,
        amount=o.amount,
        currency="760",
        channel=o.channel,
        forwarder="600002",
        content="",
        received_at=o.paid_at,
        state=PaymentState.APPROVED,
        response_code="00",
        receipt=receipt,
    )


@dataclass
class FakeLedger:
    """The journal as far as a batch biller sees it."""

    payments: list[PaymentRecord] = field(default_factory=list)
    reversals: list[ReversalRecord] = field(default_factory=list)

    def approve(self, o: PaymentOrder, receipt: str) -> PaymentRecord:
        rec = record_of(o, receipt)
        self.payments.append(rec)
        return rec

    def reverse(self, payment_id: str | None, amount: int, booked_on: date) -> None:
        for p in self.payments:
            if p.payment_id == payment_id:
                p.reversed = True
        self.reversals.append(
            ReversalRecord(
                key=PaymentKey("600001", f"R{len(self.reversals):011d}", "1124"),
                settlement_date=booked_on,
                biller=CODE,
                amount=amount,
                received_at=PAID_AT,
                response_code="00",
                payment_id=payment_id,
                booked_on=booked_on,
                cancel_state="in_file",
            )
        )

    async def approved_payments(self, biller: str, settlement_date: date) -> list[PaymentRecord]:
        return [
            p
            for p in self.payments
            if p.biller == biller
            and p.settlement_date == settlement_date
            and p.state is PaymentState.APPROVED
        ]

    async def reversals_booked(self, biller: str, booked_on: date) -> list[ReversalRecord]:
        return [
            r
            for r in self.reversals
            if r.biller == biller and r.booked_on == booked_on and r.response_code == "00"
        ]

    async def held_payments(self, biller: str) -> list[PaymentRecord]:
        return [
            p
            for p in self.payments
            if p.biller == biller and p.state is PaymentState.APPROVED and not p.reversed
        ]

    async def get_payment_by_id(self, payment_id: str) -> PaymentRecord | None:
        return next((p for p in self.payments if p.payment_id == payment_id), None)

    async def payments_file_entries(
        self, biller: str, settlement_date: date
    ) -> AsyncIterator[list[DayFileEntry]]:
        """As the journals read them: approved of the date, then reversals booked on it
        with their payment's fields (of whatever date), one row per page here."""
        for p in await self.approved_payments(biller, settlement_date):
            yield [entry("approved", p, p.amount)]
        for r in await self.reversals_booked(biller, settlement_date):
            if r.payment_id is None:
                continue
            payment = await self.get_payment_by_id(r.payment_id)
            if payment is None:
                raise JournalError("a reversed payment is missing from the journal")
            yield [entry("reversed", payment, r.amount)]


def entry(status: Literal["approved", "reversed"], p: PaymentRecord, amount: int) -> DayFileEntry:
    return DayFileEntry(
        status, p.payment_id, p.settlement_date, p.account, p.bill_id, amount,
        p.key.acquirer, p.key.rrn.strip(), p.channel, p.receipt,
    )  # fmt: skip


@dataclass
class Env:
    settings: BatchSettings
    stores: JournalSet

    @property
    def inbox(self) -> Path:
        return self.settings.inbox

    @property
    def outbox(self) -> Path:
        return self.settings.outbox

    def connector(self) -> BatchConnector:
        return BatchConnector(
            CODE, self.settings, self.stores.bills, today=lambda: TODAY, follow_interval=0
        )

    async def started(self, ledger: FakeLedger | None = None) -> BatchConnector:
        c = self.connector()
        await c.start(ledger or FakeLedger())
        return c

    async def approve(
        self, c: BatchConnector, o: PaymentOrder, ledger: FakeLedger | None = None
    ) -> PaymentRecord:
        """Post ``o`` and have the journal approve it, with the bills it took, as the
        pipeline does."""
        rec = record_of(o, await c.post_payment(o))
        rec.claims = c.bills_taken(o.payment_id)
        await self.stores.journal.insert_payment(rec)
        if ledger is not None:
            ledger.payments.append(rec)
        return rec

    async def reverse(self, rec: PaymentRecord) -> None:
        """An approved reversal of ``rec``, as the journal records it (its bills released)."""
        await self.stores.journal.insert_reversal(
            ReversalRecord(
                key=rec.key,
                settlement_date=rec.settlement_date,
                biller=CODE,
                amount=rec.amount,
                received_at=PAID_AT,
                response_code="00",
                payment_id=rec.payment_id,
                booked_on=rec.settlement_date,
                cancel_state="in_file",
            )
        )

    def write(self, accounts: list[DemoAccount], day: date = DAY1, seq: int = 1) -> Path:
        return write_bills_file(self.inbox, CODE, accounts, day=day, seq=seq)

    def write_text(self, text: str, day: date = DAY1, seq: int = 1) -> Path:
        path = self.inbox / bills_file_name(CODE, day, seq)
        path.write_bytes(text.encode("utf-8"))
        return path


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """The connector over each journal's store: the SQLite file, and a PostgreSQL
    database (where several hub instances share it)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    if request.param == "sqlite":
        config = JournalConfig(kind="sqlite", path=tmp_path / "journal.db")
    else:
        config = JournalConfig(kind="postgresql", dsn=request.getfixturevalue("pg_dsn"))
    stores = build_journal(config)
    await stores.open()
    yield Env(BatchSettings(inbox, tmp_path / "outbox"), stores)
    await stores.close()


async def load_one(c: BatchConnector) -> LoadResult:
    results = await c.load_inbox()
    assert len(results) == 1, results
    return results[0]


async def open_ids(c: BatchConnector, acct: str) -> list[str]:
    return [b.bill_id for b in (await c.open_bills(acct)).bills]


async def refused(code: str, awaitable: object) -> None:
    with pytest.raises(BillerRejected) as info:
        await awaitable  # type: ignore[misc]
    assert info.value.code == code


# --------------------------------------------------------------------------- loading


async def test_generated_file_is_answered_as_the_demo_data_says(env: Env) -> None:
    accounts = generate_accounts("01", 40, 7, today=TODAY)
    path = write_bills_file(env.inbox, CODE, accounts, day=TODAY)
    c = await env.started()
    result = await load_one(c)
    assert result.outcome is LoadOutcome.LOADED
    assert result.name == path.name
    assert result.path == env.inbox / "loaded" / path.name
    assert not path.exists() and result.path.exists()
    for acc in accounts:
        if acc.status == "closed" and not acc.bills:
            await refused("unknown_account", c.open_bills(acc.account))
            continue
        answer = await c.open_bills(acc.account)
        assert answer.customer_name == acc.customer_name
        assert answer.partial_allowed is False and answer.min_payment == 0
        if acc.status == "active":
            assert answer.status is AccountStatus.ACTIVE
            assert [(b.bill_id, b.period, b.due_date, b.amount) for b in answer.bills] == [
                (b.bill_id, b.period, b.due_date, b.amount) for b in acc.bills
            ]
        else:
            assert answer.status is AccountStatus.BLOCKED
    await c.close()


async def test_a_file_is_loaded_once(env: Env) -> None:
    first = env.write(FIRST)
    c = await env.started()
    assert (await load_one(c)).outcome is LoadOutcome.LOADED
    before = await c.open_bills(ALICE.account)

    again = env.write(FIRST)  # the same name again
    dup = await load_one(c)
    assert dup.outcome is LoadOutcome.DUPLICATE
    assert not again.exists()
    assert (env.inbox / "loaded" / first.name).exists()

    renamed = env.write(FIRST, day=DAY2, seq=3)  # the same bytes under another name
    dup = await load_one(c)
    assert dup.outcome is LoadOutcome.DUPLICATE
    assert dup.reason == f"already loaded as {first.name}"
    assert not renamed.exists()
    assert await c.open_bills(ALICE.account) == before
    await c.close()

    # The registry is durable: a restarted connector still refuses it.
    env.write(FIRST)
    c = await env.started()
    assert (await load_one(c)).outcome is LoadOutcome.DUPLICATE
    assert await c.open_bills(ALICE.account) == before
    await c.close()


async def test_a_same_name_with_other_bytes_is_a_duplicate_and_kept_aside(env: Env) -> None:
    env.write(FIRST)
    c = await env.started()
    await c.load_inbox()
    env.write([BOB])  # same name, other content
    dup = await load_one(c)
    assert dup.outcome is LoadOutcome.DUPLICATE
    assert dup.path is not None and dup.path.name == bills_file_name(CODE, DAY1, 1) + ".1"
    assert await open_ids(c, ALICE.account) == [A1.bill_id, A2.bill_id]
    await c.close()


GOOD_ROW_2 = "0100000001,محمد الأحمد,DM-2026-09-000101,202609,2026-09-28,999999,open\n"
GOOD_ROW_3 = "0100000009,سلمى العلي,DM-2026-11-000900,202611,2026-12-15,1250000,open\n"


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        ("0100000009,سلمى,DM-2026-11-000901,202611,2026-12-15,12.5,open", "amount"),
        ("0100000009,سلمى,DM-2026-11-000901,202611,2026-12-15,-5,open", "amount"),
        ("0100000009,سلمى,DM-2026-11-000901,202611,2026-12-15,+5,open", "amount"),
        ("0100000009,سلمى,DM-2026-11-000901,202611,2026-12-15,,open", "amount"),
        ("0100000009,سلمى,DM-2026-11-000901,202611,2026-02-30,100,open", "due_date"),
        ("0100000009,سلمى,DM-2026-11-000901,202611,15/12/2026,100,open", "due_date"),
        ("0100000009,سلمى,DM-2026-11-000901,202613,2026-12-15,100,open", "period"),
        ("0100000009,سلمى,DM-2026-11-000901,202611,2026-12-15,100,unpaid", "status"),
        ("0100000009,سلمى,DM-2026-11-000901,202611,2026-12-15,100", "expected 7 fields"),
        ("0100000009,سلمى,DM_2026_11,202611,2026-12-15,100,open", "bill_id"),
        ("0100000009,سلمى,DM-2026-11-0000000000901,202611,2026-12-15,100,open", "bill_id"),
        ("0100000009, ,DM-2026-11-000901,202611,2026-12-15,100,open", "customer_name"),
        ("01 00,سلمى,DM-2026-11-000901,202611,2026-12-15,100,open", "account"),
        ("0100000009,سلمى,DM-2026-11-000900,202611,2026-12-15,100,open", "more than once"),
        ("", "blank row"),
    ],
)
async def test_one_bad_row_rejects_the_whole_file(env: Env, bad_row: str, reason: str) -> None:
    env.write(FIRST)
    c = await env.started()
    await c.load_inbox()
    before = await c.open_bills(ALICE.account)

    path = env.write_text(HEADER + GOOD_ROW_2 + GOOD_ROW_3 + bad_row + "\n", day=DAY2)
    result = await load_one(c)
    assert result.outcome is LoadOutcome.REJECTED
    assert result.row == 4
    assert result.reason is not None and reason in result.reason
    rejected = env.inbox / "rejected" / path.name
    assert result.path == rejected and rejected.exists() and not path.exists()
    note = (env.inbox / "rejected" / (path.name + ".reason")).read_text("utf-8")
    assert note.startswith("row 4: ") and reason in note
    # Nothing changed: row 2's new amount and row 3's new account were not taken.
    assert await c.open_bills(ALICE.account) == before
    await refused("unknown_account", c.open_bills("0100000009"))
    await c.close()
    # Nor in the store: a restart sees the same.
    c = await env.started()
    assert await c.open_bills(ALICE.account) == before
    await refused("unknown_account", c.open_bills("0100000009"))
    await c.close()


async def test_a_rejected_file_can_be_sent_again_corrected(env: Env) -> None:
    c = await env.started()
    env.write_text("account,name\n")
    assert (await load_one(c)).outcome is LoadOutcome.REJECTED
    env.write_text(HEADER + GOOD_ROW_3)
    assert (await load_one(c)).outcome is LoadOutcome.LOADED
    assert await open_ids(c, "0100000009") == ["DM-2026-11-000900"]
    await c.close()


async def test_other_files_in_the_inbox_are_ignored_and_left(env: Env) -> None:
    other = write_bills_file(env.inbox, "200002", [BOB], day=DAY1)
    stray = env.inbox / "notes.txt"
    stray.write_text("hello")
    (env.inbox / ".bills-100001-20261120-2.csv.tmp").write_text("half")
    env.write(FIRST)
    c = await env.started()
    results = await c.load_inbox()
    by_name = {r.name: r.outcome for r in results}
    assert by_name == {
        bills_file_name(CODE, DAY1, 1): LoadOutcome.LOADED,
        other.name: LoadOutcome.IGNORED,
        "notes.txt": LoadOutcome.IGNORED,
    }
    assert other.exists() and stray.exists()
    await c.close()


async def test_files_load_in_name_order_and_a_later_file_supersedes_row_by_row(env: Env) -> None:
    # Day 2 seq 10 is later than day 2 seq 9, which is later than day 1.
    env.write([account(ALICE.account, A1, bill(A2.bill_id, "202610", 1))], day=DAY2, seq=10)
    env.write([account(ALICE.account, A1, bill(A2.bill_id, "202610", 2))], day=DAY2, seq=9)
    env.write([ALICE, BOB])
    c = await env.started()
    results = await c.load_inbox()
    assert [r.name for r in results] == [
        bills_file_name(CODE, DAY1, 1),
        bills_file_name(CODE, DAY2, 9),
        bills_file_name(CODE, DAY2, 10),
    ]
    answer = await c.open_bills(ALICE.account)
    assert [(b.bill_id, b.amount) for b in answer.bills] == [(A1.bill_id, 150_000), (A2.bill_id, 1)]
    # Rows the later files did not name are untouched.
    assert await open_ids(c, BOB.account) == [B1.bill_id]

    # The company paid A1 at its counter and renamed the customer.
    env.write(
        [account(ALICE.account, A2, name="محمد علي الأحمد", paid=(A1,))], day=date(2026, 11, 22)
    )
    await c.load_inbox()
    answer = await c.open_bills(ALICE.account)
    assert answer.customer_name == "محمد علي الأحمد"
    assert [(b.bill_id, b.amount) for b in answer.bills] == [(A2.bill_id, 200_000)]
    await c.close()


async def test_a_late_older_file_does_not_overwrite_newer_rows(env: Env) -> None:
    env.write([account(ALICE.account, A1, A2)], day=DAY2)
    c = await env.started()
    await c.load_inbox()
    env.write([account(ALICE.account, bill(A2.bill_id, "202610", 7), C1)], day=DAY1)
    result = await load_one(c)
    assert result.outcome is LoadOutcome.LOADED
    assert result.stale == (A2.bill_id,)
    assert [(b.bill_id, b.amount) for b in (await c.open_bills(ALICE.account)).bills] == [
        (A1.bill_id, 150_000),
        (A2.bill_id, 200_000),
        (C1.bill_id, 400_000),
    ]
    await c.close()
    c = await env.started()  # the store agrees after a restart
    assert [b.amount for b in (await c.open_bills(ALICE.account)).bills] == [
        150_000,
        200_000,
        400_000,
    ]
    await c.close()


# --------------------------------------------------------------------------- inquiry


async def test_inquiry_offers_only_open_bills_oldest_first(env: Env) -> None:
    newest = bill("DM-2026-11-000001", "202611", 10)
    same_period_later_due = bill("DM-2026-10-000001", "202610", 20, date(2026, 11, 20))
    same_period_earlier_due = bill("DM-2026-10-000009", "202610", 30, date(2026, 11, 10))
    same_due_a = bill("DM-2026-09-00000A", "202609", 40, date(2026, 10, 15))
    same_due_b = bill("DM-2026-09-00000B", "202609", 50, date(2026, 10, 15))
    env.write(
        [
            account(
                "0100000077",
                newest,
                same_period_later_due,
                same_due_b,
                same_period_earlier_due,
                same_due_a,
                paid=(bill("DM-2026-01-000001", "202601", 1),),
                cancelled=(bill("DM-2026-02-000001", "202602", 2),),
            )
        ]
    )
    c = await env.started()
    await c.load_inbox()
    answer = await c.open_bills("0100000077")
    assert [b.bill_id for b in answer.bills] == [
        same_due_a.bill_id,
        same_due_b.bill_id,
        same_period_earlier_due.bill_id,
        same_period_later_due.bill_id,
        newest.bill_id,
    ]
    assert answer.total_due == 150
    await c.close()


async def test_inquiry_statuses(env: Env) -> None:
    env.write(FIRST)
    c = await env.started()
    await c.load_inbox()
    alice = await c.open_bills(ALICE.account)
    assert alice.status is AccountStatus.ACTIVE
    assert [b.bill_id for b in alice.bills] == [A1.bill_id, A2.bill_id]  # not H1 nor X1
    assert (await c.open_bills(CAROL.account)).status is AccountStatus.BLOCKED
    paid_up = await c.open_bills(PAID_UP.account)
    assert paid_up.status is AccountStatus.ACTIVE and paid_up.bills == ()
    await refused("unknown_account", c.open_bills("0199999999"))
    await c.close()


async def test_a_blocked_row_blocks_the_account(env: Env) -> None:
    env.write(FIRST)
    c = await env.started()
    await c.load_inbox()
    env.write_text(
        HEADER + f"{ALICE.account},محمد الأحمد,{A2.bill_id},202610,2026-10-28,200000,blocked\n",
        day=DAY2,
    )
    await c.load_inbox()
    assert (await c.open_bills(ALICE.account)).status is AccountStatus.BLOCKED
    await refused("account_blocked", c.post_payment(order("P1", ALICE.account, 150_000)))
    await c.close()


# --------------------------------------------------------------------------- payments


@pytest.fixture
async def loaded(env: Env) -> AsyncIterator[BatchConnector]:
    env.write(FIRST)
    c = await env.started()
    await c.load_inbox()
    yield c
    await c.close()


async def test_payment_of_one_bill(loaded: BatchConnector) -> None:
    receipt = await loaded.post_payment(order("P1", ALICE.account, 200_000, A2.bill_id))
    assert RECEIPT.fullmatch(receipt) and receipt == loaded.receipt_for("P1")
    assert await open_ids(loaded, ALICE.account) == [A1.bill_id]
    assert (await loaded.payment_status("P1")).status is PostingStatus.POSTED


async def test_payment_of_everything_due(loaded: BatchConnector) -> None:
    await loaded.post_payment(order("P1", ALICE.account, 350_000))
    assert await open_ids(loaded, ALICE.account) == []
    await refused("nothing_due", loaded.post_payment(order("P2", ALICE.account, 350_000)))


async def test_payment_refusals(loaded: BatchConnector) -> None:
    a = ALICE.account
    await refused("unknown_account", loaded.post_payment(order("P1", "0199999999", 1)))
    await refused("account_blocked", loaded.post_payment(order("P2", CAROL.account, 400_000)))
    await refused("nothing_due", loaded.post_payment(order("P3", PAID_UP.account, 1)))
    # bill_not_open: paid at the counter, cancelled, another account's, no such bill
    for i, bill_id in enumerate((H1.bill_id, X1.bill_id, B1.bill_id, "NO-SUCH-BILL")):
        await refused("bill_not_open", loaded.post_payment(order(f"P4{i}", a, 1, bill_id)))
    # amount_not_acceptable: not the bill's amount, not the total, a part of the total
    await refused("amount_not_acceptable", loaded.post_payment(order("P5", a, 1, A1.bill_id)))
    await refused("amount_not_acceptable", loaded.post_payment(order("P6", a, 150_000)))
    await refused("amount_not_acceptable", loaded.post_payment(order("P7", a, 350_001)))
    # a bill the hub was paid for is not open any more
    await loaded.post_payment(order("P8", a, 150_000, A1.bill_id))
    await refused("bill_not_open", loaded.post_payment(order("P9", a, 150_000, A1.bill_id)))
    # a refused payment was not posted
    assert (await loaded.payment_status("P6")).status is PostingStatus.UNKNOWN
    assert await open_ids(loaded, a) == [A2.bill_id]


async def test_post_is_idempotent_on_the_payment_id(loaded: BatchConnector) -> None:
    first = order("P1", ALICE.account, 150_000, A1.bill_id)
    receipt = await loaded.post_payment(first)
    later = order(
        "P1", ALICE.account, 150_000, A1.bill_id, paid_at=datetime(2026, 11, 25, tzinfo=UTC)
    )
    assert await loaded.post_payment(later) == receipt  # paid_at may differ
    assert await open_ids(loaded, ALICE.account) == [A2.bill_id]
    await refused(
        "payment_id_conflict",
        loaded.post_payment(order("P1", ALICE.account, 200_000, A2.bill_id)),
    )
    await refused(
        "payment_id_conflict",
        loaded.post_payment(order("P1", ALICE.account, 150_000, A1.bill_id, rrn="000000000002")),
    )
    assert await open_ids(loaded, ALICE.account) == [A2.bill_id]
    assert loaded.receipt_for("P1") != loaded.receipt_for("P2")


async def test_cancel_reopens_and_is_idempotent(loaded: BatchConnector) -> None:
    o = order("P1", ALICE.account, 350_000)
    receipt = await loaded.post_payment(o)
    await loaded.cancel_payment("P1")
    assert await open_ids(loaded, ALICE.account) == [A1.bill_id, A2.bill_id]
    await loaded.cancel_payment("P1")
    status = await loaded.payment_status("P1")
    assert status.status is PostingStatus.CANCELLED and status.receipt == receipt
    await refused("payment_cancelled", loaded.post_payment(o))
    await refused("unknown_payment", loaded.cancel_payment("P-never"))
    # The reopened bills can be paid again, by another payment.
    await loaded.post_payment(order("P2", ALICE.account, 150_000, A1.bill_id))
    assert await open_ids(loaded, ALICE.account) == [A2.bill_id]


async def test_payment_status(loaded: BatchConnector) -> None:
    unknown = await loaded.payment_status("P1")
    assert unknown.status is PostingStatus.UNKNOWN and unknown.receipt is None
    receipt = await loaded.post_payment(order("P1", BOB.account, 300_000))
    posted = await loaded.payment_status("P1")
    assert posted.status is PostingStatus.POSTED and posted.receipt == receipt
    assert loaded.status_is_authoritative is True


async def test_calls_before_start_or_after_close_are_unavailable(env: Env) -> None:
    c: Biller = env.connector()  # mypy checks the port is implemented
    ledger: PaymentsLedger = FakeLedger()
    assert isinstance(c, BatchConnector)
    with pytest.raises(BillerUnavailable):
        await c.open_bills(ALICE.account)
    await c.start(ledger)
    await c.close()
    await c.close()  # idempotent
    with pytest.raises(BillerUnavailable):
        await c.post_payment(order("P1", ALICE.account, 1))
    with pytest.raises(BillerUnavailable):
        await c.load_inbox()


# --------------------------------------------------------------------------- restart


async def test_restart_finds_what_payments_hold_in_the_store(env: Env) -> None:
    env.write(FIRST)
    c = await env.started()
    await c.load_inbox()
    by_bill = order("P1", ALICE.account, 150_000, A1.bill_id)
    everything = order("P2", BOB.account, 300_000, rrn="000000000002")
    await env.approve(c, by_bill)
    p2 = await env.approve(c, everything)
    # Posted, but the journal never approved it (the hub died before recording it).
    await c.post_payment(order("P3", ALICE.account, 200_000, A2.bill_id, rrn="000000000003"))
    await c.close()

    c = await env.started()
    assert await open_ids(c, ALICE.account) == [A2.bill_id]
    assert await open_ids(c, BOB.account) == []
    status = await c.payment_status("P1")
    assert status.status is PostingStatus.POSTED and status.receipt == c.receipt_for("P1")
    assert (await c.payment_status("P3")).status is PostingStatus.UNKNOWN
    assert await c.post_payment(by_bill) == c.receipt_for("P1")  # a repeat after restart
    await refused("bill_not_open", c.post_payment(order("P4", ALICE.account, 150_000, A1.bill_id)))
    await env.reverse(p2)  # a reversal after restart reopens
    await c.cancel_payment("P2")
    assert await open_ids(c, BOB.account) == [B1.bill_id]
    assert (await c.payment_status("P2")).status is PostingStatus.CANCELLED
    await c.close()

    c = await env.started()
    assert await open_ids(c, BOB.account) == [B1.bill_id]
    assert await open_ids(c, ALICE.account) == [A2.bill_id]
    await c.close()


async def test_restart_after_a_crash_with_a_file_loaded_since_the_payment(env: Env) -> None:
    """A payment without a bill id: the bills it took are in the store with it, so a
    new bill of the same amount is not taken for one of them after a crash."""
    env.write([ALICE])
    c1 = await env.started()
    await c1.load_inbox()
    await env.approve(c1, order("P1", ALICE.account, 350_000))
    # The company counter-paid A1 too (its books lag) and issued a new bill of A1's amount.
    new = bill("DM-2026-11-000101", "202611", 150_000)
    env.write([account(ALICE.account, A2, new, paid=(A1,))], day=DAY2)
    result = await load_one(c1)
    assert result.conflicts == (A2.bill_id,)  # A2 paid by the hub, still "open" in the file
    assert await open_ids(c1, ALICE.account) == [new.bill_id]
    # Crash: c1 is never closed.
    c2 = await env.started()
    assert await open_ids(c2, ALICE.account) == [new.bill_id]
    await c2.close()
    await c1.close()


async def test_a_reversed_payment_without_bill_id_reopens_its_bills_after_a_crash(
    env: Env,
) -> None:
    env.write([ALICE, BOB])
    c1 = await env.started()
    await c1.load_inbox()
    await env.approve(c1, order("P1", ALICE.account, 150_000, A1.bill_id))
    p2 = await env.approve(c1, order("P2", ALICE.account, 200_000, rrn="000000000002"))
    # Crash: no close.
    c2 = await env.started()
    assert await open_ids(c2, ALICE.account) == []
    assert await open_ids(c2, BOB.account) == [B1.bill_id]
    await env.reverse(p2)
    await c2.cancel_payment("P2")
    assert await open_ids(c2, ALICE.account) == [A2.bill_id]
    await refused("unknown_payment", c2.cancel_payment("P9"))
    await c2.close()
    await c1.close()


async def test_two_hubs_on_one_store_never_take_one_bill_twice(env: Env) -> None:
    """Two connectors on one store (two hub instances): each answers from its own
    memory, the journal's commit decides, and each learns the other's payments."""
    env.write(FIRST)
    a, b = await env.started(), await env.started()
    await a.load_inbox()
    await b.follow()
    assert await open_ids(b, ALICE.account) == [A1.bill_id, A2.bill_id]
    first = order("PA", ALICE.account, 150_000, A1.bill_id)
    second = order("PB", ALICE.account, 150_000, A1.bill_id, rrn="000000000002")
    await env.approve(a, first)
    # b has not followed yet: it takes A1 in memory, and the journal refuses it.
    with pytest.raises(BillTaken):
        await env.approve(b, second)
    await b.cancel_payment("PB")  # what the pipeline does then; b follows the store
    assert await open_ids(b, ALICE.account) == [A2.bill_id]
    await refused("bill_not_open", b.post_payment(order("PC", ALICE.account, 150_000, A1.bill_id)))
    assert (await b.payment_status("PA")).status is PostingStatus.POSTED
    # A reversal on b of a's payment: both see A1 open again.
    await env.reverse(await a_record(env, "PA"))
    await b.cancel_payment("PA")
    await a.follow()
    assert await open_ids(a, ALICE.account) == [A1.bill_id, A2.bill_id]
    assert await open_ids(b, ALICE.account) == [A1.bill_id, A2.bill_id]
    await a.close()
    await b.close()


async def a_record(env: Env, payment_id: str) -> PaymentRecord:
    rec = await env.stores.journal.get_payment_by_id(payment_id)
    assert rec is not None
    return rec


async def test_a_later_file_cannot_reopen_a_bill_the_hub_was_paid_for(env: Env) -> None:
    env.write(FIRST)
    c = await env.started()
    await c.load_inbox()
    await env.approve(c, order("P1", ALICE.account, 150_000, A1.bill_id))
    await c.close()

    c = await env.started()
    env.write([ALICE, account(BOB.account, paid=(B1,))], day=DAY2)  # A1 "open" again
    result = await load_one(c)
    assert result.outcome is LoadOutcome.LOADED
    assert result.conflicts == (A1.bill_id,)
    assert await open_ids(c, ALICE.account) == [A2.bill_id]
    await refused("bill_not_open", c.post_payment(order("P2", ALICE.account, 150_000, A1.bill_id)))
    # The company caught up: A1 paid. No conflict.
    env.write([account(ALICE.account, A2, paid=(A1,))], day=date(2026, 11, 22))
    assert (await load_one(c)).conflicts == ()
    await c.close()


# --------------------------------------------------------------------------- payments file

EXPECTED_FILE = (
    "payment_id,settlement_date,account,bill_id,amount,acquirer,rrn,channel,receipt,status\n"
    "P-0001,2026-11-24,0100000001,DM-2026-10-000101,150000,600001,000000000001,6013,R-1,approved\n"
    "P-0002,2026-11-24,0100000002,,420000,600002,000000000002,6011,R-2,approved\n"
    "P-0002,2026-11-24,0100000002,,420000,600002,000000000002,6011,R-2,reversed\n"
    "P-0000,2026-11-23,0100000003,DM-2026-10-000050,99000,600001,000000000003,6012,R-0,reversed\n"
    "TOTAL,2,570000,2,519000\n"
)


def payments_ledger() -> FakeLedger:
    def rec(
        pid: str,
        day: date,
        acct: str,
        bill_id: str | None,
        amount: int,
        acquirer: str,
        rrn: str,
        channel: str,
        receipt: str,
    ) -> PaymentRecord:
        o = PaymentOrder(pid, acct, bill_id, amount, day, acquirer, rrn, channel, PAID_AT)
        r = record_of(o, receipt)
        r.key = PaymentKey(acquirer, rrn, f"{day:%m%d}")
        return r

    ledger = FakeLedger()
    yesterday = date(2026, 11, 23)
    ledger.payments = [
        rec("P-0000", yesterday, "0100000003", "DM-2026-10-000050", 99_000, "600001",
            "000000000003", "6012", "R-0"),
        rec("P-0001", TODAY, "0100000001", "DM-2026-10-000101", 150_000, "600001",
            "000000000001", "6013", "R-1"),
        rec("P-0002", TODAY, "0100000002", None, 420_000, "600002",
            "000000000002", "6011", "R-2"),
    ]  # fmt: skip
    ledger.reverse("P-0002", 420_000, TODAY)
    ledger.reverse(None, 5_000, TODAY)  # no original: not the biller's business
    ledger.reverse("P-0000", 99_000, TODAY)  # a payment of an earlier date
    return ledger


async def test_payments_file_exact_bytes(env: Env) -> None:
    ledger = payments_ledger()
    c = await env.started(ledger)
    path = await c.write_payments_file(TODAY, ledger)
    assert path == env.outbox / f"payments-{CODE}-20261124.csv"
    data = path.read_bytes()
    assert data == EXPECTED_FILE.encode("utf-8")
    assert data.endswith(b"\nTOTAL,2,570000,2,519000\n")
    # Written twice: the same bytes, and nothing else in the outbox.
    again = await c.write_payments_file(TODAY, ledger)
    assert again.read_bytes() == data
    assert sorted(p.name for p in env.outbox.iterdir()) == [path.name]
    await c.close()


async def test_payments_file_of_a_quiet_day(env: Env) -> None:
    c = await env.started()
    path = await c.write_payments_file(date(2026, 11, 25), FakeLedger())
    assert path.read_text("utf-8") == (
        "payment_id,settlement_date,account,bill_id,amount,acquirer,rrn,channel,receipt,status\n"
        "TOTAL,0,0,0,0\n"
    )
    await c.close()


async def test_payments_file_of_connector_posted_payments(env: Env) -> None:
    ledger = FakeLedger()
    env.write(FIRST)
    c = await env.started(ledger)
    await c.load_inbox()
    await env.approve(c, order("P1", BOB.account, 300_000), ledger)
    text = (await c.write_payments_file(TODAY, ledger)).read_text("utf-8")
    receipt = c.receipt_for("P1")
    assert text.splitlines()[1:] == [
        f"P1,2026-11-24,{BOB.account},,300000,600001,000000000001,6013,{receipt},approved",
        "TOTAL,1,300000,0,0",
    ]
    await c.close()


async def test_payments_file_with_a_missing_payment_is_refused_and_leaves_nothing(
    env: Env,
) -> None:
    ledger = payments_ledger()
    ledger.payments.pop(0)  # P-0000, reversed today, is not in the journal any more
    c = await env.started(ledger)
    with pytest.raises(JournalError):
        await c.write_payments_file(TODAY, ledger)
    assert not any(env.outbox.glob(".*")), "no temporary file is left behind"
    assert not any(env.outbox.glob("*.csv"))
    await c.close()


async def test_payments_file_from_the_journal_in_pages(env: Env) -> None:
    """The journal itself, read page by page (a page smaller than the day here): the
    same rows as the records say, reversals after payments, the trailer right."""
    env.write([ALICE, BOB])
    c = await env.started()
    await c.load_inbox()
    a1 = await env.approve(c, order("P1", ALICE.account, 150_000, A1.bill_id))
    await env.approve(c, order("P2", ALICE.account, 200_000, A2.bill_id, rrn="000000000002"))
    await env.approve(c, order("P3", BOB.account, 300_000, rrn="000000000003"))
    await env.reverse(a1)
    pages = [
        page
        async for page in payments_file_entries(
            env.stores.settlement.j,
            CODE,
            TODAY,
            page=2,  # type: ignore[attr-defined]
        )
    ]
    assert [len(p) for p in pages] == [2, 1, 1]
    text = (await c.write_payments_file(TODAY, env.stores.journal)).read_text("utf-8")
    receipt = c.receipt_for
    assert text.splitlines() == [
        "payment_id,settlement_date,account,bill_id,amount,acquirer,rrn,channel,receipt,status",
        f"P1,2026-11-24,{ALICE.account},{A1.bill_id},150000,600001,000000000001,6013,{receipt('P1')},approved",
        f"P2,2026-11-24,{ALICE.account},{A2.bill_id},200000,600001,000000000002,6013,{receipt('P2')},approved",
        f"P3,2026-11-24,{BOB.account},,300000,600001,000000000003,6013,{receipt('P3')},approved",
        f"P1,2026-11-24,{ALICE.account},{A1.bill_id},150000,600001,000000000001,6013,{receipt('P1')},reversed",
        "TOTAL,3,650000,1,150000",
    ]  # fmt: skip
    await c.close()


# --------------------------------------------------------------------------- pure parts


def test_parse_bills_file_rows() -> None:
    rows = parse_bills_file((HEADER + GOOD_ROW_2 + GOOD_ROW_3).encode("utf-8"))
    assert [(r.row, r.bill_id, r.amount, r.status) for r in rows] == [
        (2, "DM-2026-09-000101", 999_999, "open"),
        (3, "DM-2026-11-000900", 1_250_000, "open"),
    ]
    assert rows[0].due_date == date(2026, 9, 28) and rows[1].customer_name == "سلمى العلي"
    padded = parse_bills_file(HEADER + "01, Rana Halabi ,X-1,202601,2026-01-31,0,paid\n")
    assert [(r.customer_name, r.amount, r.status) for r in padded] == [("Rana Halabi", 0, "paid")]
    assert parse_bills_file(HEADER) == []


@pytest.mark.parametrize(
    ("data", "row", "reason"),
    [
        (b"", 1, "header"),
        (b"account,customer_name,bill_id,period,due_date,amount\n", 1, "header"),
        (("\ufeff" + HEADER).encode("utf-8"), 1, "byte order mark"),
        ((HEADER + GOOD_ROW_2).encode("utf-8") + b"01,\xff\xfe,X,202601,2026-01-01,1,open\n", 3,
         "UTF-8"),
        ((HEADER + '01,"unterminated,X,202601,2026-01-01,1,open\n').encode(), 2, "CSV"),
        ((HEADER + "01,a\tb,X,202601,2026-01-01,1,open\n").encode(), 2, "control"),
        ((HEADER + "01,ab,X,202601,2026-01-01,1234567890123,open\n").encode(), 2, "amount"),
        # Rows that look whole to a quick look, each wrong in one detail:
        ((HEADER + GOOD_ROW_2 + "01,   ,X,202601,2026-01-01,1,open\n").encode(), 3,
         "customer_name is empty"),
        ((HEADER + "01,ab,X,202602,2026-02-30,1,open\n").encode(), 2, "due_date"),
        ((HEADER + "01,ab,X,202601,2026-01-01,1,open,extra\n").encode(), 2, "got 8"),
        ((HEADER + "01,a\x7fb,X,202601,2026-01-01,1,open\n").encode(), 2, "control"),
        ((HEADER + "01,ab,X,202613,2026-01-01,1,open\n").encode(), 2, "period"),
        ((HEADER + "01,ab,X,202601,2026-01-01,1,Open\n").encode(), 2, "status"),
    ],
)  # fmt: skip
def test_parse_bills_file_errors(data: bytes, row: int, reason: str) -> None:
    with pytest.raises(BillsFileError) as info:
        parse_bills_file(data)
    assert info.value.row == row
    assert reason in info.value.reason


def test_bills_file_names() -> None:
    parsed = parse_bills_file_name("bills-100001-20261124-12.csv")
    assert parsed is not None and parsed.biller == "100001"
    assert parsed.day == date(2026, 11, 24) and parsed.seq == 12
    for bad in (
        "bills-100001-20261124-0.csv",
        "bills-100001-20261324-1.csv",
        "bills-100001-2026112-1.csv",
        "bills-100001-20261124-1.txt",
        "payments-100001-20261124.csv",
    ):
        assert parse_bills_file_name(bad) is None


def test_render_payments_file() -> None:
    row = PaymentsFileRow(
        "P1", TODAY, "0100000001", None, 5, "600001", "000000000001", "6013", "R1", "approved"
    )
    assert render([row]) == (
        "payment_id,settlement_date,account,bill_id,amount,acquirer,rrn,channel,receipt,status\n"
        "P1,2026-11-24,0100000001,,5,600001,000000000001,6013,R1,approved\n"
        "TOTAL,1,5,0,0\n"
    )


async def test_a_cancelled_load_still_reaches_the_index(env: Env) -> None:
    env.write(FIRST)
    c = await env.started()
    task = asyncio.create_task(c.load_inbox())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await c.load_inbox() == []  # waits for the first; the file is gone
    assert await open_ids(c, ALICE.account) == [A1.bill_id, A2.bill_id]
    await c.close()


async def test_serve_refuses_a_bills_store_of_an_earlier_billhub(env: Env, tmp_path: Path) -> None:
    """An earlier billhub's ``batch-<code>.db`` beside the journal: starting without its
    knowledge of which bills payments took would offer them again, so the biller is
    refused with a line naming the file."""
    biller = BillerConfig(
        code=CODE, name="Rural Damascus", kind="batch", budget_s=1.0, max_concurrency=4,
        batch=env.settings,
    )  # fmt: skip
    ctx = ConnectorContext(tmp_path, lambda: TODAY, bills=env.stores.bills)
    assert isinstance(build_biller(biller, ctx), BatchConnector)
    (tmp_path / f"batch-{CODE}.db").write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        build_biller(biller, ctx)
    assert info.value.key == f"billers[{CODE}]"
    assert f"batch-{CODE}.db is a bills store of an earlier billhub" in str(info.value)
