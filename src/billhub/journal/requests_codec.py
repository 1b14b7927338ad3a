"""A citizen request as one JSON document (the ``body`` column) and back.

The indexed columns (company, status, due time...) are copies for queries; the
body is the request, history included. Amounts stay integers.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson

from billhub.journal.codec import parse_ts, ts
from billhub.requests.model import (
    Change,
    CitizenRequest,
    Decision,
    Details,
    Finding,
    Installment,
    RequestType,
    Status,
)


def _d(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _pd(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _t(value: str | None) -> datetime:
    parsed = parse_ts(value)
    assert parsed is not None
    return parsed


def _finding(f: Finding | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {
        "outcome": f.outcome,
        "payment_id": f.payment_id,
        "receipt": f.receipt,
        "amount": f.amount,
        "paid_at": ts(f.paid_at),
        "biller_status": f.biller_status,
        "rrn": f.rrn,
    }


def _parse_finding(d: dict[str, Any] | None) -> Finding | None:
    if d is None:
        return None
    return Finding(
        d["outcome"],
        d["payment_id"],
        d["receipt"],
        d["amount"],
        parse_ts(d["paid_at"]),
        d["biller_status"],
        d.get("rrn"),
    )


def _plan(plan: tuple[Installment, ...]) -> list[dict[str, Any]]:
    return [{"n": i.number, "due": i.due_date.isoformat(), "amount": i.amount} for i in plan]


def _parse_plan(items: list[dict[str, Any]]) -> tuple[Installment, ...]:
    return tuple(Installment(i["n"], date.fromisoformat(i["due"]), int(i["amount"])) for i in items)


def dumps(r: CitizenRequest) -> str:
    d = r.details
    body: dict[str, Any] = {
        "ticket": r.ticket,
        "type": r.type.value,
        "company": r.company,
        "account": r.account,
        "phone": r.phone,
        "description": r.description,
        "filed_at": ts(r.filed_at),
        "due_at": ts(r.due_at),
        "status": r.status.value,
        "assignee": r.assignee,
        "escalated_at": ts(r.escalated_at),
        "attachments": list(r.attachments),
        "details": {
            "reference": d.reference,
            "paid_on": _d(d.paid_on),
            "disposition": d.disposition,
            "finding": _finding(d.finding),
            "category": d.category,
            "bill_ids": list(d.bill_ids),
            "total": d.total,
            "installments": d.installments,
            "reason": d.reason,
            "reading": d.reading,
        },
        "decision": None
        if r.decision is None
        else {
            "status": r.decision.status.value,
            "note": r.decision.note,
            "by": r.decision.by,
            "at": ts(r.decision.at),
            "plan": _plan(r.decision.plan),
            "new_amount": r.decision.new_amount,
        },
        "history": [
            {
                "at": ts(c.at),
                "actor": c.actor,
                "action": c.action,
                "status": c.status.value,
                "note": c.note,
                "public": c.public,
            }
            for c in r.history
        ],
    }
    return orjson.dumps(body).decode()


def loads(text: str, version: int) -> CitizenRequest:
    b = orjson.loads(text)
    d = b["details"]
    dec = b["decision"]
    return CitizenRequest(
        ticket=b["ticket"],
        type=RequestType(b["type"]),
        company=b["company"],
        account=b["account"],
        phone=b["phone"],
        description=b["description"],
        filed_at=_t(b["filed_at"]),
        due_at=_t(b["due_at"]),
        status=Status(b["status"]),
        details=Details(
            reference=d["reference"],
            paid_on=_pd(d["paid_on"]),
            disposition=d["disposition"],
            finding=_parse_finding(d["finding"]),
            category=d["category"],
            bill_ids=tuple(d["bill_ids"]),
            total=d["total"],
            installments=d["installments"],
            reason=d["reason"],
            reading=d["reading"],
        ),
        history=tuple(
            Change(
                _t(c["at"]), c["actor"], c["action"], Status(c["status"]), c["note"], c["public"]
            )
            for c in b["history"]
        ),
        assignee=b["assignee"],
        escalated_at=parse_ts(b["escalated_at"]),
        decision=None
        if dec is None
        else Decision(
            Status(dec["status"]),
            dec["note"],
            dec["by"],
            _t(dec["at"]),
            _parse_plan(dec["plan"]),
            dec["new_amount"],
        ),
        attachments=tuple(b["attachments"]),
        version=version,
    )
