"""The citizen services over real sockets: a uvicorn web service, demo REST billers, the
journal database on SQLite (and the whole life of the requests on PostgreSQL too).

Each request type is lived through from filing to decision: filed through the API or a
page, decided at the desk by the company's clerk, and seen by the citizen on the
tracking page and the API, history included."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import Pki
from tests.webharness import (
    ACCOUNTS_A,
    BATCH,
    COMPANY_A,
    COMPANY_B,
    TOKEN,
    Web,
    api,
    client,
    csrf_of,
    login,
    open_account,
    running_web,
)

from billhub.config import RestSettings
from billhub.connectors.batch import BatchConnector
from billhub.connectors.database.schema import install, load_bills
from billhub.connectors.rest import RestConnector
from billhub.journal.factory import build_journal
from billhub.money import Amount
from billhub.pipeline.model import PaymentKey, PaymentOrder, PaymentRecord, PaymentState
from billhub.simulator.demo_data import bills_table_rows, generate_accounts, write_bills_file

PHONE = "0944123456"


@pytest.fixture
async def web(tmp_path: Path, pki: Pki) -> AsyncIterator[Web]:
    async with running_web(tmp_path, pki.directory) as w:
        yield w


async def decide(web: Web, user: str, ticket: str, **form: str) -> str:
    """A clerk's decision through the desk's form; returns the request's desk page."""
    async with client() as s:
        csrf = await login(s, web, user)
        async with s.post(
            f"{web.url}/desk/requests/{ticket}/decide",
            data={"csrf": csrf, **form},
            allow_redirects=False,
        ) as r:
            assert r.status == 303, await r.text()
        async with s.get(f"{web.url}/desk/requests/{ticket}") as r:
            return await r.text()


async def track(web: Web, ticket: str, phone: str = PHONE) -> dict:  # type: ignore[type-arg]
    async with client() as s:
        status, body, _ = await api(
            s, "POST", f"{web.url}/api/v1/track", json={"ticket": ticket, "phone": phone}
        )
        assert status == 200, body
        return body  # type: ignore[no-any-return]


async def test_inquiry_shows_what_a_paper_bill_shows(web: Web) -> None:
    acc = open_account(ACCOUNTS_A)
    async with client() as s:
        status, body, _ = await api(
            s, "GET", f"{web.url}/api/v1/bills?company={COMPANY_A}&account={acc.account}"
        )
        assert status == 200
        first, rest = acc.customer_name.split(" ", 1)
        assert body["customer_name"].startswith(first + " ") and body["customer_name"].endswith(".")
        assert rest not in body["customer_name"]
        assert [b["bill_id"] for b in body["bills"]] == [b.bill_id for b in acc.bills]
        assert body["total_due"] == acc.total_due == sum(b["amount"] for b in body["bills"])
        async with s.get(
            f"{web.url}/inquiry", params={"company": COMPANY_A, "account": acc.account}
        ) as r:
            page = await r.text()
        assert r.status == 200
        assert Amount(acc.total_due).format() in page and body["customer_name"] in page
        assert rest not in page
        # The other company does not know this account: the same "not found" as an unknown one.
        st_b, body_b, _ = await api(
            s, "GET", f"{web.url}/api/v1/bills?company={COMPANY_B}&account={acc.account}"
        )
        st_u, body_u, _ = await api(
            s, "GET", f"{web.url}/api/v1/bills?company={COMPANY_A}&account=0199999999"
        )
        assert st_b == st_u == 404 and body_b == body_u
        assert body_u["error"]["code"] == "not_found" and body_u["error"]["message"]["ar"]


async def test_biller_down_during_inquiry_is_try_again_later(web: Web) -> None:
    acc = open_account(ACCOUNTS_A)
    await web.biller_a.stop()
    async with client() as s:
        status, body, headers = await api(
            s, "GET", f"{web.url}/api/v1/bills?company={COMPANY_A}&account={acc.account}"
        )
        assert status == 503 and body["error"]["code"] == "biller_unavailable"
        assert headers["Retry-After"] == "60"
        async with s.get(
            f"{web.url}/inquiry", params={"company": COMPANY_A, "account": acc.account}
        ) as r:
            page = await r.text()
        assert r.status == 503
        assert "يرجى المحاولة لاحقاً" in page and "Traceback" not in page
    # Billing of the other company is untouched.
    async with client() as s:
        status, _, _ = await api(
            s, "GET", f"{web.url}/api/v1/bills?company={COMPANY_B}&account=0300000000"
        )
        assert status in (200, 404)
    # The metrics count the failed biller call.
    async with client() as s, s.get(f"{web.admin_url}/metrics") as r:
        text = await r.text()
    assert (
        f'billhub_web_biller_calls_total{{biller="{COMPANY_A}",operation="open_bills",outcome="unavailable"}} 2.0'
        in text
    )


async def test_installment_whole_life(web: Web) -> None:
    acc = open_account(ACCOUNTS_A)
    chosen = [acc.bills[0], acc.bills[1]]
    total = sum(b.amount for b in chosen)
    async with client() as s:
        status, filed, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/installments",
            json={
                "company": COMPANY_A,
                "account": acc.account,
                "phone": PHONE,
                "bill_ids": [b.bill_id for b in chosen],
                "installments": 3,
                "reason": "دخل محدود",
            },
        )
    assert status == 201 and filed["status"] == "received" and filed["phone"] == "09******56"
    ticket = filed["ticket"]
    page = await decide(
        web, "clerk-a", ticket, outcome="approved", count="3", first_due="2027-01-31", note="موافق"
    )
    assert "موافق عليه" in page
    seen = await track(web, ticket)
    assert seen["status"] == "approved"
    plan = seen["decision"]["plan"]
    assert [p["due_date"] for p in plan] == ["2027-01-31", "2027-02-28", "2027-03-31"]
    assert sum(p["amount"] for p in plan) == total and all(
        isinstance(p["amount"], int) for p in plan
    )
    assert [h["status"] for h in seen["history"]] == ["received", "approved"]


async def test_correction_whole_life_through_the_pages(web: Web) -> None:
    acc = open_account(ACCOUNTS_A, 1)
    bill = acc.bills[-1]
    async with client() as s:
        async with s.get(
            f"{web.url}/correction", params={"company": COMPANY_A, "account": acc.account}
        ) as r:
            page = await r.text()
        assert bill.bill_id in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        async with s.post(
            f"{web.url}/correction",
            data={
                "csrf": csrf,
                "company": COMPANY_A,
                "account": acc.account,
                "bill_ids": bill.bill_id,
                "phone": PHONE,
                "reason": "wrong_reading",
                "reading": "4512",
                "description": "القراءة خاطئة",
            },
        ) as r:
            filed = await r.text()
        assert r.status == 201, filed
        ticket = re.search(r'id="ticket" dir="ltr">([A-Z0-9-]+)<', filed).group(1)  # type: ignore[union-attr]
    await decide(
        web, "clerk-a", ticket, outcome="corrected", new_amount="6,500.50", note="أعيدت القراءة"
    )
    seen = await track(web, ticket)
    assert seen["status"] == "corrected" and seen["decision"]["new_amount"] == 650_050
    # The citizen's tracking page shows the decision in Arabic.
    async with client() as s:
        csrf = await csrf_of(s, f"{web.url}/track")
        async with s.post(
            f"{web.url}/track", data={"csrf": csrf, "ticket": ticket, "phone": PHONE}
        ) as r:
            page = await r.text()
        assert "تم التصحيح" in page and Amount(650_050).format() in page
        # The wrong phone is "not found", exactly like an unknown ticket.
        async with s.post(
            f"{web.url}/track", data={"csrf": csrf, "ticket": ticket, "phone": "0999999999"}
        ) as r:
            assert r.status == 404


async def test_service_complaint_whole_life_with_comments_and_status(web: Web) -> None:
    async with client() as s:
        status, filed, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/complaints",
            json={
                "kind": "service",
                "company": COMPANY_B,
                "account": "0300000001",
                "phone": PHONE,
                "category": "supply",
                "description": "انقطاع متكرر",
            },
        )
    assert status == 201
    ticket = filed["ticket"]
    # Company B's turnaround for service complaints is 5 working days (configuration).
    filed_at = datetime.fromisoformat(filed["filed_at"])
    assert datetime.fromisoformat(filed["due_at"]) - filed_at <= timedelta(days=9)
    async with client() as s:
        csrf = await login(s, web, "clerk-b")
        for action, form in [
            ("status", {"status": "in_review", "note": ""}),
            ("comment", {"note": "الفريق الفني في الطريق"}),
            ("comment", {"note": "internal: transformer", "internal": "1"}),
            ("status", {"status": "waiting_citizen", "note": "هل عادت الكهرباء؟"}),
            ("status", {"status": "in_review", "note": ""}),
            ("decide", {"outcome": "resolved", "note": "تم إصلاح المحولة"}),
        ]:
            async with s.post(
                f"{web.url}/desk/requests/{ticket}/{action}",
                data={"csrf": csrf, **form},
                allow_redirects=False,
            ) as r:
                assert r.status == 303, (action, await r.text())
    seen = await track(web, ticket)
    assert [h["status"] for h in seen["history"]] == [
        "received",
        "in_review",
        "in_review",
        "waiting_citizen",
        "in_review",
        "resolved",
    ]
    assert all("internal" not in h["note"] for h in seen["history"])


async def _posted_payment(web: Web, account: str, bill_id: str, amount: int, rrn: str) -> str:
    """A payment the hub made: posted at the biller (its real REST API) and in the journal."""
    now = datetime.now(UTC)
    rest = RestConnector(
        COMPANY_A, RestSettings(web.biller_a.url, TOKEN), max_concurrency=2, call_timeout=2.0
    )
    try:
        order = PaymentOrder(
            f"P-{rrn}", account, bill_id, amount, now.date(), "600001", rrn, "6013", now
        )
        receipt = await rest.post_payment(order)
    finally:
        await rest.close()
    journal = build_journal(web.config.journal)
    await journal.open()
    try:
        rec = PaymentRecord(
            payment_id=f"P-{rrn}",
            key=PaymentKey("600001", rrn, now.strftime("%m%d")),
            settlement_date=now.date(),
            biller=COMPANY_A,
            account=account,
            bill_id=bill_id,
            amount=amount,
            currency="760",
            channel="6013",
            forwarder="600002",
            content="x",
            received_at=now,
        )
        await journal.journal.insert_payment(rec)
        rec.state, rec.response_code, rec.receipt, rec.answered_at = (
            PaymentState.APPROVED,
            "00",
            receipt,
            now,
        )
        await journal.journal.finish_payment(rec)
    finally:
        await journal.close()
    return receipt


async def test_paid_but_shown_as_due_is_answered_with_the_receipt_at_once(web: Web) -> None:
    acc = open_account(ACCOUNTS_A, 2)
    bill = acc.bills[0]
    receipt = await _posted_payment(web, acc.account, bill.bill_id, bill.amount, "633012000777")
    async with client() as s:
        status, filed, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/complaints",
            json={
                "kind": "transaction",
                "company": COMPANY_A,
                "account": acc.account,
                "phone": PHONE,
                "reference": "633012000777",
                "paid_on": datetime.now(UTC).date().isoformat(),
                "disposition": "paid_still_due",
            },
        )
    assert status == 201, filed
    assert filed["finding"] == {
        "outcome": "posted",
        "receipt": receipt,
        "amount": bill.amount,
        "biller_status": "posted",
    }
    assert filed["status"] == "resolved" and receipt in filed["decision"]["note"]
    # A complaint about a payment the hub never received says so, and waits for the clerk.
    async with client() as s:
        status, other, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/complaints",
            json={
                "kind": "transaction",
                "company": COMPANY_A,
                "account": acc.account,
                "phone": PHONE,
                "reference": "633012000999",
                "paid_on": datetime.now(UTC).date().isoformat(),
                "disposition": "paid_twice",
            },
        )
    assert other["finding"]["outcome"] == "not_found" and other["status"] == "received"
    # The clerk starts from that fact and answers; the citizen sees the answer.
    page = await decide(
        web, "clerk-a", other["ticket"], outcome="resolved", note="لم تصل دفعة ثانية"
    )
    assert "لم نجد هذه الدفعة" in page
    seen = await track(web, other["ticket"])
    assert seen["status"] == "resolved" and seen["decision"]["note"] == "لم تصل دفعة ثانية"
    # The citizen who paid can see the payment with a one-time code sent to the phone on file.
    async with client() as s:
        status, body, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/payments/code",
            json={"company": COMPANY_A, "account": acc.account, "phone": PHONE},
        )
        assert status == 202
        sent = len(web.codes())
        # A phone not on file gets the same answer and no code.
        status2, body2, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/payments/code",
            json={"company": COMPANY_A, "account": acc.account, "phone": "0933000000"},
        )
        assert (status2, body2) == (status, body) and len(web.codes()) == sent
        bad, err, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/payments",
            json={
                "company": COMPANY_A,
                "account": acc.account,
                "phone": PHONE,
                "code": "000000" if web.last_code() != "000000" else "111111",
            },
        )
        assert bad == 422 and err["error"]["field"] == "code"
        ok, lines, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/payments",
            json={
                "company": COMPANY_A,
                "account": acc.account,
                "phone": PHONE,
                "code": web.last_code(),
            },
        )
        assert ok == 200 and [(p["amount"], p["receipt"], p["state"]) for p in lines] == [
            (bill.amount, receipt, "approved")
        ]
        again, _, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/payments",
            json={
                "company": COMPANY_A,
                "account": acc.account,
                "phone": PHONE,
                "code": web.last_code(),
            },
        )
        assert again == 422  # a code works once


async def test_api_errors_have_one_shape_and_openapi_is_served(web: Web) -> None:
    async with client() as s:
        status, body, _ = await api(
            s, "POST", f"{web.url}/api/v1/installments", json={"company": COMPANY_A}
        )
        assert status == 422 and body["error"]["code"] == "invalid_field" and body["error"]["field"]
        status, body, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/complaints",
            json={
                "kind": "service",
                "company": COMPANY_A,
                "account": "0100000001",
                "phone": "12",
                "category": "meter",
                "description": "x",
            },
        )
        assert (
            status == 422 and body["error"]["field"] == "phone" and body["error"]["message"]["en"]
        )
        status, body, _ = await api(s, "GET", f"{web.url}/api/v1/nothing-here")
        assert status == 404 and set(body["error"]) == {"code", "message", "field"}
        status, doc, _ = await api(s, "GET", f"{web.url}/api/v1/openapi.json")
    assert status == 200
    assert {
        "/api/v1/bills",
        "/api/v1/complaints",
        "/api/v1/installments",
        "/api/v1/corrections",
        "/api/v1/track",
    } <= set(doc["paths"])
    assert not any(p.startswith("/desk") or p == "/inquiry" for p in doc["paths"])
    assert "ErrorOut" in doc["components"]["schemas"]


async def test_requests_live_on_postgresql_too(tmp_path: Path, pki: Pki, pg_dsn: str) -> None:
    async with running_web(tmp_path, pki.directory, dsn=pg_dsn) as web:
        acc = open_account(ACCOUNTS_A)
        async with client() as s:
            status, filed, _ = await api(
                s,
                "POST",
                f"{web.url}/api/v1/installments",
                json={
                    "company": COMPANY_A,
                    "account": acc.account,
                    "phone": PHONE,
                    "bill_ids": [acc.bills[0].bill_id],
                    "installments": 2,
                    "reason": "x",
                },
            )
        assert status == 201
        await decide(web, "clerk-a", filed["ticket"], outcome="refused", note="لا يوجد ما يبرر")
        seen = await track(web, filed["ticket"])
        assert seen["status"] == "refused" and seen["decision"]["note"] == "لا يوجد ما يبرر"


async def test_batch_inquiry_answers_from_the_journal_bills_store(web: Web) -> None:
    """The hub loads a bills file into the journal's store; the web service answers
    from the same store (and "try again later" while no journal exists)."""
    accounts = generate_accounts("02", 10, 2, today=datetime.now(UTC).date())
    acc = next(a for a in accounts if a.status == "active" and a.bills)
    async with client() as s:
        status, body, _ = await api(
            s, "GET", f"{web.url}/api/v1/bills?company={BATCH}&account={acc.account}"
        )
    assert status == 503 and body["error"]["code"] == "biller_unavailable"
    batch = next(b for b in web.config.billers if b.code == BATCH)
    assert batch.batch is not None
    batch.batch.inbox.mkdir(parents=True, exist_ok=True)
    write_bills_file(batch.batch.inbox, BATCH, accounts, day=datetime.now(UTC).date())
    journal = build_journal(web.config.journal)
    await journal.open()
    try:
        hub_side = BatchConnector(
            BATCH, batch.batch, journal.bills, today=lambda: datetime.now(UTC).date()
        )
        await hub_side.start(journal.journal)
        await hub_side.poll()
        await hub_side.close()
    finally:
        await journal.close()
    async with client() as s:
        status, body, _ = await api(
            s, "GET", f"{web.url}/api/v1/bills?company={BATCH}&account={acc.account}"
        )
    assert status == 200, body
    assert [b["bill_id"] for b in body["bills"]] == [b.bill_id for b in acc.bills]
    assert body["total_due"] == acc.total_due


async def test_database_biller_inquiry_through_the_web(
    tmp_path: Path, pki: Pki, mariadb_dsn: str
) -> None:
    """A company whose billing system is a database the hub reaches directly: the web
    service asks it through the same connector as the switch path."""
    accounts = generate_accounts("03", 12, 5, today=datetime.now(UTC).date())
    await install(mariadb_dsn)
    await load_bills(mariadb_dsn, bills_table_rows(accounts))
    acc = next(a for a in accounts if a.status == "active" and a.bills)
    more = f"""
[[billers]]
code = "100009"
name = "كهرباء حلب"
kind = "database"
budget_s = 2.0
database = {{ dsn = "{mariadb_dsn}" }}
"""
    async with running_web(tmp_path, pki.directory, more_billers=more) as web, client() as s:
        status, body, _ = await api(
            s, "GET", f"{web.url}/api/v1/bills?company=100009&account={acc.account}"
        )
        assert status == 200, body
        assert [b["bill_id"] for b in body["bills"]] == [b.bill_id for b in acc.bills]
        assert body["total_due"] == acc.total_due
