"""The citizen requests' store (:class:`~billhub.requests.ports.RequestStore`) in SQL.

One implementation for SQLite and PostgreSQL through a
:class:`~billhub.journal.settlement_sql.SqlRunner`, on its own engine over the
journal's database: its own writer (the web service is another process than the
hub), its own versions (:mod:`billhub.journal.requests_schema`). A change to a
request and its audit entry commit together, so the trail cannot miss an action
that happened. The payment reads go to the journal's own tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Protocol

from billhub.errors import JournalError
from billhub.journal import requests_codec
from billhub.journal.codec import parse_ts, ts
from billhub.journal.settlement_sql import SqlRunner, Statement
from billhub.requests.model import CitizenRequest, Finding, Status
from billhub.requests.ports import (
    Attachment,
    AuditEntry,
    Conflict,
    Handover,
    PaymentLine,
    Query,
    StaffUser,
)

MAX_CODE_TRIES = 5
_OPEN = (Status.RECEIVED.value, Status.IN_REVIEW.value, Status.WAITING_CITIZEN.value)


class _Engine(SqlRunner, Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


def _audit_statement(a: AuditEntry) -> Statement:
    return (
        "INSERT INTO audit (at, actor, company, action, ticket, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (ts(a.at), a.actor, a.company, a.action, a.ticket, a.detail),
    )


def _columns(r: CitizenRequest) -> tuple[Any, ...]:
    return (
        r.company,
        r.type.value,
        r.status.value,
        r.account,
        r.phone,
        ts(r.filed_at),
        ts(r.due_at),
        ts(r.decision.at) if r.decision else None,
        ts(r.escalated_at),
        r.assignee,
    )


class SqlRequestStore:
    def __init__(self, engine: _Engine) -> None:
        self.db = engine

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    # -- requests ---------------------------------------------------------------------

    async def add(self, req: CitizenRequest, audit: AuditEntry) -> None:
        if await self.get(req.ticket) is not None:
            raise Conflict(req.ticket)
        await self.db.run(
            [
                (
                    "INSERT INTO citizen_requests (company, type, status, account, phone, "
                    "filed_at, due_at, decided_at, escalated_at, assignee, ticket, version, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                    (*_columns(req), req.ticket, requests_codec.dumps(req)),
                ),
                _audit_statement(audit),
            ]
        )

    async def save(
        self, req: CitizenRequest, audit: AuditEntry, handover: Handover | None = None
    ) -> CitizenRequest:
        statements: list[Statement] = [
            (
                "UPDATE citizen_requests SET company=?, type=?, status=?, account=?, phone=?, "
                "filed_at=?, due_at=?, decided_at=?, escalated_at=?, assignee=?, "
                "version=version+1, body=? WHERE ticket=? AND version=?",
                (*_columns(req), requests_codec.dumps(req), req.ticket, req.version),
            ),
            _audit_statement(audit),
        ]
        if handover is not None:
            statements.append(
                (
                    "INSERT INTO handovers (ticket, company, state, attempts, next_at, detail) "
                    "VALUES (?, ?, ?, 0, ?, '')",
                    (handover.ticket, handover.company, handover.state, ts(handover.next_at)),
                )
            )
        changed = await self.db.run(statements, guarded=True)
        if changed[0] != 1:
            raise Conflict(req.ticket)
        fresh = await self.get(req.ticket)
        assert fresh is not None
        return fresh

    async def get(self, ticket: str) -> CitizenRequest | None:
        rows = await self.db.rows(
            "SELECT body, version FROM citizen_requests WHERE ticket=?", (ticket,)
        )
        return requests_codec.loads(rows[0][0], int(rows[0][1])) if rows else None

    async def find(self, query: Query) -> list[CitizenRequest]:
        where: list[str] = []
        params: list[Any] = []
        if query.company is not None:
            where.append("company=?")
            params.append(query.company)
        if query.account is not None:
            where.append("account=?")
            params.append(query.account)
        if query.type is not None:
            where.append("type=?")
            params.append(query.type.value)
        if query.open_only:
            where.append(f"status IN ({', '.join('?' for _ in _OPEN)})")
            params.extend(_OPEN)
        if query.filed_from is not None:
            where.append("filed_at>=?")
            params.append(ts(query.filed_from))
        if query.filed_before is not None:
            where.append("filed_at<?")
            params.append(ts(query.filed_before))
        sql = "SELECT body, version FROM citizen_requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.db.rows(sql + " ORDER BY due_at, ticket", tuple(params))
        return [requests_codec.loads(r[0], int(r[1])) for r in rows]

    # -- hand-overs ----------------------------------------------------------------------

    _HANDOVER = "SELECT ticket, company, state, attempts, next_at, reference, detail FROM handovers"

    @staticmethod
    def _handover(r: Any) -> Handover:
        at = parse_ts(r[4])
        assert at is not None
        return Handover(r[0], r[1], r[2], int(r[3]), at, r[5], r[6])

    async def due_handovers(self, now: datetime, limit: int = 50) -> list[Handover]:
        rows = await self.db.rows(
            self._HANDOVER + " WHERE state='pending' AND next_at<=? ORDER BY next_at LIMIT ?",
            (ts(now), limit),
        )
        return [self._handover(r) for r in rows]

    async def update_handover(self, h: Handover) -> None:
        await self.db.run(
            [
                (
                    "UPDATE handovers SET state=?, attempts=?, next_at=?, reference=?, detail=? "
                    "WHERE ticket=?",
                    (h.state, h.attempts, ts(h.next_at), h.reference, h.detail, h.ticket),
                )
            ]
        )

    async def handover(self, ticket: str) -> Handover | None:
        rows = await self.db.rows(self._HANDOVER + " WHERE ticket=?", (ticket,))
        return self._handover(rows[0]) if rows else None

    # -- audit --------------------------------------------------------------------------

    async def record(self, audit: AuditEntry) -> None:
        await self.db.run([_audit_statement(audit)])

    async def audit(
        self, *, company: str | None = None, ticket: str | None = None
    ) -> list[AuditEntry]:
        where, params = [], []
        if company is not None:
            where.append("company=?")
            params.append(company)
        if ticket is not None:
            where.append("ticket=?")
            params.append(ticket)
        sql = "SELECT at, actor, company, action, ticket, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.db.rows(sql + " ORDER BY audit_id", tuple(params))
        out = []
        for r in rows:
            at = parse_ts(r[0])
            assert at is not None
            out.append(AuditEntry(at, r[1], r[2], r[3], r[4], r[5]))
        return out

    # -- staff and sessions ---------------------------------------------------------------

    async def add_staff(self, user: StaffUser) -> None:
        if await self.staff(user.username) is not None:
            raise Conflict(user.username)
        await self.db.run(
            [
                (
                    "INSERT INTO staff (username, company, role, password_hash, disabled) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        user.username,
                        user.company,
                        user.role,
                        user.password_hash,
                        int(user.disabled),
                    ),
                )
            ]
        )

    async def set_staff_disabled(self, username: str, disabled: bool) -> bool:
        changed = await self.db.run(
            [("UPDATE staff SET disabled=? WHERE username=?", (int(disabled), username))]
        )
        if disabled:
            await self.db.run([("DELETE FROM staff_sessions WHERE username=?", (username,))])
        return changed[0] == 1

    async def staff(self, username: str) -> StaffUser | None:
        rows = await self.db.rows(
            "SELECT username, company, role, password_hash, disabled FROM staff WHERE username=?",
            (username,),
        )
        if not rows:
            return None
        r = rows[0]
        return StaffUser(r[0], r[1], r[2], r[3], bool(r[4]))

    async def all_staff(self) -> list[StaffUser]:
        rows = await self.db.rows(
            "SELECT username, company, role, password_hash, disabled FROM staff ORDER BY username"
        )
        return [StaffUser(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    async def add_session(
        self, token_hash: str, username: str, csrf: str, expires: datetime
    ) -> None:
        await self.db.run(
            [
                (
                    "INSERT INTO staff_sessions (token_hash, username, csrf, expires_at) "
                    "VALUES (?, ?, ?, ?)",
                    (token_hash, username, csrf, ts(expires)),
                )
            ]
        )

    async def session(self, token_hash: str, now: datetime) -> tuple[str, str] | None:
        rows = await self.db.rows(
            "SELECT s.username, s.csrf FROM staff_sessions s JOIN staff u "
            "ON u.username = s.username WHERE s.token_hash=? AND s.expires_at>? "
            "AND u.disabled=0",
            (token_hash, ts(now)),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def drop_session(self, token_hash: str) -> None:
        await self.db.run([("DELETE FROM staff_sessions WHERE token_hash=?", (token_hash,))])

    # -- one-time codes -------------------------------------------------------------------

    async def put_code(self, key: str, code_hash: str, expires: datetime) -> None:
        await self.db.run(
            [
                ("DELETE FROM access_codes WHERE code_key=?", (key,)),
                (
                    "INSERT INTO access_codes (code_key, code_hash, expires_at, tries) "
                    "VALUES (?, ?, ?, 0)",
                    (key, code_hash, ts(expires)),
                ),
            ]
        )

    async def take_code(self, key: str, code_hash: str, now: datetime) -> bool:
        taken = await self.db.run(
            [
                (
                    "DELETE FROM access_codes WHERE code_key=? AND code_hash=? AND expires_at>? "
                    "AND tries<?",
                    (key, code_hash, ts(now), MAX_CODE_TRIES),
                )
            ]
        )
        if taken[0] == 1:
            return True
        await self.db.run([("UPDATE access_codes SET tries=tries+1 WHERE code_key=?", (key,))])
        return False

    # -- attachments -----------------------------------------------------------------------

    async def add_attachment(self, att: Attachment) -> None:
        await self.db.run(
            [
                (
                    "INSERT INTO attachments (attachment_id, ticket, content_type, size, sha256) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (att.attachment_id, att.ticket, att.content_type, att.size, att.sha256),
                )
            ]
        )

    async def attachments(self, ticket: str) -> list[Attachment]:
        rows = await self.db.rows(
            "SELECT attachment_id, ticket, content_type, size, sha256 FROM attachments "
            "WHERE ticket=? ORDER BY attachment_id",
            (ticket,),
        )
        return [Attachment(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

    # -- the journal's payments ----------------------------------------------------------------

    async def _payments(self, sql: str, params: tuple[Any, ...]) -> Sequence[Any]:
        """Rows of the journal's payments; none while the hub has not created its journal."""
        try:
            return await self.db.rows(sql, params)
        except JournalError as exc:
            if "payments" in str(exc) and (
                "no such table" in str(exc) or "does not exist" in str(exc)
            ):
                return []
            raise

    async def recent_payments(self, company: str, account: str, limit: int) -> list[PaymentLine]:
        rows = await self._payments(
            "SELECT received_at, amount, channel, receipt, state, reversed FROM payments "
            "WHERE biller=? AND account=? AND state IN ('approved', 'uncertain') "
            "ORDER BY received_at DESC LIMIT ?",
            (company, account, limit),
        )
        out = []
        for r in rows:
            at = parse_ts(r[0])
            assert at is not None
            state = "reversed" if int(r[5]) else str(r[4])
            out.append(PaymentLine(at, int(r[1]), str(r[2]), r[3], state))
        return out

    async def find_payment(
        self, company: str, account: str, reference: str, paid_on: date | None
    ) -> Finding:
        rows = await self._payments(
            "SELECT payment_id, receipt, amount, received_at, state, reversed, rrn, "
            "settlement_date FROM payments WHERE biller=? AND account=? "
            "AND (rtrim(rrn)=? OR receipt=?) ORDER BY received_at DESC",
            (company, account, reference, reference),
        )
        if not rows:
            return Finding("not_found")
        if paid_on is not None:
            same_day = [
                r
                for r in rows
                if (parse_ts(r[3]) or datetime.min).date() == paid_on or r[7] == paid_on.isoformat()
            ]
            rows = same_day or rows
        r = rows[0]
        if int(r[5]):
            outcome = "reversed"
        elif r[4] == "approved":
            outcome = "posted"
        elif r[4] in ("uncertain", "posting"):
            outcome = "uncertain"
        else:
            outcome = "declined"
        return Finding(outcome, r[0], r[1], int(r[2]), parse_ts(r[3]), None, str(r[6]).rstrip())
