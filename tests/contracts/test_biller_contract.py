"""The biller contract (:class:`~billhub.pipeline.ports.Biller`, BILLERS.md's four
questions and the life cycle), run over every kind in ``BILLER_KINDS``: the memory
fake, the REST connector against the demo REST biller on a socket, the batch
connector over its journal's bills store.

Every kind holds the same subscribers (the demo data's first accounts: open, paid
up, blocked, closed, partial, many bills). The answers a user of the hub would see
must not depend on the kind: the same open bills oldest first, the same refusal
codes, idempotency on the hub payment id, a cancel that gives the bills back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
from tests.contracts.kinds import BILLER_KINDS, BillerUnderTest
from tests.journal_records import T0
from tests.memjournal import MemoryJournal

from billhub.errors import BillerRejected, BillerUnavailable
from billhub.pipeline.model import AccountStatus, Bill, PaymentOrder, PostingStatus
from billhub.pipeline.ports import Biller
from billhub.simulator.demo_data import DemoAccount, generate_accounts

CODE = "100001"
TODAY: date = T0.date()
ACCOUNTS = generate_accounts("01", 12, 7, today=TODAY)
OPEN, PAID_UP, BLOCKED, CLOSED, PARTIAL, MANY = ACCOUNTS[:6]
UNKNOWN = "0199999999"
assert UNKNOWN not in {a.account for a in ACCOUNTS}
assert len(MANY.bills) >= 3 and len(OPEN.bills) >= 1


@pytest.fixture(params=sorted(BILLER_KINDS))
async def under_test(request: pytest.FixtureRequest) -> AsyncIterator[BillerUnderTest]:
    async with BILLER_KINDS[request.param](request, ACCOUNTS, CODE) as b:
        yield b


@pytest.fixture
def biller(under_test: BillerUnderTest) -> Biller:
    return under_test.biller


def order(
    acc: DemoAccount,
    amount: int | None = None,
    *,
    bill_id: str | None = None,
    payment_id: str = "pay-1",
    rrn: str = "633012000123",
) -> PaymentOrder:
    return PaymentOrder(
        payment_id=payment_id,
        account=acc.account,
        bill_id=bill_id,
        amount=sum(b.amount for b in acc.bills) if amount is None else amount,
        settlement_date=TODAY,
        acquirer="600001",
        rrn=rrn,
        channel="6013",
        paid_at=datetime(2025, 3, 14, 9, 45, 12, tzinfo=UTC),
    )


def bills_of(acc: DemoAccount) -> tuple[Bill, ...]:
    return tuple(Bill(b.bill_id, b.period, b.due_date, b.amount) for b in acc.bills)


async def refused(code: str, call: object) -> None:
    with pytest.raises(BillerRejected) as info:
        await call  # type: ignore[misc]
    assert info.value.code == code


async def open_ids(biller: Biller, acc: DemoAccount) -> list[str]:
    return [b.bill_id for b in (await biller.open_bills(acc.account)).bills]


# -- the life cycle ----------------------------------------------------------------------------


async def test_the_life_cycle_is_the_same_calls_for_every_kind(biller: Biller) -> None:
    assert biller.code == CODE
    assert isinstance(biller.status_is_authoritative, bool)
    assert isinstance(biller.exchanges_files, bool)
    ledger = MemoryJournal()
    await ledger.open()
    again = list(await biller.poll())  # nothing new was dropped: nothing is taken in again
    assert all(f.outcome.value != "loaded" for f in again)
    assert list(await biller.close_day([], ledger)) == []


# -- question 1: open bills --------------------------------------------------------------------


async def test_open_bills_oldest_first_with_the_name(biller: Biller) -> None:
    for acc in (OPEN, MANY):
        got = await biller.open_bills(acc.account)
        assert got.account == acc.account
        assert got.customer_name == acc.customer_name
        assert got.status is AccountStatus.ACTIVE
        assert got.bills == bills_of(acc)
        assert got.total_due == sum(b.amount for b in acc.bills)
        assert all(type(b.amount) is int for b in got.bills)


async def test_a_paid_up_account_has_no_open_bills(biller: Biller) -> None:
    got = await biller.open_bills(PAID_UP.account)
    assert got.status is AccountStatus.ACTIVE and got.bills == ()
    await refused("nothing_due", biller.post_payment(order(PAID_UP, 100)))


@pytest.mark.parametrize("acc", [BLOCKED, CLOSED], ids=["blocked", "closed"])
async def test_a_blocked_or_closed_account_is_not_active_and_takes_no_payment(
    biller: Biller, acc: DemoAccount
) -> None:
    got = await biller.open_bills(acc.account)
    assert got.status is not AccountStatus.ACTIVE
    assert got.customer_name == acc.customer_name
    await refused("account_blocked", biller.post_payment(order(acc, 100)))


async def test_an_unknown_account_is_refused(biller: Biller) -> None:
    await refused("unknown_account", biller.open_bills(UNKNOWN))
    ghost = DemoAccount(UNKNOWN, "x", AccountStatus.ACTIVE, False, 0, ())
    await refused("unknown_account", biller.post_payment(order(ghost, 100)))


# -- question 2: post a payment --------------------------------------------------------------


async def test_a_payment_takes_the_bills_once_whatever_the_repeats(biller: Biller) -> None:
    receipt = await biller.post_payment(order(OPEN))
    assert isinstance(receipt, str) and receipt
    assert await open_ids(biller, OPEN) == []
    assert await biller.post_payment(order(OPEN)) == receipt  # a repeat: the same answer
    assert (
        await biller.payment_status("pay-1") == (await biller.payment_status("pay-1"))
        and (await biller.payment_status("pay-1")).status is PostingStatus.POSTED
    )
    assert (await biller.payment_status("pay-1")).receipt == receipt
    # Another payment id for the same bills finds nothing left.
    await refused("nothing_due", biller.post_payment(order(OPEN, payment_id="pay-2")))


async def test_one_bill_by_its_id(biller: Biller) -> None:
    first, second = MANY.bills[0], MANY.bills[1]
    await biller.post_payment(order(MANY, first.amount, bill_id=first.bill_id))
    assert await open_ids(biller, MANY) == [b.bill_id for b in MANY.bills[1:]]
    await refused(
        "bill_not_open",
        biller.post_payment(order(MANY, first.amount, bill_id=first.bill_id, payment_id="p-2")),
    )
    await refused(  # a bill of another account
        "bill_not_open",
        biller.post_payment(order(OPEN, second.amount, bill_id=second.bill_id, payment_id="p-3")),
    )
    await refused(
        "amount_not_acceptable",
        biller.post_payment(
            order(MANY, second.amount + 1, bill_id=second.bill_id, payment_id="p-4")
        ),
    )
    assert await open_ids(biller, MANY) == [b.bill_id for b in MANY.bills[1:]]


async def test_a_wrong_amount_is_refused_and_changes_nothing(biller: Biller) -> None:
    due = sum(b.amount for b in OPEN.bills)
    assert not OPEN.partial_allowed
    for amount in (due + 1, due - 1):
        await refused("amount_not_acceptable", biller.post_payment(order(OPEN, amount)))
    assert await open_ids(biller, OPEN) == [b.bill_id for b in OPEN.bills]
    assert (await biller.payment_status("pay-1")).status is PostingStatus.UNKNOWN


async def test_a_partial_payment_follows_what_the_account_allows(biller: Biller) -> None:
    bills = await biller.open_bills(PARTIAL.account)
    due = bills.total_due
    part = max(bills.min_payment, 1)
    assert part < due
    if bills.partial_allowed:
        await biller.post_payment(order(PARTIAL, part))
        after = await biller.open_bills(PARTIAL.account)
        assert after.total_due == due - part
        assert after.bills[0].amount == bills.bills[0].amount - min(part, bills.bills[0].amount)
    else:
        await refused("amount_not_acceptable", biller.post_payment(order(PARTIAL, part)))
        assert (await biller.open_bills(PARTIAL.account)).total_due == due


async def test_one_payment_id_with_other_content_is_a_conflict(biller: Biller) -> None:
    receipt = await biller.post_payment(order(MANY))
    await refused("payment_id_conflict", biller.post_payment(order(OPEN)))
    await refused("payment_id_conflict", biller.post_payment(order(MANY, rrn="633012000999")))
    assert await biller.post_payment(order(MANY)) == receipt
    assert await open_ids(biller, OPEN) == [b.bill_id for b in OPEN.bills]


# -- questions 3 and 4: cancel, status -------------------------------------------------------


async def test_a_cancel_gives_the_bills_back_once(biller: Biller) -> None:
    receipt = await biller.post_payment(order(OPEN))
    await biller.cancel_payment("pay-1")
    assert await open_ids(biller, OPEN) == [b.bill_id for b in OPEN.bills]
    await biller.cancel_payment("pay-1")  # idempotent
    assert await open_ids(biller, OPEN) == [b.bill_id for b in OPEN.bills]
    status = await biller.payment_status("pay-1")
    assert status.status is PostingStatus.CANCELLED and status.receipt == receipt
    await refused("payment_cancelled", biller.post_payment(order(OPEN)))
    # The bills may be paid again, by another payment.
    assert await biller.post_payment(order(OPEN, payment_id="pay-2"))
    assert await open_ids(biller, OPEN) == []


async def test_a_payment_never_posted_is_unknown(biller: Biller) -> None:
    await refused("unknown_payment", biller.cancel_payment("never-posted"))
    assert (await biller.payment_status("never-posted")).status is PostingStatus.UNKNOWN


# -- a biller that is down ---------------------------------------------------------------------


async def test_a_biller_that_is_down_is_unavailable_for_every_question(
    under_test: BillerUnderTest,
) -> None:
    if under_test.take_down is None:
        pytest.skip("the hub's own store: nothing to take down but the hub itself")
    biller = under_test.biller
    await biller.post_payment(order(OPEN))
    await under_test.take_down()
    for call in (
        biller.open_bills(OPEN.account),
        biller.post_payment(order(MANY, payment_id="pay-2")),
        biller.cancel_payment("pay-1"),
        biller.payment_status("pay-1"),
    ):
        with pytest.raises(BillerUnavailable):
            await call
