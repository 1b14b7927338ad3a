"""The citizen requests' store on both engines (SQLite file, PostgreSQL server), beside a
real journal in the same database: requests round-trip with their history, a stale
write is refused, the queue is by due time, the audit trail cannot be changed, codes
work once, and the journal's payments are what the citizen's inquiry shows."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from tests.test_journal_sqlite import approve, payment

from billhub.config import JournalConfig
from billhub.journal.factory import build_journal, build_request_store
from billhub.requests import states
from billhub.requests.filing import new_request
from billhub.requests.model import RequestType, Status
from billhub.requests.ports import AuditEntry, Conflict, Query, RequestStore, StaffUser
from billhub.requests.turnaround import TurnaroundPolicy

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def service(ticket: str, company: str = "500000", *, at: datetime = NOW):  # type: ignore[no-untyped-def]
    return new_request(
        RequestType.SERVICE_COMPLAINT,
        ticket=ticket,
        company=company,
        account="0100234567",
        phone="0944123456",
        description="العداد لا يعمل",
        now=at,
        policy=TurnaroundPolicy(),
        category="meter",
    )


def audit(action: str, ticket: str | None = None, company: str | None = "500000") -> AuditEntry:
    return AuditEntry(NOW, "clerk-a", company, action, ticket, "")


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_config(request: pytest.FixtureRequest, tmp_path: Path) -> JournalConfig:
    if request.param == "sqlite":
        return JournalConfig(kind="sqlite", path=tmp_path / "billhub.db")
    dsn = request.getfixturevalue("pg_dsn")
    return JournalConfig(kind="postgresql", dsn=dsn)


@pytest.fixture
async def store(journal_config: JournalConfig) -> AsyncIterator[RequestStore]:
    s = build_request_store(journal_config)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_requests_round_trip_and_stale_writes_are_refused(store: RequestStore) -> None:
    req = service("BH-AAAA-AAAA")
    await store.add(req, audit("filed", req.ticket))
    got = await store.get(req.ticket)
    assert got is not None and got.version == 1
    assert replace(got, version=0) == req
    with pytest.raises(Conflict):
        await store.add(req, audit("filed", req.ticket))
    moved = states.change_status(got, Status.IN_REVIEW, actor="clerk-a", now=NOW)
    saved = await store.save(moved, audit("status", req.ticket))
    assert saved.version == 2 and saved.status == Status.IN_REVIEW
    stale = states.comment(got, "late", actor="clerk-b", now=NOW, public=True)
    with pytest.raises(Conflict):
        await store.save(stale, audit("comment", req.ticket))
    # The refused write left no audit entry behind: the trail has what happened.
    assert [a.action for a in await store.audit(ticket=req.ticket)] == ["filed", "status"]


async def test_queue_is_by_due_time_per_company(store: RequestStore) -> None:
    late = service("BH-BBBB-BBBB", at=NOW)
    early = service("BH-CCCC-CCCC", at=NOW - timedelta(days=10))
    other = service("BH-DDDD-DDDD", company="600000")
    for r in (late, early, other):
        await store.add(r, audit("filed", r.ticket, r.company))
    queue = await store.find(Query(company="500000"))
    assert [r.ticket for r in queue] == ["BH-CCCC-CCCC", "BH-BBBB-BBBB"]
    assert len(await store.find(Query())) == 3
    decided = states.decide(queue[0], Status.RESOLVED, actor="c", now=NOW, note="fixed")
    await store.save(decided, audit("decided", decided.ticket))
    assert [r.ticket for r in await store.find(Query(company="500000", open_only=True))] == [
        "BH-BBBB-BBBB"
    ]


async def test_audit_trail_is_append_only_in_the_database(
    store: RequestStore, journal_config: JournalConfig
) -> None:
    await store.record(audit("login"))
    if journal_config.kind == "sqlite":
        assert journal_config.path is not None
        conn = sqlite3.connect(journal_config.path)
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit SET actor='someone else'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit")
        conn.close()
    else:
        assert journal_config.dsn is not None
        conn2 = await asyncpg.connect(journal_config.dsn)
        try:
            for sql in ("UPDATE audit SET actor='x'", "DELETE FROM audit", "TRUNCATE audit"):
                with pytest.raises(asyncpg.PostgresError, match="append-only"):
                    await conn2.execute(sql)
        finally:
            await conn2.close()
    assert [a.actor for a in await store.audit()] == ["clerk-a"]


async def test_staff_sessions_and_codes(store: RequestStore) -> None:
    await store.add_staff(StaffUser("clerk-a", "500000", "clerk", "$argon2id$x"))
    await store.add_session("h1", "clerk-a", "csrf1", NOW + timedelta(hours=1))
    assert await store.session("h1", NOW) == ("clerk-a", "csrf1")
    assert await store.session("h1", NOW + timedelta(hours=2)) is None
    assert await store.set_staff_disabled("clerk-a", True)
    assert await store.session("h1", NOW) is None
    assert not await store.set_staff_disabled("nobody", True)

    await store.put_code("k", "good", NOW + timedelta(minutes=5))
    assert not await store.take_code("k", "bad", NOW)
    assert await store.take_code("k", "good", NOW)
    assert not await store.take_code("k", "good", NOW)  # once
    await store.put_code("k", "good", NOW + timedelta(minutes=5))
    for _ in range(5):
        assert not await store.take_code("k", "bad", NOW)
    assert not await store.take_code("k", "good", NOW)  # too many wrong tries


async def test_journal_payments_as_the_citizen_sees_them(
    store: RequestStore, journal_config: JournalConfig
) -> None:
    assert await store.recent_payments("ELEC-DAM", "0100234567", 5) == []  # no journal yet
    journal = build_journal(journal_config)
    await journal.open()
    try:
        t0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
        p1 = payment("000000000001", received_at=t0)
        await journal.journal.insert_payment(p1)
        await journal.journal.finish_payment(approve(p1, at=t0))
        p2 = payment("000000000002", received_at=t0 + timedelta(hours=1))
        await journal.journal.insert_payment(p2)
    finally:
        await journal.close()
    lines = await store.recent_payments("ELEC-DAM", "0100234567", 5)
    assert [(line.amount, line.receipt, line.state) for line in lines] == [
        (125_000, "RCPT-2025-000001", "approved")
    ]
    found = await store.find_payment("ELEC-DAM", "0100234567", "000000000001", date(2025, 3, 14))
    assert found.outcome == "posted" and found.receipt == "RCPT-2025-000001"
    by_receipt = await store.find_payment("ELEC-DAM", "0100234567", "RCPT-2025-000001", None)
    assert by_receipt.payment_id == "P-000000000001"
    pending = await store.find_payment("ELEC-DAM", "0100234567", "000000000002", None)
    assert pending.outcome == "uncertain"
    assert (
        await store.find_payment("ELEC-DAM", "0999999999", "000000000001", None)
    ).outcome == "not_found"
