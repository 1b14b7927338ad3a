"""The companies' desk and the abuse defences, over real sockets.

A clerk of company A is refused on every route that names a request or a company of
B; a logged-out user and a forged CSRF token are refused and change nothing; the audit
trail has every action; rate limits hold under a burst (the limiter's clock is the one
fake: a minute is not waited for); bad uploads are refused and nothing is kept."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import Pki
from tests.webharness import (
    ACCOUNTS_A,
    COMPANY_A,
    COMPANY_B,
    Web,
    api,
    client,
    csrf_of,
    login,
    open_account,
    running_web,
)

from billhub.requests.ports import Query
from billhub.web.ratelimit import RateLimiter

PHONE = "0944123456"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
ACTIONS = {
    "status": {"status": "in_review"},
    "comment": {"note": "x"},
    "assign": {"assignee": "clerk-a"},
    "decide": {"outcome": "resolved", "note": "x"},
}


@pytest.fixture
async def web(tmp_path: Path, pki: Pki) -> AsyncIterator[Web]:
    async with running_web(tmp_path, pki.directory) as w:
        yield w


async def file_complaint(web: Web, company: str, *, photo: bytes | None = None) -> str:
    async with client() as s:
        csrf = await csrf_of(s, f"{web.url}/complaint")
        form = {
            "csrf": csrf,
            "kind": "service_complaint",
            "company": company,
            "account": "0100000042",
            "phone": PHONE,
            "category": "meter",
            "description": "العداد معطل",
        }
        if photo is None:
            async with s.post(f"{web.url}/complaint", data=form) as r:
                page = await r.text()
                assert r.status == 201, page
        else:
            import aiohttp

            data = aiohttp.FormData()
            for k, v in form.items():
                data.add_field(k, v)
            data.add_field("photo", photo, filename="meter.png", content_type="image/png")
            async with s.post(f"{web.url}/complaint", data=data) as r:
                page = await r.text()
                assert r.status == 201, page
    return re.search(r'id="ticket" dir="ltr">([A-Z0-9-]+)<', page).group(1)  # type: ignore[union-attr]


async def test_clerk_of_a_is_refused_every_route_of_b(web: Web) -> None:
    mine = await file_complaint(web, COMPANY_A)
    theirs = await file_complaint(web, COMPANY_B, photo=PNG)
    store = web.service.store
    att = (await store.attachments(theirs))[0].attachment_id
    before = await store.get(theirs)
    async with client() as s:
        csrf = await login(s, web, "clerk-a")
        async with s.get(f"{web.url}/desk") as r:
            queue = await r.text()
        assert mine in queue and theirs not in queue
        async with s.get(f"{web.url}/desk", params={"company": COMPANY_B}) as r:
            assert (
                theirs not in await r.text()
            )  # the clerk's queue is their company's, whatever is asked
        for url in (
            f"/desk/requests/{theirs}",
            f"/desk/requests/{theirs}/attachments/{att}",
            f"/desk/export?company={COMPANY_B}",
            "/desk/report",
            "/desk/report.csv",
        ):
            async with s.get(web.url + url) as r:
                assert r.status == 403, url
                text = await r.text()
                assert "0100000042" not in text and "العداد معطل" not in text
        for action, form in ACTIONS.items():
            async with s.post(
                f"{web.url}/desk/requests/{theirs}/{action}",
                data={"csrf": csrf, **form},
                allow_redirects=False,
            ) as r:
                assert r.status == 403, action
        # The clerk's own company's routes work.
        async with s.get(f"{web.url}/desk/requests/{mine}") as r:
            assert r.status == 200
        async with s.get(f"{web.url}/desk/export", params={"company": COMPANY_A}) as r:
            assert r.status == 200
    assert await store.get(theirs) == before
    assert [a.action for a in await store.audit(ticket=theirs)] == ["filed"]

    # The ministry reads company B's request and its photo, and changes nothing.
    async with client() as s:
        csrf = await login(s, web, "ministry")
        async with s.get(f"{web.url}/desk") as r:
            page = await r.text()
        assert mine in page and theirs in page
        async with s.get(f"{web.url}/desk/requests/{theirs}/attachments/{att}") as r:
            assert r.status == 200 and await r.read() == PNG
            assert r.headers["content-disposition"].startswith("attachment")
        for action, form in ACTIONS.items():
            async with s.post(
                f"{web.url}/desk/requests/{theirs}/{action}",
                data={"csrf": csrf, **form},
                allow_redirects=False,
            ) as r:
                assert r.status == 403, action


async def test_logged_out_and_forged_csrf_are_refused(web: Web) -> None:
    ticket = await file_complaint(web, COMPANY_A)
    store = web.service.store
    before = await store.get(ticket)
    async with client() as s:
        for url in (
            "/desk",
            f"/desk/requests/{ticket}",
            f"/desk/export?company={COMPANY_A}",
            "/desk/report",
        ):
            async with s.get(web.url + url, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/desk/login", url
        for action, form in ACTIONS.items():
            async with s.post(
                f"{web.url}/desk/requests/{ticket}/{action}", data=form, allow_redirects=False
            ) as r:
                assert r.status == 303, action
        csrf = await login(s, web, "clerk-a")
        for forged in ("", "x" * 43, csrf[:-1] + ("A" if csrf[-1] != "A" else "B")):
            for action, form in ACTIONS.items():
                async with s.post(
                    f"{web.url}/desk/requests/{ticket}/{action}",
                    data={"csrf": forged, **form},
                    allow_redirects=False,
                ) as r:
                    assert r.status == 403, (action, forged)
        # A public form without its cookie's token is refused too.
        async with (
            client() as other,
            other.post(
                f"{web.url}/track", data={"csrf": "guess", "ticket": ticket, "phone": PHONE}
            ) as r,
        ):
            assert r.status == 403
    assert await store.get(ticket) == before
    # A session cookie is HttpOnly and SameSite=Strict.
    async with client() as s:
        token = await csrf_of(s, f"{web.url}/desk/login")
        async with s.post(
            f"{web.url}/desk/login",
            data={"csrf": token, "username": "clerk-a", "password": web.passwords["clerk-a"]},
            allow_redirects=False,
        ) as r:
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/desk" in cookie
        # A wrong password is refused the same way as an unknown user.
        async with (
            s.post(
                f"{web.url}/desk/login",
                data={"csrf": token, "username": "clerk-a", "password": "wrong"},
            ) as r1,
            s.post(
                f"{web.url}/desk/login", data={"csrf": token, "username": "nobody", "password": "x"}
            ) as r2,
        ):
            assert r1.status == r2.status == 401


async def test_audit_trail_has_every_action_and_export_has_the_decisions(web: Web) -> None:
    acc = open_account(ACCOUNTS_A)
    async with client() as s:
        _, filed, _ = await api(
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
    ticket = filed["ticket"]
    steps = [
        ("clerk-a", "assign", {"assignee": "super-a"}),
        ("clerk-a", "status", {"status": "in_review"}),
        ("super-a", "comment", {"note": "ok", "internal": "1"}),
        (
            "super-a",
            "decide",
            {"outcome": "approved", "count": "2", "first_due": "2027-02-01", "note": "موافق"},
        ),
        ("super-a", "status", {"status": "closed"}),
    ]
    for user, action, form in steps:
        async with client() as s:
            csrf = await login(s, web, user)
            async with s.post(
                f"{web.url}/desk/requests/{ticket}/{action}",
                data={"csrf": csrf, **form},
                allow_redirects=False,
            ) as r:
                assert r.status == 303, (action, await r.text())
    trail = await web.service.store.audit(ticket=ticket)
    assert [(a.actor, a.action) for a in trail] == [("citizen", "filed")] + [
        (u, a) for u, a, _ in steps
    ]
    assert all(a.company == COMPANY_A for a in trail)
    assert [a.at for a in trail] == sorted(a.at for a in trail)
    # The desk page shows the trail.
    async with client() as s:
        await login(s, web, "clerk-a")
        async with s.get(f"{web.url}/desk/requests/{ticket}") as r:
            page = await r.text()
        assert page.count("<td>decide</td>") == 1 and "super-a" in page
        async with s.get(f"{web.url}/desk/export", params={"company": COMPANY_A}) as r:
            body = await r.text()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [(x["ticket"], x["installment"], x["due_date"]) for x in rows] == [
        (ticket, "1", "2027-02-01"),
        (ticket, "2", "2027-03-01"),
    ]
    assert sum(int(x["amount"]) for x in rows) == acc.bills[0].amount
    day = datetime.now(UTC).strftime("%Y%m%d")
    assert (web.config.web.exports / f"requests-{COMPANY_A}-{day}.csv").read_text("utf-8") == body  # type: ignore[operator]


async def test_rate_limit_holds_under_a_burst_then_lets_the_next_through(web: Web) -> None:
    now = [1000.0]
    limits = web.service.services.limits
    limits.client = RateLimiter(5, 60.0, lambda: now[0])
    limits.account = RateLimiter(3, 60.0, lambda: now[0])
    acc = open_account(ACCOUNTS_A)
    url = f"{web.url}/api/v1/bills?company={COMPANY_A}&account="
    async with client() as s:
        # Per account: 3 lookups of one account, then 429 with a retry time.
        codes = [(await api(s, "GET", url + acc.account))[0] for _ in range(3)]
        assert codes == [200, 200, 200]
        status, body, headers = await api(s, "GET", url + acc.account)
        assert (
            status == 429
            and body["error"]["code"] == "rate_limited"
            and int(headers["Retry-After"]) == 60
        )
        # Per client: unknown accounts count as much as known ones (no free enumeration).
        st = [(await api(s, "GET", url + f"01999999{i:02d}"))[0] for i in range(3)]
        assert st == [404, 429, 429]
        now[0] += 61
        assert (await api(s, "GET", url + acc.account))[0] == 200
        # The page answers 429 too, with Retry-After.
        for _ in range(5):
            async with s.get(
                f"{web.url}/inquiry", params={"company": COMPANY_A, "account": "0199999998"}
            ) as r:
                last = r
        assert last.status == 429 and "Retry-After" in last.headers


async def test_bad_uploads_are_refused_and_nothing_is_kept(web: Web) -> None:
    import aiohttp

    uploads = web.config.web.uploads
    assert uploads is not None
    cases = [
        ("a real PNG, but too large", PNG + b"\x00" * 70_000, "image/png", 413),
        ("text named .png", b"<?php echo 1; ?>" * 10, "image/png", 415),
        ("a GIF", b"GIF89a" + b"\x00" * 100, "image/gif", 415),
        ("far too large", b"\xff\xd8\xff" + b"\x00" * 300_000, "image/jpeg", 413),
    ]
    for label, data, ctype, want in cases:
        async with client() as s:
            csrf = await csrf_of(s, f"{web.url}/complaint")
            form = aiohttp.FormData()
            for k, v in {
                "csrf": csrf,
                "kind": "service_complaint",
                "company": COMPANY_A,
                "account": "0100000042",
                "phone": PHONE,
                "category": "meter",
                "description": "x",
            }.items():
                form.add_field(k, v)
            form.add_field("photo", data, filename="meter.png", content_type=ctype)
            async with s.post(f"{web.url}/complaint", data=form) as r:
                assert r.status == want, label
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert await web.service.store.find(Query()) == []
    # Through the API, base64.
    import base64

    async with client() as s:
        status, body, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/complaints",
            json={
                "kind": "service",
                "company": COMPANY_A,
                "account": "0100000042",
                "phone": PHONE,
                "category": "meter",
                "description": "x",
                "photo_base64": base64.b64encode(b"MZ\x90\x00" * 50).decode(),
            },
        )
    assert status == 415 and body["error"]["code"] == "upload_type"
    assert await web.service.store.find(Query()) == []
    # A good photo is kept outside any web root, named by an id with no extension.
    ticket = await file_complaint(web, COMPANY_A, photo=PNG)
    (kept,) = list(uploads.iterdir())
    assert kept.read_bytes() == PNG and "." not in kept.name
    async with client() as s, s.get(f"{web.url}/uploads/{kept.name}") as r:
        assert r.status == 404
    assert (await web.service.store.attachments(ticket))[0].content_type == "image/png"


async def test_security_headers_on_every_answer(web: Web) -> None:
    async with client() as s:
        for url in (
            "/",
            "/inquiry",
            "/desk/login",
            "/api/v1/companies",
            "/api/v1/openapi.json",
            "/nothing",
        ):
            async with s.get(web.url + url) as r:
                h = r.headers
                assert "frame-ancestors 'none'" in h["Content-Security-Policy"], url
                assert (
                    "script-src" not in h["Content-Security-Policy"]
                )  # default-src 'none': no script at all
                assert (
                    h["Referrer-Policy"] == "no-referrer"
                    and h["X-Content-Type-Options"] == "nosniff"
                )
                assert h["X-Frame-Options"] == "DENY"


async def test_overdue_requests_are_escalated_and_counted(web: Web) -> None:
    ticket = await file_complaint(web, COMPANY_B)  # B: 5 working days
    services = web.service.services
    services.now = lambda: datetime.now(UTC) + timedelta(days=30)
    await web.service.refresh_once()
    await web.service.refresh_once()  # once only
    req = await web.service.store.get(ticket)
    assert req is not None and req.escalated_at is not None
    assert [c.action for c in req.history].count("escalated") == 1
    async with client() as s, s.get(f"{web.admin_url}/metrics") as r:
        text = await r.text()
    assert f'billhub_web_overdue_requests{{company="{COMPANY_B}"}} 1.0' in text
    assert f'billhub_web_overdue_requests{{company="{COMPANY_A}"}} 0.0' in text
    assert "billhub_web_escalations_total 1.0" in text
    assert 'billhub_web_requests_total{method="POST",route="/complaint",status="201"} 1.0' in text
    # The queue marks it; the ministry's monthly report counts it as open and overdue.
    async with client() as s:
        await login(s, web, "ministry")
        async with s.get(f"{web.url}/desk") as r:
            page = await r.text()
        assert re.search(rf'<tr class="overdue" data-ticket="{ticket}">', page)
        month = datetime.now(UTC).strftime("%Y-%m")
        async with s.get(f"{web.url}/desk/report.csv", params={"month": month}) as r:
            rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert rows == [
        {
            "month": month,
            "company": COMPANY_B,
            "type": "service_complaint",
            "received": "1",
            "decided_in_time": "0",
            "decided_late": "0",
            "open_overdue": "1",
        }
    ]


async def test_disabled_staff_lose_their_session(web: Web) -> None:
    from billhub.app.web import users_disable

    async with client() as s:
        await login(s, web, "clerk-a")
        async with s.get(f"{web.url}/desk", allow_redirects=False) as r:
            assert r.status == 200
        await users_disable(web.config, "clerk-a")
        async with s.get(f"{web.url}/desk", allow_redirects=False) as r:
            assert r.status == 303
    actions = [a.action for a in await web.service.store.audit()]
    assert "staff_disabled" in actions and "login" in actions


async def test_a_port_in_use_is_one_error_naming_the_key(web: Web) -> None:
    from dataclasses import replace

    from billhub.app.web import build_web
    from billhub.errors import ConfigError

    busy = replace(web.config, web=replace(web.config.web, port=web.service.port))
    with pytest.raises(ConfigError) as e:
        await build_web(busy).start()
    assert e.value.key == "web.port" and "cannot listen on 127.0.0.1:" in str(e.value)
    # The running service is untouched.
    async with client() as s, s.get(f"{web.url}/healthz") as r:
        assert r.status == 200


async def test_decisions_are_handed_to_the_company_system_through_outages(web: Web) -> None:
    from billhub.simulator.rest_biller import Faults

    acc = open_account(ACCOUNTS_A)
    async with client() as s:
        _, plan_req, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/installments",
            json={
                "company": COMPANY_A,
                "account": acc.account,
                "phone": PHONE,
                "bill_ids": [acc.bills[0].bill_id, acc.bills[1].bill_id],
                "installments": 3,
                "reason": "x",
            },
        )
        _, corr_req, _ = await api(
            s,
            "POST",
            f"{web.url}/api/v1/corrections",
            json={
                "company": COMPANY_A,
                "account": acc.account,
                "phone": PHONE,
                "bill_id": acc.bills[2].bill_id,
                "reason": "tariff",
            },
        )
        csrf = await login(s, web, "clerk-a")
        for ticket, form in (
            (
                plan_req["ticket"],
                {"outcome": "approved", "count": "3", "first_due": "2027-01-10", "note": "ok"},
            ),
            (
                corr_req["ticket"],
                {"outcome": "corrected", "new_amount": "1000", "note": "tariff fixed"},
            ),
        ):
            async with s.post(
                f"{web.url}/desk/requests/{ticket}/decide",
                data={"csrf": csrf, **form},
                allow_redirects=False,
            ) as r:
                assert r.status == 303
    store = web.service.store
    # The company's system is down: the hand-over waits and is retried.
    web.biller_a.set_faults(Faults(fail_status=503))
    await web.service.refresh_once()
    pending = await store.handover(plan_req["ticket"])
    assert pending is not None and pending.state == "pending" and pending.attempts == 1
    assert web.biller_a.decisions_snapshot() == {}
    web.biller_a.set_faults(Faults())
    await web.service.refresh_once()  # not due yet: nothing is sent
    assert web.biller_a.decisions_snapshot() == {}
    later = datetime.now(UTC) + timedelta(minutes=5)
    web.service.services.now = lambda: later
    await web.service.refresh_once()
    got = web.biller_a.decisions_snapshot()
    plan = got[f"installment-plans/{plan_req['ticket']}"]
    assert plan["total"] == acc.bills[0].amount + acc.bills[1].amount
    assert sum(i["amount"] for i in plan["installments"]) == plan["total"]
    assert [i["due_date"] for i in plan["installments"]] == [
        "2027-01-10",
        "2027-02-10",
        "2027-03-10",
    ]
    corr = got[f"bill-corrections/{corr_req['ticket']}"]
    assert (corr["bill_id"], corr["old_amount"], corr["new_amount"]) == (
        acc.bills[2].bill_id,
        acc.bills[2].amount,
        100_000,
    )
    done = await store.handover(plan_req["ticket"])
    assert done is not None and done.state == "accepted" and done.reference == plan["reference"]
    trail = [(a.actor, a.action) for a in await store.audit(ticket=plan_req["ticket"])]
    assert trail[-1] == ("hub", "handover")
    async with client() as s:
        await login(s, web, "clerk-a")
        async with s.get(f"{web.url}/desk/requests/{plan_req['ticket']}") as r:
            page = await r.text()
    assert "تم الاستلام" in page and plan["reference"] in page
    # Nothing is sent twice.
    await web.service.refresh_once()
    assert web.biller_a.decisions_snapshot() == got
