"""The citizen requests core, with no sockets and no clock: filing, transitions,
decisions, turnaround in working days, escalation and installment plans."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhub.requests import states
from billhub.requests.filing import check_ticket, new_request, new_ticket, normalise_phone
from billhub.requests.model import Installment, RequestError, RequestType, Status
from billhub.requests.plans import add_months, check_plan, even_plan
from billhub.requests.turnaround import TurnaroundPolicy
from billhub.settlement.calendar import WorkingCalendar

# Wednesday 2 December 2026; Friday and Saturday are the weekend.
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
POLICY = TurnaroundPolicy(
    calendar=WorkingCalendar(holidays=frozenset({date(2026, 12, 6)})),
    defaults={
        "service_complaint": 15,
        "installment": 2,
        "correction": 10,
        "transaction_complaint": 3,
    },
    per_company={"0020": {"service_complaint": 5}},
)


def service(company: str = "0010", **kw: object) -> object:
    args: dict[str, object] = {
        "ticket": "BH-AAAA-BBBB",
        "company": company,
        "account": "0100123456",
        "phone": "+963 944 123 456",
        "description": "الكهرباء مقطوعة منذ يومين",
        "now": NOW,
        "policy": POLICY,
        "category": "supply",
    }
    args.update(kw)
    return new_request(RequestType.SERVICE_COMPLAINT, **args)  # type: ignore[arg-type]


def installment(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "ticket": "BH-CCCC-DDDD",
        "company": "0010",
        "account": "0100123456",
        "phone": "0944123456",
        "description": "",
        "reason": "دخل محدود",
        "now": NOW,
        "policy": POLICY,
        "bill_ids": ["B1", "B2"],
        "open_bills": {"B1": 1_250_000, "B2": 700_001, "B3": 5},
        "installments": 3,
    }
    args.update(kw)
    return new_request(RequestType.INSTALLMENT, **args)  # type: ignore[arg-type]


def test_working_days_skip_weekend_and_holidays() -> None:
    cal = WorkingCalendar(holidays=frozenset({date(2026, 12, 6)}))
    # Wed 2 Dec + 2 working days: Thu 3, (Fri 4, Sat 5 weekend, Sun 6 holiday), Mon 7.
    assert cal.add_working_days(date(2026, 12, 2), 2) == date(2026, 12, 7)
    assert cal.add_working_days(date(2026, 12, 4), 0) == date(2026, 12, 7)
    assert cal.working_days_between(date(2026, 12, 2), date(2026, 12, 7)) == 2
    with pytest.raises(ValueError):
        cal.add_working_days(date(2026, 12, 2), -1)


def test_turnaround_per_company_and_type() -> None:
    a = service()
    b = service(company="0020")
    assert POLICY.days("0010", RequestType.SERVICE_COMPLAINT) == 15
    assert POLICY.days("0020", RequestType.SERVICE_COMPLAINT) == 5
    # 5 working days from Wed 2 Dec: 3, 7, 8, 9, 10 (6th a holiday).
    assert b.due_at == datetime(2026, 12, 10, 10, 0, tzinfo=UTC)
    assert a.due_at > b.due_at
    assert a.phone == "0944123456"
    assert [c.action for c in a.history] == ["filed"] and a.status == Status.RECEIVED


def test_filing_refusals_name_the_field() -> None:
    for kw, field in [
        ({"account": "12"}, "account"),
        ({"phone": "12345"}, "phone"),
        ({"category": "weather"}, "category"),
        ({"description": "  "}, "description"),
        ({"description": "x" * 2001}, "description"),
    ]:
        with pytest.raises(RequestError) as e:
            service(**kw)
        assert e.value.field == field and e.value.ar and e.value.en
    with pytest.raises(RequestError) as e:
        installment(bill_ids=["B9"])
    assert e.value.code == "bill_not_open"
    with pytest.raises(RequestError) as e:
        installment(installments=1)
    assert e.value.field == "installments"
    with pytest.raises(RequestError) as e:
        new_request(
            RequestType.TRANSACTION_COMPLAINT,
            ticket="BH-AAAA-BBBB",
            company="0010",
            account="0100123456",
            phone="0944123456",
            description="",
            now=NOW,
            policy=POLICY,
            reference="123456789012",
            paid_on=date(2026, 12, 3),
            disposition="paid_twice",
        )
    assert e.value.field == "paid_on"


def test_installment_total_is_what_the_biller_says_is_due() -> None:
    req = installment()
    assert req.details.total == 1_950_001 and req.details.bill_ids == ("B1", "B2")


def test_whole_life_of_an_installment_request() -> None:
    req = installment()
    req = states.change_status(req, Status.IN_REVIEW, actor="clerk1", now=NOW)
    req = states.comment(req, "asked the meter team", actor="clerk1", now=NOW, public=False)
    plan = even_plan(1_950_001, 3, date(2027, 1, 15))
    req = states.decide(req, Status.APPROVED, actor="clerk1", now=NOW, note="approved", plan=plan)
    assert req.decision is not None and sum(i.amount for i in req.decision.plan) == 1_950_001
    req = states.change_status(req, Status.CLOSED, actor="clerk1", now=NOW)
    assert [c.status for c in req.history] == [
        Status.RECEIVED,
        Status.IN_REVIEW,
        Status.IN_REVIEW,
        Status.APPROVED,
        Status.CLOSED,
    ]
    assert [c.action for c in req.public_history()] == ["filed", "status", "decided", "status"]


def test_decisions_are_checked() -> None:
    req = installment()
    with pytest.raises(RequestError) as e:
        states.decide(req, Status.CORRECTED, actor="c", now=NOW, note="x", new_amount=1)
    assert e.value.code == "bad_decision"
    bad = (Installment(1, date(2027, 1, 1), 1_000_000), Installment(2, date(2027, 2, 1), 950_000))
    with pytest.raises(RequestError) as e:
        states.decide(req, Status.APPROVED, actor="c", now=NOW, note="ok", plan=bad)
    assert e.value.code == "plan_total"
    with pytest.raises(RequestError) as e:
        states.decide(req, Status.REFUSED, actor="c", now=NOW, note=" ")
    assert e.value.code == "note_required"
    refused = states.decide(req, Status.REFUSED, actor="c", now=NOW, note="no income proof")
    with pytest.raises(RequestError) as e:
        states.decide(refused, Status.REFUSED, actor="c", now=NOW, note="again")
    assert e.value.code == "already_decided"
    with pytest.raises(RequestError) as e:
        states.change_status(refused, Status.IN_REVIEW, actor="c", now=NOW)
    assert e.value.code == "bad_transition"
    with pytest.raises(RequestError):
        states.change_status(req, Status.APPROVED, actor="c", now=NOW)


def test_correction_needs_a_new_amount() -> None:
    req = new_request(
        RequestType.CORRECTION,
        ticket="BH-EEEE-FFFF",
        company="0010",
        account="0100123456",
        phone="0944123456",
        description="",
        now=NOW,
        policy=POLICY,
        bill_ids=["B1"],
        open_bills={"B1": 900_000},
        reason="wrong_reading",
        reading="004512",
    )
    with pytest.raises(RequestError) as e:
        states.decide(req, Status.CORRECTED, actor="c", now=NOW, note="read again")
    assert e.value.field == "new_amount"
    done = states.decide(
        req, Status.CORRECTED, actor="c", now=NOW, note="read again", new_amount=650_000
    )
    assert done.decision is not None and done.decision.new_amount == 650_000


def test_escalation_once_past_due_and_never_after_a_decision() -> None:
    req = installment()  # due in 2 working days: Mon 7 Dec 10:00
    assert req.due_at == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert states.escalate(req, req.due_at) is None
    late = req.due_at + timedelta(seconds=1)
    esc = states.escalate(req, late)
    assert esc is not None and esc.escalated_at == late and esc.history[-1].action == "escalated"
    assert states.escalate(esc, late + timedelta(days=1)) is None
    decided = states.decide(req, Status.REFUSED, actor="c", now=NOW, note="no")
    assert not decided.overdue(late) and states.escalate(decided, late) is None


@given(st.integers(1, 10**12), st.integers(1, 24))
def test_even_plan_sums_to_the_total(total: int, count: int) -> None:
    if count > total:
        with pytest.raises(RequestError):
            even_plan(total, count, date(2027, 1, 31))
        return
    plan = even_plan(total, count, date(2027, 1, 31))
    check_plan(plan, total)
    assert sum(i.amount for i in plan) == total
    assert max(i.amount for i in plan) - min(i.amount for i in plan) <= 1
    assert all(isinstance(i.amount, int) for i in plan)


def test_months_clamp_to_the_month_end() -> None:
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2027, 11, 30), 3) == date(2028, 2, 29)


def test_tickets_and_phones() -> None:
    t = new_ticket(lambda n: bytes(range(n)))
    assert check_ticket(t.lower()) == t
    with pytest.raises(RequestError):
        check_ticket("BH-0000-0000")
    assert normalise_phone("00963-944-123456") == "0944123456"
