"""The REST connector against the real demo biller (BILLERS.md section 1), over sockets.

Most tests drive :class:`billhub.simulator.rest_biller.RestBiller`; answers the demo
biller never gives (floats, bad dates, bare 404s, redirects) come from a tiny stub
server that answers whatever the test asks it to.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from billhub.config import RestSettings
from billhub.connectors.rest import REFUSALS, RestConnector
from billhub.errors import (
    BillerError,
    BillerRejected,
    BillerTimeout,
    BillerUnavailable,
    ConfigError,
)
from billhub.pipeline.model import (
    AccountStatus,
    Bill,
    PaymentOrder,
    PostingStatus,
    StatusAnswer,
)
from billhub.simulator.demo_data import DemoAccount, generate_accounts
from billhub.simulator.rest_biller import Faults, RestBiller
from billhub.transport.certs import issue_cert, make_ca, write_pem

TOKEN = "tok-9f3a7c1e5b2d"
TODAY = date(2026, 11, 24)
ACCOUNTS = generate_accounts("01", 30, 7, today=TODAY)
# generate_accounts puts one of each kind first: open, paid up, blocked, closed,
# partial, many bills.
OPEN, PAID_UP, BLOCKED, CLOSED, PARTIAL, MANY = ACCOUNTS[:6]
OTHER = next(
    a
    for a in ACCOUNTS[6:]
    if a.status == "active" and a.bills and not a.partial_allowed and a is not OPEN
)
UNKNOWN_ACCOUNT = "0199999999"
assert UNKNOWN_ACCOUNT not in {a.account for a in ACCOUNTS}
PAID_AT = datetime(2026, 11, 24, 9, 45, 12, tzinfo=UTC)


def order(
    acc: DemoAccount,
    amount: int | None = None,
    *,
    bill_id: str | None = None,
    payment_id: str = "pay-1",
    paid_at: datetime = PAID_AT,
) -> PaymentOrder:
    return PaymentOrder(
        payment_id=payment_id,
        account=acc.account,
        bill_id=bill_id,
        amount=acc.total_due if amount is None else amount,
        settlement_date=TODAY,
        acquirer="600001",
        rrn="633012000123",
        channel="6013",
        paid_at=paid_at,
    )


def make(
    url: str,
    *,
    token: str = TOKEN,
    call_timeout: float = 2.0,
    max_concurrency: int = 4,
    hook: Callable[[str], None] | None = None,
    **tls: Path,
) -> RestConnector:
    return RestConnector(
        "1001",
        RestSettings(url, token, **tls),
        max_concurrency=max_concurrency,
        call_timeout=call_timeout,
        on_auth_failure=hook,
    )


def ledger(biller: RestBiller) -> dict[str, dict[str, Any]]:
    return {p["payment_id"]: p for p in biller.ledger_snapshot()}


@pytest.fixture
async def biller() -> AsyncIterator[RestBiller]:
    b = RestBiller(ACCOUNTS, TOKEN)
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def rest(biller: RestBiller) -> AsyncIterator[RestConnector]:
    c = make(biller.url)
    yield c
    await c.close()


@pytest.fixture
async def fast(biller: RestBiller) -> AsyncIterator[RestConnector]:
    """A connector with a short call timeout, for the slow-biller faults."""
    c = make(biller.url, call_timeout=0.3)
    yield c
    await c.close()


# --- open bills ----------------------------------------------------------------------------


def expected_bills(acc: DemoAccount) -> tuple[Bill, ...]:
    return tuple(Bill(b.bill_id, b.period, b.due_date, b.amount) for b in acc.bills)


@pytest.mark.parametrize(
    ("acc", "status"),
    [
        (OPEN, AccountStatus.ACTIVE),
        (PAID_UP, AccountStatus.ACTIVE),
        (BLOCKED, AccountStatus.BLOCKED),
        (CLOSED, AccountStatus.CLOSED),
        (PARTIAL, AccountStatus.ACTIVE),
        (MANY, AccountStatus.ACTIVE),
    ],
    ids=["open", "paid_up", "blocked", "closed", "partial", "many"],
)
async def test_open_bills(rest: RestConnector, acc: DemoAccount, status: AccountStatus) -> None:
    got = await rest.open_bills(acc.account)
    assert got.account == acc.account
    assert got.customer_name == acc.customer_name
    assert got.status is status
    assert got.partial_allowed is acc.partial_allowed
    assert got.min_payment == (acc.min_payment if acc.partial_allowed else 0)
    assert got.bills == expected_bills(acc)
    assert got.total_due == acc.total_due
    assert all(type(b.amount) is int for b in got.bills)


async def test_blocked_account_has_its_bills_and_blocked_status(rest: RestConnector) -> None:
    got = await rest.open_bills(BLOCKED.account)
    assert got.status is AccountStatus.BLOCKED
    assert got.bills and got.bills == expected_bills(BLOCKED)


async def test_many_bills_come_oldest_first(rest: RestConnector) -> None:
    got = await rest.open_bills(MANY.account)
    assert len(got.bills) > 12
    assert [b.period for b in got.bills] == sorted(b.period for b in got.bills)


@pytest.mark.parametrize("account", [UNKNOWN_ACCOUNT, "..", "01/../x", "رقم", "a b?c#d"])
async def test_unknown_account_is_rejected(rest: RestConnector, account: str) -> None:
    with pytest.raises(BillerRejected) as exc:
        await rest.open_bills(account)
    assert exc.value.code == "unknown_account"


# --- post payment --------------------------------------------------------------------------


async def test_post_and_repeat_give_one_posting(rest: RestConnector, biller: RestBiller) -> None:
    receipt = await rest.post_payment(order(OPEN))
    assert receipt.startswith("RC-")
    # A repeat (paid_at may differ) answers the same receipt and posts nothing more.
    again = await rest.post_payment(order(OPEN, paid_at=PAID_AT + timedelta(seconds=7)))
    assert again == receipt
    entry = ledger(biller)["pay-1"]
    assert (entry["post_count"], entry["repeat_count"], entry["status"]) == (1, 1, "posted")
    assert (await rest.open_bills(OPEN.account)).bills == ()


async def test_post_sends_the_exact_contract_body(rest: RestConnector, biller: RestBiller) -> None:
    bill = OTHER.bills[0]
    tz = timezone(timedelta(hours=3))
    paid_at = datetime(2026, 11, 24, 12, 45, 12, 987654, tzinfo=tz)
    await rest.post_payment(
        order(OTHER, bill.amount, bill_id=bill.bill_id, payment_id="p_2-x", paid_at=paid_at)
    )
    entry = ledger(biller)["p_2-x"]
    assert {k: entry[k] for k in ("account", "bill_id", "amount", "settlement_date")} == {
        "account": OTHER.account,
        "bill_id": bill.bill_id,
        "amount": bill.amount,
        "settlement_date": "2026-11-24",
    }
    assert (entry["acquirer"], entry["rrn"], entry["channel"]) == ("600001", "633012000123", "6013")
    assert entry["paid_at"] == "2026-11-24T09:45:12Z"  # UTC, whole seconds, with Z


async def test_post_without_bill_id_sends_null(rest: RestConnector, biller: RestBiller) -> None:
    await rest.post_payment(order(OPEN))
    assert ledger(biller)["pay-1"]["bill_id"] is None


async def test_partial_payment(rest: RestConnector) -> None:
    await rest.post_payment(order(PARTIAL, PARTIAL.total_due - 10_000))
    left = await rest.open_bills(PARTIAL.account)
    assert left.total_due == 10_000


async def _cancelled_then_put(rest: RestConnector) -> None:
    await rest.post_payment(order(OPEN))
    await rest.cancel_payment("pay-1")
    await rest.post_payment(order(OPEN))


async def _conflict(rest: RestConnector) -> None:
    await rest.post_payment(order(OPEN))
    await rest.post_payment(order(OPEN, OPEN.total_due - 1))


REFUSAL_CASES: dict[str, Callable[[RestConnector], Awaitable[object]]] = {
    "unknown_account": lambda r: r.post_payment(
        order(DemoAccount(UNKNOWN_ACCOUNT, "x", "active", False, 0, ()), 100)
    ),
    "unknown_payment": lambda r: r.cancel_payment("never-posted"),
    "account_blocked": lambda r: r.post_payment(order(BLOCKED)),
    "nothing_due": lambda r: r.post_payment(order(PAID_UP, 100)),
    "bill_not_open": lambda r: r.post_payment(
        order(OPEN, OTHER.bills[0].amount, bill_id=OTHER.bills[0].bill_id)
    ),
    "payment_id_conflict": _conflict,
    "payment_cancelled": _cancelled_then_put,
    "amount_not_acceptable": lambda r: r.post_payment(order(OPEN, OPEN.total_due + 1)),
}


def test_every_refusal_of_the_table_is_covered() -> None:
    assert set(REFUSAL_CASES) == set(REFUSALS)


@pytest.mark.parametrize("code", sorted(REFUSAL_CASES))
async def test_refusals_map_to_their_code(rest: RestConnector, code: str) -> None:
    with pytest.raises(BillerRejected) as exc:
        await REFUSAL_CASES[code](rest)
    assert exc.value.code == code
    assert str(exc.value) == code  # the biller's free-text message is not carried


async def test_closed_account_post_is_blocked(rest: RestConnector) -> None:
    with pytest.raises(BillerRejected) as exc:
        await rest.post_payment(order(CLOSED, 100))
    assert exc.value.code == "account_blocked"


# --- cancel and status ---------------------------------------------------------------------


async def test_cancel_twice_and_status(rest: RestConnector, biller: RestBiller) -> None:
    assert await rest.payment_status("pay-1") == StatusAnswer(PostingStatus.UNKNOWN)
    receipt = await rest.post_payment(order(OPEN))
    assert await rest.payment_status("pay-1") == StatusAnswer(PostingStatus.POSTED, receipt)
    await rest.cancel_payment("pay-1")
    await rest.cancel_payment("pay-1")
    assert await rest.payment_status("pay-1") == StatusAnswer(PostingStatus.CANCELLED, receipt)
    entry = ledger(biller)["pay-1"]
    assert (entry["post_count"], entry["cancel_count"]) == (1, 1)
    assert (await rest.open_bills(OPEN.account)).bills == expected_bills(OPEN)


async def test_status_is_not_authoritative(rest: RestConnector) -> None:
    assert rest.status_is_authoritative is False
    assert rest.code == "1001"


@pytest.mark.parametrize("payment_id", ["", "../x", "a.b", "x" * 65, "a/b"])
async def test_payment_id_outside_the_contract_never_reaches_the_wire(
    rest: RestConnector, payment_id: str
) -> None:
    for call in (rest.cancel_payment, rest.payment_status):
        with pytest.raises(BillerUnavailable):
            await call(payment_id)
    with pytest.raises(BillerUnavailable):
        await rest.post_payment(order(OPEN, payment_id=payment_id))


# --- faults --------------------------------------------------------------------------------


async def test_wrong_token_is_unavailable_and_reported(biller: RestBiller) -> None:
    reported: list[str] = []
    c = make(biller.url, token="wrong-token", hook=reported.append)
    try:
        calls: list[Awaitable[object]] = [
            c.open_bills(OPEN.account),
            c.post_payment(order(OPEN)),
            c.cancel_payment("pay-1"),
            c.payment_status("pay-1"),
        ]
        for call in calls:
            with pytest.raises(BillerUnavailable, match="unauthorized"):
                await call
    finally:
        await c.close()
    assert reported == ["1001"] * 4
    assert ledger(biller) == {}


async def test_a_failing_hook_does_not_escape(biller: RestBiller) -> None:
    def hook(code: str) -> None:
        raise RuntimeError("logging is broken")

    c = make(biller.url, token="wrong-token", hook=hook)
    try:
        with pytest.raises(BillerUnavailable, match="unauthorized"):
            await c.open_bills(OPEN.account)
    finally:
        await c.close()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_unavailable(rest: RestConnector, biller: RestBiller, status: int) -> None:
    biller.set_faults(Faults(fail_status=status))
    calls: list[Awaitable[object]] = [
        rest.open_bills(OPEN.account),
        rest.post_payment(order(OPEN)),
        rest.cancel_payment("pay-1"),
        rest.payment_status("pay-1"),  # not "unknown": the biller did not say so
    ]
    for call in calls:
        with pytest.raises(BillerUnavailable, match=str(status)):
            await call
    biller.set_faults(Faults())
    assert (await rest.open_bills(OPEN.account)).bills == expected_bills(OPEN)


@pytest.mark.parametrize("status", [400, 405, 429])
async def test_other_4xx_is_unavailable(
    rest: RestConnector, biller: RestBiller, status: int
) -> None:
    biller.set_faults(Faults(fail_status=status))
    with pytest.raises(BillerUnavailable, match="outside the contract"):
        await rest.open_bills(OPEN.account)


async def test_hang_times_out(fast: RestConnector, biller: RestBiller) -> None:
    biller.set_faults(Faults(hang=True))
    start = time.monotonic()
    with pytest.raises(BillerTimeout):
        await fast.post_payment(order(OPEN))
    assert 0.25 <= time.monotonic() - start < 1.5
    assert ledger(biller) == {}
    # The pool is still good: the next call works on a fresh connection.
    biller.set_faults(Faults())
    assert (await fast.payment_status("pay-1")).status is PostingStatus.UNKNOWN
    await fast.post_payment(order(OPEN))


async def test_latency_beyond_the_timeout_times_out_every_call(
    fast: RestConnector, biller: RestBiller
) -> None:
    biller.set_faults(Faults(latency_ms=600))
    with pytest.raises(BillerTimeout):
        await fast.open_bills(OPEN.account)
    with pytest.raises(BillerTimeout):
        await fast.payment_status("pay-1")


async def test_drop_after_post_is_unavailable_and_posted_once(
    rest: RestConnector, biller: RestBiller
) -> None:
    biller.set_faults(Faults(drop_after_post=True))
    with pytest.raises(BillerUnavailable, match="dropped"):
        await rest.post_payment(order(OPEN))
    entry = ledger(biller)["pay-1"]
    # aiohttp re-sends a PUT once on a dropped connection: the biller may have been
    # asked twice, but posted once (PUT is idempotent on the payment id).
    assert (entry["status"], entry["post_count"]) == ("posted", 1)
    assert entry["repeat_count"] <= 1
    biller.set_faults(Faults())
    status = await rest.payment_status("pay-1")
    assert status.status is PostingStatus.POSTED
    assert await rest.post_payment(order(OPEN)) == status.receipt
    assert ledger(biller)["pay-1"]["post_count"] == 1


async def test_late_posting_times_out_then_status_shows_it(
    fast: RestConnector, biller: RestBiller
) -> None:
    biller.set_faults(Faults(post_delay_ms=800))
    with pytest.raises(BillerTimeout):
        await fast.post_payment(order(OPEN))
    answer = await fast.payment_status("pay-1")
    assert answer.status is PostingStatus.POSTED
    assert answer.receipt == ledger(biller)["pay-1"]["receipt"]
    # The resolver then cancels it.
    await fast.cancel_payment("pay-1")
    assert (await fast.payment_status("pay-1")).status is PostingStatus.CANCELLED


async def test_connection_refused_is_unavailable() -> None:
    b = RestBiller(ACCOUNTS, TOKEN)
    await b.start()
    url = b.url
    await b.stop()
    c = make(url)
    try:
        with pytest.raises(BillerUnavailable, match="connect failed"):
            await c.open_bills(OPEN.account)
    finally:
        await c.close()


async def test_biller_restart_is_survived(biller: RestBiller, rest: RestConnector) -> None:
    """Kept-alive connections to a biller that restarted are dead; the next call
    still works (aiohttp retries an idempotent request on a stale connection)."""
    await rest.open_bills(OPEN.account)
    port = biller.port
    assert port is not None
    await biller.stop()
    again = RestBiller(ACCOUNTS, TOKEN)
    await again.start(port=port)
    try:
        assert (await rest.open_bills(OPEN.account)).bills == expected_bills(OPEN)
    finally:
        await again.stop()


# --- cancellation --------------------------------------------------------------------------


async def test_cancellation_propagates_and_leaves_the_session_usable(
    rest: RestConnector, biller: RestBiller
) -> None:
    biller.set_faults(Faults(hang=True))
    task = asyncio.create_task(rest.post_payment(order(OPEN)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The pipeline's own budget, shorter than call_timeout: its TimeoutError, not ours.
    with pytest.raises(TimeoutError) as exc:
        async with asyncio.timeout(0.2):
            await rest.post_payment(order(OPEN))
    assert not isinstance(exc.value, BillerError)
    biller.set_faults(Faults())
    assert await rest.payment_status("pay-1") == StatusAnswer(PostingStatus.UNKNOWN)
    assert await rest.post_payment(order(OPEN))


async def test_concurrency_is_bounded_by_the_pool(biller: RestBiller) -> None:
    biller.set_faults(Faults(latency_ms=50))
    c = make(biller.url, max_concurrency=2)
    try:
        start = time.monotonic()
        got = await asyncio.gather(*(c.open_bills(OPEN.account) for _ in range(10)))
        elapsed = time.monotonic() - start
    finally:
        await c.close()
    assert all(g.bills == expected_bills(OPEN) for g in got)
    assert elapsed >= 5 * 0.05 * 0.9  # 10 calls, 2 at a time, 50 ms each


async def test_close_is_idempotent_and_final(biller: RestBiller) -> None:
    c = make(biller.url)
    await c.close()  # never opened
    c = make(biller.url)
    await c.open_bills(OPEN.account)
    await c.close()
    await c.close()
    with pytest.raises(BillerUnavailable, match="closed"):
        await c.open_bills(OPEN.account)


async def test_close_fails_calls_in_flight_as_unavailable(
    rest: RestConnector, biller: RestBiller
) -> None:
    biller.set_faults(Faults(hang=True))
    task = asyncio.create_task(rest.post_payment(order(OPEN)))
    await asyncio.sleep(0.1)
    await rest.close()
    with pytest.raises(BillerUnavailable):
        await task


# --- mutual TLS ----------------------------------------------------------------------------


class Tls:
    def __init__(self, tmp: Path) -> None:
        ca, ca_key = make_ca("biller CA")
        server, server_key = issue_cert(ca, ca_key, "biller", server=True)
        client, client_key = issue_cert(ca, ca_key, "hub", server=False)
        other_ca, _ = make_ca("some other CA")
        self.ca = write_pem(tmp / "ca.crt", ca)
        self.other_ca = write_pem(tmp / "other-ca.crt", other_ca)
        self.server = write_pem(tmp / "server.crt", server)
        self.server_key = write_pem(tmp / "server.key", server_key)
        self.client = write_pem(tmp / "client.crt", client)
        self.client_key = write_pem(tmp / "client.key", client_key)

    def server_context(self, *, require_client: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server, self.server_key)
        if require_client:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca)
        return ctx


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


async def test_mutual_tls(tls: Tls) -> None:
    b = RestBiller(ACCOUNTS, TOKEN, ssl_context=tls.server_context(require_client=True))
    await b.start()
    good = make(b.url, cert_file=tls.client, key_file=tls.client_key, ca_file=tls.ca)
    no_cert = make(b.url, ca_file=tls.ca)
    try:
        assert b.url.startswith("https://")
        assert (await good.open_bills(OPEN.account)).bills == expected_bills(OPEN)
        receipt = await good.post_payment(order(OPEN))
        assert await good.payment_status("pay-1") == StatusAnswer(PostingStatus.POSTED, receipt)
        with pytest.raises(BillerUnavailable):
            await no_cert.open_bills(OPEN.account)
    finally:
        await good.close()
        await no_cert.close()
        await b.stop()


async def test_server_only_tls_with_ca_file(tls: Tls) -> None:
    b = RestBiller(ACCOUNTS, TOKEN, ssl_context=tls.server_context(require_client=False))
    await b.start()
    trusting = make(b.url, ca_file=tls.ca)
    wrong_ca = make(b.url, ca_file=tls.other_ca)
    system_roots = make(b.url)
    try:
        assert (await trusting.open_bills(OPEN.account)).customer_name == OPEN.customer_name
        for c in (wrong_ca, system_roots):
            with pytest.raises(BillerUnavailable, match="tls"):
                await c.open_bills(OPEN.account)
    finally:
        for c in (trusting, wrong_ca, system_roots):
            await c.close()
        await b.stop()


def test_tls_files_on_plain_http_are_a_config_error(tls: Tls) -> None:
    with pytest.raises(ConfigError, match="https"):
        make("http://127.0.0.1:1", ca_file=tls.ca)


def test_unloadable_tls_files_are_a_config_error(tls: Tls, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError):
        make("https://127.0.0.1:1", cert_file=bad, key_file=bad)
    with pytest.raises(ConfigError):
        make("https://127.0.0.1:1", ca_file=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    "url", ["ftp://h", "http://", "http://h/x?y=1", "http://u:p@h", "not a url"]
)
def test_bad_base_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        make(url)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        make("http://h", max_concurrency=0)
    with pytest.raises(ValueError):
        make("http://h", call_timeout=0)


# --- answers outside the contract (stub server) --------------------------------------------


class Stub:
    """Answers every request with ``status``/``body``/``headers``; records the paths."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"{}"
        self.headers: dict[str, str] = {}
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        return web.Response(
            status=self.status,
            body=self.body,
            headers={"Content-Type": "application/json", **self.headers},
        )


@pytest.fixture
async def stub() -> AsyncIterator[tuple[Stub, RestConnector]]:
    s = Stub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    c = make(f"http://127.0.0.1:{port}/api/v1/")
    yield s, c
    await c.close()
    await runner.cleanup()


GOOD_BILL = {"bill_id": "DM-2026-11-000187", "period": "202611", "due_date": "2026-12-15"}


def bills_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_name": "محمد الأحمد",
        "status": "active",
        "partial_allowed": False,
        "min_payment": 0,
        "bills": [{**GOOD_BILL, "amount": 1250000}],
    }
    body.update(over)
    return body


def bad_bill(**over: Any) -> dict[str, Any]:
    return bills_body(bills=[{**GOOD_BILL, "amount": 1250000, **over}])


async def test_stub_good_answer_and_base_path(stub: tuple[Stub, RestConnector]) -> None:
    s, c = stub
    s.body = json.dumps({**bills_body(), "extra": "ignored"}).encode()
    got = await c.open_bills("01 23/45")
    assert got.bills == (Bill("DM-2026-11-000187", "202611", date(2026, 12, 15), 1250000),)
    assert s.paths == ["/api/v1/accounts/01%2023%2F45/bills"]


@pytest.mark.parametrize(
    "body",
    [
        bad_bill(amount=1250000.0),
        bad_bill(amount=True),
        bad_bill(amount="1250000"),
        bad_bill(amount=-1),
        bad_bill(amount=None),
        bad_bill(amount=10**16),
        bad_bill(due_date="2026-13-01"),
        bad_bill(due_date="20261215"),
        bad_bill(due_date=20261215),
        bad_bill(period="202613"),
        bad_bill(period="2026-11"),
        bad_bill(bill_id="DM/2026"),
        bad_bill(bill_id="X" * 21),
        bad_bill(bill_id=""),
        bills_body(bills=[{**GOOD_BILL, "amount": 1}, {**GOOD_BILL, "amount": 2}]),
        bills_body(bills=[1]),
        bills_body(bills={}),
        bills_body(status="suspended"),
        bills_body(status="ACTIVE"),
        bills_body(partial_allowed="false"),
        bills_body(partial_allowed=0),
        bills_body(min_payment=1.5),
        bills_body(min_payment=False),
        bills_body(customer_name=None),
        {k: v for k, v in bills_body().items() if k != "bills"},
        [],
        "text",
    ],
)
async def test_bills_outside_the_contract(stub: tuple[Stub, RestConnector], body: Any) -> None:
    s, c = stub
    s.body = json.dumps(body).encode()
    with pytest.raises(BillerUnavailable, match="outside the contract"):
        await c.open_bills("0100000001")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"customer_name": "x", "min_payment": NaN}',
        b'{"a": Infinity}',
        b"\xff\xfe{}",
        b"[" * 100_000,
    ],
)
async def test_body_that_is_not_json(stub: tuple[Stub, RestConnector], raw: bytes) -> None:
    s, c = stub
    s.body = raw
    with pytest.raises(BillerUnavailable, match="not JSON"):
        await c.open_bills("0100000001")


async def test_oversized_body(stub: tuple[Stub, RestConnector]) -> None:
    s, c = stub
    s.body = b" " * (2 * 1024 * 1024) + b"{}"
    with pytest.raises(BillerUnavailable, match="too large"):
        await c.open_bills("0100000001")


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (404, b"404: Not Found", {"Content-Type": "text/plain"}),  # a bare 404 (proxy, path)
        (404, b'{"error": "account_blocked"}', {}),  # code with the wrong status
        (409, b'{"error": "overdrawn"}', {}),  # not in the table
        (409, b'{"error": 409}', {}),
        (422, b"[]", {}),
        (400, b'{"error": "invalid_request"}', {}),
        (302, b"", {"Location": "http://127.0.0.1:1/elsewhere"}),
        (204, b"", {}),
        (201, b'{"receipt": "R1", "status": "posted"}', {}),
        (502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}),
    ],
)
async def test_statuses_outside_the_contract(
    stub: tuple[Stub, RestConnector], status: int, body: bytes, headers: dict[str, str]
) -> None:
    s, c = stub
    s.status, s.body, s.headers = status, body, headers
    calls: list[Awaitable[object]] = [
        c.open_bills("0100000001"),
        c.post_payment(order(OPEN)),
        c.cancel_payment("pay-1"),
        c.payment_status("pay-1"),
    ]
    for call in calls:
        with pytest.raises(BillerUnavailable):
            await call
    assert len(s.paths) == 4  # no redirect was followed


@pytest.mark.parametrize(
    "body",
    [
        {"receipt": "RC-1", "status": "accepted"},
        {"receipt": "RC-1"},
        {"receipt": "RC 1", "status": "posted"},
        {"receipt": "R" * 21, "status": "posted"},
        {"receipt": 12, "status": "posted"},
        {"status": "posted"},
        ["RC-1"],
    ],
)
async def test_post_answer_outside_the_contract(
    stub: tuple[Stub, RestConnector], body: Any
) -> None:
    s, c = stub
    s.body = json.dumps(body).encode()
    with pytest.raises(BillerUnavailable, match="outside the contract"):
        await c.post_payment(order(OPEN))


@pytest.mark.parametrize(
    "body",
    [
        {"status": "unknown", "receipt": "RC-1"},
        {"status": "posted"},
        {"status": "cancelled", "receipt": None},
        {"status": True, "receipt": "RC-1"},
    ],
)
async def test_status_answer_outside_the_contract(
    stub: tuple[Stub, RestConnector], body: Any
) -> None:
    s, c = stub
    s.body = json.dumps(body).encode()
    with pytest.raises(BillerUnavailable, match="outside the contract"):
        await c.payment_status("pay-1")


async def test_cancel_answer_outside_the_contract(stub: tuple[Stub, RestConnector]) -> None:
    s, c = stub
    s.body = b'{"status": "posted"}'
    with pytest.raises(BillerUnavailable, match="outside the contract"):
        await c.cancel_payment("pay-1")


# --- nothing secret in messages ------------------------------------------------------------


async def test_errors_never_carry_the_token_or_the_account(
    biller: RestBiller, stub: tuple[Stub, RestConnector]
) -> None:
    account = OPEN.account
    errors: list[BaseException] = []

    async def collect(call: Awaitable[object]) -> None:
        try:
            await call
        except BillerError as exc:
            errors.append(exc)
        else:
            raise AssertionError("expected a biller error")

    rest = make(biller.url)
    fast = make(biller.url, call_timeout=0.2)
    wrong = make(biller.url, token="wrong-" + TOKEN)
    try:
        await collect(rest.open_bills(UNKNOWN_ACCOUNT))
        await collect(rest.post_payment(order(BLOCKED)))
        await collect(wrong.open_bills(account))
        biller.set_faults(Faults(fail_status=503))
        await collect(rest.open_bills(account))
        biller.set_faults(Faults(hang=True))
        await collect(fast.post_payment(order(OPEN)))
        biller.set_faults(Faults(drop_after_post=True))
        await collect(rest.post_payment(order(OPEN, payment_id="pay-2")))
        biller.set_faults(Faults(latency_ms=500))
        await collect(fast.open_bills(account))
    finally:
        for c in (rest, fast, wrong):
            await c.close()
    # The stub echoes the secrets in its answers.
    s, c = stub
    for status in (200, 404, 409, 500):
        s.status = status
        s.body = f'{{"error": "{account}", "token": "{TOKEN}", "account": "{account}"'.encode()
        await collect(c.open_bills(account))
    down = make("http://127.0.0.1:1")
    try:
        await collect(down.open_bills(account))
    finally:
        await down.close()

    assert len(errors) == 12
    for exc in errors:
        shown = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
        assert TOKEN not in shown
        assert account not in shown
        assert UNKNOWN_ACCOUNT not in shown
    assert TOKEN not in repr(make(biller.url))
