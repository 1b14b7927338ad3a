"""The demo REST biller against BILLERS.md section 1, over a real socket."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from billhub.simulator.demo_data import DemoAccount, DemoBill, generate_accounts
from billhub.simulator.rest_biller import Faults, RestBiller, main, run_rest_biller

TOKEN = "demo-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TODAY = date(2026, 11, 24)

ACTIVE = "0100000001"
PAID_UP = "0100000002"
BLOCKED = "0100000003"
CLOSED = "0100000004"
PARTIAL = "0100000005"
SMALL_PARTIAL = "0100000006"
OTHER = "0100000007"
MANY = "0100000008"


def _bill(bill_id: str, period: str, amount: int) -> DemoBill:
    year, month = int(period[:4]), int(period[4:])
    due = date(year + month // 12, month % 12 + 1, 15)
    return DemoBill(bill_id, period, due, amount)


def _account(
    account: str,
    bills: tuple[DemoBill, ...] = (),
    *,
    status: Any = "active",
    partial: bool = False,
    min_payment: int = 0,
) -> DemoAccount:
    return DemoAccount(account, "محمد الأحمد", status, partial, min_payment, bills)


ACCOUNTS = [
    _account(
        ACTIVE,
        (
            _bill("DM-2026-10-000001", "202610", 500_000),
            _bill("DM-2026-11-000001", "202611", 700_000),
        ),
    ),
    _account(PAID_UP),
    _account(BLOCKED, (_bill("DM-2026-11-000003", "202611", 300_000),), status="blocked"),
    _account(CLOSED, status="closed"),
    _account(
        PARTIAL,
        (
            _bill("DM-2026-10-000005", "202610", 300_000),
            _bill("DM-2026-11-000005", "202611", 400_000),
        ),
        partial=True,
        min_payment=200_000,
    ),
    _account(
        SMALL_PARTIAL,
        (_bill("DM-2026-11-000006", "202611", 150_000),),
        partial=True,
        min_payment=500_000,
    ),
    _account(OTHER, (_bill("DM-2026-11-000007", "202611", 250_000),)),
    _account(
        MANY,
        tuple(_bill(f"DM-2025-{m:02d}-000008", f"2025{m:02d}", 200_000) for m in range(1, 13))
        + tuple(_bill(f"DM-2026-{m:02d}-000008", f"2026{m:02d}", 200_000) for m in range(1, 4)),
    ),
]


def payment(account: str, amount: Any, bill_id: Any = None, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account": account,
        "bill_id": bill_id,
        "amount": amount,
        "settlement_date": "2026-11-24",
        "acquirer": "600001",
        "rrn": "633012000123",
        "channel": "6013",
        "paid_at": "2026-11-24T09:45:12Z",
    }
    body.update(over)
    return body


@pytest.fixture
async def biller() -> AsyncIterator[RestBiller]:
    b = RestBiller(ACCOUNTS, TOKEN)
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def http(biller: RestBiller) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=biller.url, headers=AUTH) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, path, json=body, **kw) as resp:
        return resp.status, await resp.json()


async def ledger(http: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
    status, body = await call(http, "GET", "/_admin/ledger")
    assert status == 200
    return {p["payment_id"]: p for p in body["payments"]}


async def set_faults(http: aiohttp.ClientSession, **faults: Any) -> None:
    status, body = await call(http, "POST", "/_admin/faults", faults)
    assert status == 200, body


async def due(http: aiohttp.ClientSession, account: str) -> list[int]:
    status, body = await call(http, "GET", f"/accounts/{account}/bills")
    assert status == 200
    return [b["amount"] for b in body["bills"]]


# --- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/accounts/{ACTIVE}/bills"),
        ("PUT", "/payments/p1"),
        ("DELETE", "/payments/p1"),
        ("GET", "/payments/p1"),
        ("GET", "/_admin/ledger"),
        ("POST", "/_admin/faults"),
    ],
)
async def test_wrong_or_missing_token_is_401(
    biller: RestBiller, headers: dict[str, str], method: str, path: str
) -> None:
    async with aiohttp.ClientSession(base_url=biller.url, headers=headers) as session:
        status, body = await call(session, method, path, payment(ACTIVE, 1_200_000))
    assert status == 401
    assert body["error"] == "unauthorized"
    assert biller.ledger_snapshot() == []


# --- GET /accounts/{account}/bills ------------------------------------------------------


async def test_open_bills_oldest_first(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", f"/accounts/{ACTIVE}/bills")
    assert status == 200
    assert body == {
        "customer_name": "محمد الأحمد",
        "status": "active",
        "partial_allowed": False,
        "min_payment": 0,
        "bills": [
            {"bill_id": "DM-2026-10-000001", "period": "202610", "due_date": "2026-11-15",
             "amount": 500_000},
            {"bill_id": "DM-2026-11-000001", "period": "202611", "due_date": "2026-12-15",
             "amount": 700_000},
        ],
    }  # fmt: skip


async def test_partial_account_shows_its_minimum(http: aiohttp.ClientSession) -> None:
    _, body = await call(http, "GET", f"/accounts/{PARTIAL}/bills")
    assert body["partial_allowed"] is True
    assert body["min_payment"] == 200_000


async def test_all_open_bills_are_listed_beyond_twelve(http: aiohttp.ClientSession) -> None:
    """The 12-bill cut is the hub's (DE 48 BL), not the biller's."""
    assert len(await due(http, MANY)) == 15


async def test_nothing_due_is_an_empty_list(http: aiohttp.ClientSession) -> None:
    assert await due(http, PAID_UP) == []


@pytest.mark.parametrize(("account", "state"), [(BLOCKED, "blocked"), (CLOSED, "closed")])
async def test_blocked_and_closed_accounts_answer_200_with_their_status(
    http: aiohttp.ClientSession, account: str, state: str
) -> None:
    status, body = await call(http, "GET", f"/accounts/{account}/bills")
    assert status == 200
    assert body["status"] == state


async def test_unknown_account_is_404(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", "/accounts/0199999999/bills")
    assert (status, body["error"]) == (404, "unknown_account")
    assert isinstance(body["message"], str)


async def test_unknown_route_is_a_json_404(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", "/nowhere")
    assert (status, body["error"]) == (404, "not_found")


# --- PUT /payments/{id} ------------------------------------------------------------------


async def test_full_payment_settles_every_open_bill(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "PUT", "/payments/p-1", payment(ACTIVE, 1_200_000))
    assert status == 200
    assert body["status"] == "posted"
    assert 1 <= len(body["receipt"]) <= 20
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in body["receipt"])
    assert await due(http, ACTIVE) == []
    entry = (await ledger(http))["p-1"]
    assert entry["post_count"] == 1
    assert entry["status"] == "posted"
    assert entry["amount"] == 1_200_000
    assert entry["receipt"] == body["receipt"]


async def test_payment_of_one_named_bill(http: aiohttp.ClientSession) -> None:
    status, _ = await call(
        http, "PUT", "/payments/p-2", payment(ACTIVE, 700_000, "DM-2026-11-000001")
    )
    assert status == 200
    assert await due(http, ACTIVE) == [500_000]


async def test_receipts_differ_between_payments(http: aiohttp.ClientSession) -> None:
    _, a = await call(http, "PUT", "/payments/a", payment(ACTIVE, 500_000, "DM-2026-10-000001"))
    _, b = await call(http, "PUT", "/payments/b", payment(ACTIVE, 700_000, "DM-2026-11-000001"))
    assert a["receipt"] != b["receipt"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (payment("0199999999", 1000), 404, "unknown_account"),
        (payment(BLOCKED, 300_000), 403, "account_blocked"),
        (payment(CLOSED, 300_000), 403, "account_blocked"),
        (payment(PAID_UP, 300_000), 409, "nothing_due"),
        (payment(ACTIVE, 250_000, "DM-2026-11-000007"), 409, "bill_not_open"),
        (payment(ACTIVE, 250_000, "NO-SUCH-BILL"), 409, "bill_not_open"),
        (payment(ACTIVE, 1_199_900), 422, "amount_not_acceptable"),
        (payment(ACTIVE, 1_200_100), 422, "amount_not_acceptable"),
        (payment(ACTIVE, 500_000), 422, "amount_not_acceptable"),
        (payment(ACTIVE, 600_000, "DM-2026-11-000001"), 422, "amount_not_acceptable"),
    ],
)
async def test_refusals(
    http: aiohttp.ClientSession, body: dict[str, Any], status: int, code: str
) -> None:
    before = await due(http, ACTIVE)
    got_status, got = await call(http, "PUT", "/payments/refused", body)
    assert (got_status, got["error"]) == (status, code)
    assert isinstance(got["message"], str)
    assert await ledger(http) == {}
    assert await due(http, ACTIVE) == before
    # A refusal is not remembered: the id is still free for a valid payment.
    ok, _ = await call(http, "PUT", "/payments/refused", payment(OTHER, 250_000))
    assert ok == 200


async def test_paid_bill_is_not_open(http: aiohttp.ClientSession) -> None:
    await call(http, "PUT", "/payments/first", payment(ACTIVE, 500_000, "DM-2026-10-000001"))
    status, body = await call(
        http, "PUT", "/payments/second", payment(ACTIVE, 500_000, "DM-2026-10-000001")
    )
    assert (status, body["error"]) == (409, "bill_not_open")


async def test_nothing_due_after_everything_is_paid(http: aiohttp.ClientSession) -> None:
    await call(http, "PUT", "/payments/first", payment(OTHER, 250_000))
    status, body = await call(http, "PUT", "/payments/second", payment(OTHER, 250_000))
    assert (status, body["error"]) == (409, "nothing_due")


@pytest.mark.parametrize(
    ("payment_id", "body"),
    [
        ("x" * 65, payment(ACTIVE, 1_200_000)),
        ("bad.id", payment(ACTIVE, 1_200_000)),
        ("p", ["not", "an", "object"]),
        ("p", {k: v for k, v in payment(ACTIVE, 1_200_000).items() if k != "rrn"}),
        ("p", payment(ACTIVE, 1_200_000, extra="x")),
        ("p", payment(ACTIVE, 1_200_000.0)),
        ("p", payment(ACTIVE, "1200000")),
        ("p", payment(ACTIVE, True)),
        ("p", payment(ACTIVE, 0)),
        ("p", payment(ACTIVE, -5)),
        ("p", payment(ACTIVE, 1_200_000, "")),
        ("p", payment(ACTIVE, 1_200_000, 17)),
        ("p", payment("", 1_200_000)),
        ("p", payment(ACTIVE, 1_200_000, settlement_date="20261124")),
        ("p", payment(ACTIVE, 1_200_000, settlement_date="2026-02-30")),
        ("p", payment(ACTIVE, 1_200_000, channel="601")),
        ("p", payment(ACTIVE, 1_200_000, channel=6013)),
        ("p", payment(ACTIVE, 1_200_000, paid_at="2026-11-24 09:45:12")),
        ("p", payment(ACTIVE, 1_200_000, paid_at="2026-11-24T09:45:12+03:00")),
        ("p", payment(ACTIVE, 1_200_000, acquirer=600001)),
    ],
)
async def test_requests_outside_the_contract_are_400(
    http: aiohttp.ClientSession, payment_id: str, body: Any
) -> None:
    status, got = await call(http, "PUT", f"/payments/{payment_id}", body)
    assert (status, got["error"]) == (400, "invalid_request")
    assert await ledger(http) == {}


async def test_body_that_is_not_json_is_400(http: aiohttp.ClientSession) -> None:
    async with http.put("/payments/p", data=b"\xff{") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_request"


async def test_longest_payment_id_and_all_its_characters(http: aiohttp.ClientSession) -> None:
    pid = ("aZ0-_" * 13)[:64]
    status, _ = await call(http, "PUT", f"/payments/{pid}", payment(OTHER, 250_000))
    assert status == 200
    assert (await call(http, "GET", f"/payments/{pid}"))[0] == 200


async def test_fractional_paid_at_is_accepted(http: aiohttp.ClientSession) -> None:
    body = payment(OTHER, 250_000, paid_at="2026-11-24T09:45:12.123Z")
    assert (await call(http, "PUT", "/payments/p", body))[0] == 200


# --- idempotency -------------------------------------------------------------------------


async def test_five_repeats_post_once(http: aiohttp.ClientSession) -> None:
    answers = []
    for i in range(5):
        # The hub stamps paid_at per attempt; it is not part of the payment's content.
        body = payment(ACTIVE, 1_200_000, paid_at=f"2026-11-24T09:45:1{i}Z")
        answers.append(await call(http, "PUT", "/payments/rep", body))
    assert len(set(map(str, answers))) == 1
    assert answers[0][0] == 200
    entry = (await ledger(http))["rep"]
    assert entry["post_count"] == 1
    assert entry["repeat_count"] == 4
    assert entry["paid_at"] == "2026-11-24T09:45:10Z"
    assert await due(http, ACTIVE) == []


async def test_concurrent_repeats_post_once(http: aiohttp.ClientSession) -> None:
    answers = await asyncio.gather(
        *(call(http, "PUT", "/payments/race", payment(ACTIVE, 1_200_000)) for _ in range(10))
    )
    assert len({a[1]["receipt"] for a in answers}) == 1
    assert (await ledger(http))["race"]["post_count"] == 1


async def test_same_id_other_content_is_a_conflict(http: aiohttp.ClientSession) -> None:
    _, first = await call(http, "PUT", "/payments/c", payment(PARTIAL, 700_000))
    for other in (
        payment(PARTIAL, 300_000),
        payment(PARTIAL, 700_000, rrn="633012000999"),
        payment(PARTIAL, 300_000, "DM-2026-10-000005"),
        payment(OTHER, 250_000),
    ):
        status, body = await call(http, "PUT", "/payments/c", other)
        assert (status, body["error"]) == (409, "payment_id_conflict")
    entry = (await ledger(http))["c"]
    assert (entry["amount"], entry["post_count"], entry["receipt"]) == (
        700_000,
        1,
        first["receipt"],
    )
    assert await due(http, OTHER) == [250_000]


# --- partial payment ---------------------------------------------------------------------


async def test_partial_reduces_the_oldest_bills_first(http: aiohttp.ClientSession) -> None:
    status, _ = await call(http, "PUT", "/payments/p1", payment(PARTIAL, 450_000))
    assert status == 200
    assert await due(http, PARTIAL) == [250_000]
    # What is due is now 250,000; the 200,000 minimum still applies.
    status, body = await call(http, "PUT", "/payments/p2", payment(PARTIAL, 150_000))
    assert (status, body["error"]) == (422, "amount_not_acceptable")
    status, _ = await call(http, "PUT", "/payments/p3", payment(PARTIAL, 200_000))
    assert status == 200
    assert await due(http, PARTIAL) == [50_000]
    # Below the minimum is fine once the minimum exceeds what is due.
    status, _ = await call(http, "PUT", "/payments/p4", payment(PARTIAL, 50_000))
    assert status == 200
    assert await due(http, PARTIAL) == []


@pytest.mark.parametrize(
    ("amount", "bill_id", "status"),
    [
        (199_900, None, 422),
        (200_000, None, 200),
        (700_000, None, 200),
        (700_100, None, 422),
        (200_000, "DM-2026-11-000005", 200),
        (400_000, "DM-2026-11-000005", 200),
        (400_100, "DM-2026-11-000005", 422),
        (199_900, "DM-2026-11-000005", 422),
    ],
)
async def test_partial_bounds(
    http: aiohttp.ClientSession, amount: int, bill_id: str | None, status: int
) -> None:
    got, _ = await call(http, "PUT", "/payments/p", payment(PARTIAL, amount, bill_id))
    assert got == status


async def test_partial_on_a_named_bill_reduces_only_that_bill(http: aiohttp.ClientSession) -> None:
    await call(http, "PUT", "/payments/p", payment(PARTIAL, 250_000, "DM-2026-11-000005"))
    assert await due(http, PARTIAL) == [300_000, 150_000]


async def test_minimum_above_due_means_the_whole_due(http: aiohttp.ClientSession) -> None:
    got, _ = await call(http, "PUT", "/payments/p", payment(SMALL_PARTIAL, 100_000))
    assert got == 422
    got, _ = await call(http, "PUT", "/payments/p", payment(SMALL_PARTIAL, 150_000))
    assert got == 200


# --- DELETE and GET /payments/{id} -------------------------------------------------------


async def test_cancel_restores_the_bills_and_is_idempotent(http: aiohttp.ClientSession) -> None:
    _, posted = await call(http, "PUT", "/payments/x", payment(PARTIAL, 450_000))
    assert await call(http, "GET", "/payments/x") == (
        200,
        {"status": "posted", "receipt": posted["receipt"]},
    )
    for _ in range(3):
        assert await call(http, "DELETE", "/payments/x") == (200, {"status": "cancelled"})
    assert await due(http, PARTIAL) == [300_000, 400_000]
    assert await call(http, "GET", "/payments/x") == (
        200,
        {"status": "cancelled", "receipt": posted["receipt"]},
    )
    entry = (await ledger(http))["x"]
    assert (entry["status"], entry["post_count"], entry["cancel_count"]) == ("cancelled", 1, 1)


async def test_put_after_cancel_is_refused(http: aiohttp.ClientSession) -> None:
    await call(http, "PUT", "/payments/x", payment(ACTIVE, 1_200_000))
    await call(http, "DELETE", "/payments/x")
    status, body = await call(http, "PUT", "/payments/x", payment(ACTIVE, 1_200_000))
    assert (status, body["error"]) == (409, "payment_cancelled")
    assert await due(http, ACTIVE) == [500_000, 700_000]
    assert (await ledger(http))["x"]["post_count"] == 1


async def test_cancel_gives_back_only_its_own_share(http: aiohttp.ClientSession) -> None:
    await call(http, "PUT", "/payments/a", payment(PARTIAL, 200_000))
    await call(http, "PUT", "/payments/b", payment(PARTIAL, 300_000))
    assert await due(http, PARTIAL) == [200_000]
    await call(http, "DELETE", "/payments/a")
    assert await due(http, PARTIAL) == [200_000, 200_000]


@pytest.mark.parametrize("method", ["DELETE", "GET"])
async def test_unknown_payment_is_404(http: aiohttp.ClientSession, method: str) -> None:
    status, body = await call(http, method, "/payments/never")
    assert (status, body["error"]) == (404, "unknown_payment")


@pytest.mark.parametrize("method", ["DELETE", "GET"])
async def test_bad_payment_id_is_400(http: aiohttp.ClientSession, method: str) -> None:
    status, body = await call(http, method, "/payments/no.dots")
    assert (status, body["error"]) == (400, "invalid_request")


# --- fault injection ---------------------------------------------------------------------


async def test_admin_faults_round_trip_and_validation(http: aiohttp.ClientSession) -> None:
    assert await call(http, "GET", "/_admin/faults") == (200, Faults().to_json())
    await set_faults(http, latency_ms=5, fail_status=502)
    _, body = await call(http, "GET", "/_admin/faults")
    assert body == Faults(latency_ms=5, fail_status=502).to_json()
    for bad in ({"bogus": 1}, {"fail_status": 200}, {"latency_ms": -1}, {"hang": 1}, [1]):
        status, got = await call(http, "POST", "/_admin/faults", bad)
        assert (status, got["error"]) == (400, "invalid_request")
    # Each POST replaces the whole set: keys left out are switched off.
    await set_faults(http)
    assert (await call(http, "GET", "/_admin/faults"))[1] == Faults().to_json()


def test_faults_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        Faults(fail_status=99)
    with pytest.raises(ValueError):
        Faults(post_delay_ms=-1)


async def test_latency_is_added_to_every_call(http: aiohttp.ClientSession) -> None:
    await set_faults(http, latency_ms=150)
    for method, path in (("GET", f"/accounts/{ACTIVE}/bills"), ("GET", "/payments/none")):
        start = time.monotonic()
        await call(http, method, path)
        assert time.monotonic() - start >= 0.15
    start = time.monotonic()
    await call(http, "PUT", "/payments/lat", payment(OTHER, 250_000))
    assert time.monotonic() - start >= 0.15


async def test_fail_status_answers_every_call_but_admin(http: aiohttp.ClientSession) -> None:
    await set_faults(http, fail_status=503)
    for method, path in (
        ("GET", f"/accounts/{ACTIVE}/bills"),
        ("PUT", "/payments/f"),
        ("DELETE", "/payments/f"),
        ("GET", "/payments/f"),
    ):
        status, body = await call(http, method, path, payment(ACTIVE, 1_200_000))
        assert (status, body["error"]) == (503, "unavailable")
    assert await ledger(http) == {}
    await set_faults(http)
    assert (await call(http, "GET", f"/accounts/{ACTIVE}/bills"))[0] == 200


async def test_post_delay_posts_then_answers_late(http: aiohttp.ClientSession) -> None:
    await set_faults(http, post_delay_ms=400)
    with pytest.raises(TimeoutError):
        await call(
            http,
            "PUT",
            "/payments/late",
            payment(ACTIVE, 1_200_000),
            timeout=aiohttp.ClientTimeout(total=0.15),
        )
    # The hub's resolution path: the biller holds the payment although no answer came.
    status, body = await call(http, "GET", "/payments/late")
    assert (status, body["status"]) == (200, "posted")
    start = time.monotonic()
    status, again = await call(http, "PUT", "/payments/late", payment(ACTIVE, 1_200_000))
    assert time.monotonic() - start >= 0.4
    assert (status, again["receipt"]) == (200, body["receipt"])
    assert (await ledger(http))["late"]["post_count"] == 1


async def test_post_delay_only_delays_put(http: aiohttp.ClientSession) -> None:
    await set_faults(http, post_delay_ms=2000)
    start = time.monotonic()
    await call(http, "GET", f"/accounts/{ACTIVE}/bills")
    await call(http, "GET", "/payments/x")
    assert time.monotonic() - start < 1.5


async def test_drop_after_post_records_then_drops(http: aiohttp.ClientSession) -> None:
    await set_faults(http, drop_after_post=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, "PUT", "/payments/drop", payment(ACTIVE, 1_200_000))
    await set_faults(http)
    entry = (await ledger(http))["drop"]
    # aiohttp's client re-sends an idempotent request once on a dropped connection.
    assert (entry["status"], entry["post_count"]) == ("posted", 1)
    assert await due(http, ACTIVE) == []


async def test_hang_never_answers_and_records_nothing(
    biller: RestBiller, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, hang=True)
    with pytest.raises(TimeoutError):
        await call(
            http,
            "PUT",
            "/payments/hung",
            payment(ACTIVE, 1_200_000),
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    pending = asyncio.create_task(call(http, "PUT", "/payments/hung2", payment(OTHER, 250_000)))
    await asyncio.sleep(0.1)
    assert not pending.done()
    assert await ledger(http) == {}
    assert (await call(http, "GET", "/payments/hung"))[0] == 404
    assert await due(http, ACTIVE) == [500_000, 700_000]
    # Stopping releases hung requests instead of waiting for them.
    start = time.monotonic()
    await biller.stop()
    assert time.monotonic() - start < 2
    with pytest.raises(aiohttp.ClientError):
        await pending


async def test_faults_set_at_construction() -> None:
    b = RestBiller(ACCOUNTS, TOKEN, faults=Faults(fail_status=500))
    await b.start()
    try:
        assert b.faults.fail_status == 500
        async with aiohttp.ClientSession(base_url=b.url, headers=AUTH) as session:
            status, _ = await call(session, "GET", f"/accounts/{ACTIVE}/bills")
            assert status == 500
            b.set_faults(Faults())
            status, _ = await call(session, "GET", f"/accounts/{ACTIVE}/bills")
            assert status == 200
    finally:
        await b.stop()


# --- lifecycle, TLS, process ---------------------------------------------------------------


async def test_stop_is_idempotent_and_start_twice_is_refused() -> None:
    b = RestBiller(ACCOUNTS, TOKEN)
    await b.start()
    with pytest.raises(RuntimeError):
        await b.start()
    await b.stop()
    await b.stop()


def test_duplicate_demo_data_is_refused() -> None:
    with pytest.raises(ValueError):
        RestBiller([ACCOUNTS[0], ACCOUNTS[0]], TOKEN)
    with pytest.raises(ValueError):
        RestBiller(ACCOUNTS, "")


async def test_run_rest_biller_serves_until_stopped() -> None:
    stop = asyncio.Event()
    listening = asyncio.Event()
    bound: list[int] = []

    def on_listening(_host: str, port: int) -> None:
        bound.append(port)
        listening.set()

    task = asyncio.create_task(
        run_rest_biller(ACCOUNTS, TOKEN, stop=stop, on_listening=on_listening)
    )
    await asyncio.wait_for(listening.wait(), 5)
    async with aiohttp.ClientSession(headers=AUTH) as session:
        status, _ = await call(
            session, "GET", f"http://127.0.0.1:{bound[0]}/accounts/{ACTIVE}/bills"
        )
    assert status == 200
    stop.set()
    await asyncio.wait_for(task, 5)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    path.write_bytes(data)


async def test_mutual_tls(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("demo CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write_pem(tmp_path / "ca.pem", ca, None)
    _write_pem(
        tmp_path / "server.pem", _cert("biller", server_key, ("demo CA", ca_key), ip="127.0.0.1"),
        server_key,
    )  # fmt: skip
    _write_pem(tmp_path / "client.pem", _cert("hub", client_key, ("demo CA", ca_key)), client_key)

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "server.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(tmp_path / "ca.pem")
    b = RestBiller(ACCOUNTS, TOKEN, ssl_context=server_ctx)
    await b.start()
    try:
        assert b.url.startswith("https://127.0.0.1:")
        client_ctx = ssl.create_default_context(cafile=tmp_path / "ca.pem")
        client_ctx.load_cert_chain(tmp_path / "client.pem")
        async with aiohttp.ClientSession(base_url=b.url, headers=AUTH) as session:
            status, _ = await call(session, "GET", f"/accounts/{ACTIVE}/bills", ssl=client_ctx)
            assert status == 200
        no_cert_ctx = ssl.create_default_context(cafile=tmp_path / "ca.pem")
        async with aiohttp.ClientSession(base_url=b.url, headers=AUTH) as session:
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                await call(session, "GET", f"/accounts/{ACTIVE}/bills", ssl=no_cert_ctx)
    finally:
        await b.stop()


async def test_runs_as_a_process_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "billhub.simulator.rest_biller",
        "--port", "0", "--token", TOKEN, "--seed", "7", "--accounts", "20", "--prefix", "01",
        "--today", TODAY.isoformat(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        host_port = line.removeprefix("listening ").strip()
        assert line.startswith("listening 127.0.0.1:"), line
        expected = generate_accounts("01", 20, 7, today=TODAY)[0]
        async with aiohttp.ClientSession(headers=AUTH) as session:
            status, body = await call(
                session, "GET", f"http://{host_port}/accounts/{expected.account}/bills"
            )
        assert status == 200
        assert body["customer_name"] == expected.customer_name
        assert [b["bill_id"] for b in body["bills"]] == [b.bill_id for b in expected.bills]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_requires_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLHUB_DEMO_BILLER_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["--port", "0"])
    assert exc.value.code == 2


def test_cli_refuses_bad_faults() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--token", "t", "--fail-status", "200"])
    assert exc.value.code == 2
