"""Journal records for tests: payments, reversals and tasks as the pipeline writes them.

Shared by the journal contract suite (``tests/contracts/``), the adapter-specific
journal tests and the pipeline tests, so that they all speak of the same records.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from billhub.pipeline.model import (
    PaymentKey,
    PaymentRecord,
    PaymentState,
    ResolverTask,
    ReversalRecord,
    TaskKind,
)
from billhub.pipeline.ports import Journal

T0 = datetime(2025, 3, 14, 9, 30, 0, 123456, tzinfo=UTC)
SDATE = date(2025, 3, 14)
BILLER = "ELEC-DAM"
NAME_AR = "محمد عبد الله الحلبي"
DE48_AR = "RN016RCPT-2025-000001CN020" + NAME_AR


def key(rrn: str, acquirer: str = "600001", mmdd: str = "0314") -> PaymentKey:
    return PaymentKey(acquirer=acquirer, rrn=rrn, settlement_mmdd=mmdd)


def payment(
    rrn: str,
    *,
    payment_id: str | None = None,
    amount: int = 125_000,
    biller: str = BILLER,
    state: PaymentState = PaymentState.POSTING,
    content: str | None = None,
    received_at: datetime = T0,
) -> PaymentRecord:
    return PaymentRecord(
        payment_id=payment_id or f"P-{rrn}",
        key=key(rrn),
        settlement_date=SDATE,
        biller=biller,
        account="0100234567",
        bill_id="B-202502",
        amount=amount,
        currency="760",
        channel="6011",
        forwarder="600002",
        content=content or f"500000|{amount:012d}|760|{biller}|0100234567|B-202502",
        received_at=received_at,
        state=state,
    )


def approve(record: PaymentRecord, *, at: datetime = T0) -> PaymentRecord:
    record.state = PaymentState.APPROVED
    record.response_code = "00"
    record.approval_code = "A1B2C3"
    record.receipt = "RCPT-2025-000001"
    record.customer_name = NAME_AR
    record.answer_de48 = DE48_AR
    record.answered_at = at + timedelta(seconds=1)
    return record


def reversal(
    rrn: str,
    *,
    payment_id: str | None,
    response_code: str,
    amount: int = 125_000,
    booked_on: date | None = SDATE,
    cancel_state: str = "none",
) -> ReversalRecord:
    return ReversalRecord(
        key=key(rrn),
        settlement_date=SDATE,
        biller=BILLER,
        amount=amount,
        received_at=T0 + timedelta(minutes=5),
        response_code=response_code,
        payment_id=payment_id,
        booked_on=booked_on,
        cancel_state=cancel_state,
    )


def task_for(
    payment_id: str,
    *,
    kind: TaskKind = TaskKind.RESOLVE,
    next_at: datetime = T0,
    not_before_final: datetime | None = None,
) -> ResolverTask:
    return ResolverTask(
        task_id=0,
        kind=kind,
        payment_id=payment_id,
        biller=BILLER,
        attempts=0,
        next_at=next_at,
        created_at=T0,
        not_before_final=not_before_final,
    )


async def approved_in_journal(journal: Journal, rrn: str, **kw: Any) -> PaymentRecord:
    rec, created = await journal.insert_payment(payment(rrn, **kw))
    assert created
    await journal.finish_payment(approve(rec))
    return rec
