"""How a request moves: the transition table, decisions, comments, assignment, escalation.

Rules::

    received ─┬─> in_review ─┬─> waiting_citizen ─> in_review
              │              └─> decision
              ├─> waiting_citizen
              └─> decision            decision = approved | corrected | resolved | refused
    decision ─> closed                waiting_citizen ─> closed (no answer)

The decision a type can take: installment → approved, correction → corrected,
complaints → resolved; any type may be refused. A decision needs what makes it
actionable (a plan, a new amount, an answer or a reason). Every function returns a
new request with one more history entry; a refused change raises
:class:`~billhub.requests.model.RequestError` and changes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from billhub.requests.model import (
    Change,
    CitizenRequest,
    Decision,
    Installment,
    RequestError,
    RequestType,
    Status,
)
from billhub.requests.plans import check_plan

_DECISIONS = {Status.APPROVED, Status.CORRECTED, Status.RESOLVED, Status.REFUSED}

#: Moves staff make with a plain status change (decisions go through :func:`decide`).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.RECEIVED: frozenset({Status.IN_REVIEW, Status.WAITING_CITIZEN}),
    Status.IN_REVIEW: frozenset({Status.WAITING_CITIZEN}),
    Status.WAITING_CITIZEN: frozenset({Status.IN_REVIEW, Status.CLOSED}),
    Status.APPROVED: frozenset({Status.CLOSED}),
    Status.CORRECTED: frozenset({Status.CLOSED}),
    Status.RESOLVED: frozenset({Status.CLOSED}),
    Status.REFUSED: frozenset({Status.CLOSED}),
    Status.CLOSED: frozenset(),
}

#: The positive decision of each type.
APPROVAL: dict[RequestType, Status] = {
    RequestType.TRANSACTION_COMPLAINT: Status.RESOLVED,
    RequestType.SERVICE_COMPLAINT: Status.RESOLVED,
    RequestType.INSTALLMENT: Status.APPROVED,
    RequestType.CORRECTION: Status.CORRECTED,
}


def _with(req: CitizenRequest, change: Change, **fields: object) -> CitizenRequest:
    return replace(req, history=(*req.history, change), **fields)  # type: ignore[arg-type]


def filed(req: CitizenRequest) -> CitizenRequest:
    """The request as received: its first history entry."""
    return _with(req, Change(req.filed_at, "citizen", "filed", Status.RECEIVED))


def change_status(
    req: CitizenRequest, to: Status, *, actor: str, now: datetime, note: str = ""
) -> CitizenRequest:
    if to in _DECISIONS:
        raise RequestError(
            "decision_needed",
            "a decision is made with its details, not as a status change",
            "يتم اتخاذ القرار مع تفاصيله وليس كتغيير حالة",
            "status",
        )
    if to not in TRANSITIONS[req.status]:
        raise RequestError(
            "bad_transition",
            f"a request {req.status.value} cannot become {to.value}",
            "لا يمكن نقل الطلب إلى هذه الحالة من حالته الحالية",
            "status",
        )
    return _with(req, Change(now, actor, "status", to, note), status=to)


def decide(
    req: CitizenRequest,
    outcome: Status,
    *,
    actor: str,
    now: datetime,
    note: str,
    plan: tuple[Installment, ...] = (),
    new_amount: int | None = None,
) -> CitizenRequest:
    """Approve, correct, resolve or refuse. Raises RequestError naming the field at fault."""
    if req.status not in (Status.RECEIVED, Status.IN_REVIEW, Status.WAITING_CITIZEN):
        raise RequestError(
            "already_decided", "this request is already decided", "تم البت في هذا الطلب مسبقاً"
        )
    if outcome not in (APPROVAL[req.type], Status.REFUSED):
        raise RequestError(
            "bad_decision",
            f"a {req.type.value} cannot be {outcome.value}",
            "هذا القرار غير متاح لهذا النوع من الطلبات",
            "outcome",
        )
    if not note.strip():
        raise RequestError(
            "note_required",
            "say why (the citizen reads it)",
            "يرجى كتابة السبب أو الرد (يطّلع عليه المواطن)",
            "note",
        )
    if outcome == Status.REFUSED:
        plan, new_amount = (), None
    elif req.type == RequestType.INSTALLMENT:
        total = req.details.total or 0
        check_plan(plan, total)
        new_amount = None
    elif req.type == RequestType.CORRECTION:
        if new_amount is None or new_amount < 0:
            raise RequestError(
                "amount_required",
                "the corrected amount is a whole number of minor units, 0 or more",
                "المبلغ المصحح مطلوب (عدد صحيح موجب أو صفر)",
                "new_amount",
            )
        plan = ()
    else:
        plan, new_amount = (), None
    decision = Decision(outcome, note.strip(), actor, now, plan, new_amount)
    return _with(
        req, Change(now, actor, "decided", outcome, note.strip()), status=outcome, decision=decision
    )


def comment(
    req: CitizenRequest, text: str, *, actor: str, now: datetime, public: bool
) -> CitizenRequest:
    if not text.strip():
        raise RequestError("comment_empty", "the comment is empty", "التعليق فارغ", "text")
    return _with(req, Change(now, actor, "comment", req.status, text.strip(), public=public))


def assign(req: CitizenRequest, to: str, *, actor: str, now: datetime) -> CitizenRequest:
    return _with(req, Change(now, actor, "assigned", req.status, to, public=False), assignee=to)


def escalate(req: CitizenRequest, now: datetime) -> CitizenRequest | None:
    """The request escalated to supervisors and the ministry, once, when past due; else None."""
    if req.escalated_at is not None or not req.overdue(now):
        return None
    return _with(
        req,
        Change(now, "hub", "escalated", req.status, "past its turnaround time"),
        escalated_at=now,
    )
