"""Rows to records and back: the one place that knows how the journal stores a field.

Dates are ISO strings, datetimes ISO UTC with ``Z``, money integer minor units.
Shared by the SQLite and PostgreSQL journals so that both store the same way.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any, Protocol

from billhub.pipeline.model import (
    PaymentKey,
    PaymentRecord,
    PaymentState,
    Resolution,
    ResolverTask,
    ReversalRecord,
    TaskKind,
)


class Row(Protocol):
    """A row as a driver gives it: indexable by column position (a tuple, an asyncpg Record)."""

    def __getitem__(self, index: int, /) -> Any: ...


PAYMENT_COLUMNS = (
    "payment_id, acquirer, rrn, settlement_mmdd, settlement_date, biller, account, bill_id, "
    "amount, currency, channel, forwarder, content, received_at, state, response_code, "
    "approval_code, answer_de48, receipt, customer_name, answered_at, reversed, resolution"
)
REVERSAL_COLUMNS = (
    "acquirer, rrn, settlement_mmdd, settlement_date, biller, amount, received_at, "
    "response_code, payment_id, booked_on, cancel_state"
)
TASK_COLUMNS = (
    "task_id, kind, payment_id, biller, attempts, next_at, created_at, not_before_final, detail"
)


def ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    # isoformat, not strftime: the same text ("%Y-%m-%dT%H:%M:%S.%fZ"), several times faster
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    # fromisoformat reads the "Z" (Python 3.11) and is many times faster than strptime
    return datetime.fromisoformat(value).astimezone(UTC)


def day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value is not None else None


def payment_params(r: PaymentRecord) -> tuple[Any, ...]:
    return (
        r.payment_id,
        r.key.acquirer,
        r.key.rrn,
        r.key.settlement_mmdd,
        day(r.settlement_date),
        r.biller,
        r.account,
        r.bill_id,
        r.amount,
        r.currency,
        r.channel,
        r.forwarder,
        r.content,
        ts(r.received_at),
        r.state.value,
        r.response_code,
        r.approval_code,
        r.answer_de48,
        r.receipt,
        r.customer_name,
        ts(r.answered_at),
        1 if r.reversed else 0,
        r.resolution.value if r.resolution else None,
    )


def payment_from_row(row: Row) -> PaymentRecord:
    received = parse_ts(row[13])
    settlement = parse_day(row[4])
    assert received is not None and settlement is not None
    return PaymentRecord(
        payment_id=row[0],
        key=PaymentKey(row[1], row[2], row[3]),
        settlement_date=settlement,
        biller=row[5],
        account=row[6],
        bill_id=row[7],
        amount=int(row[8]),
        currency=row[9],
        channel=row[10],
        forwarder=row[11],
        content=row[12],
        received_at=received,
        state=PaymentState(row[14]),
        response_code=row[15],
        approval_code=row[16],
        answer_de48=row[17],
        receipt=row[18],
        customer_name=row[19],
        answered_at=parse_ts(row[20]),
        reversed=bool(row[21]),
        resolution=Resolution(row[22]) if row[22] else None,
    )


def reversal_params(r: ReversalRecord) -> tuple[Any, ...]:
    return (
        r.key.acquirer,
        r.key.rrn,
        r.key.settlement_mmdd,
        day(r.settlement_date),
        r.biller,
        r.amount,
        ts(r.received_at),
        r.response_code,
        r.payment_id,
        day(r.booked_on),
        r.cancel_state,
    )


def reversal_from_row(row: Row) -> ReversalRecord:
    received = parse_ts(row[6])
    settlement = parse_day(row[3])
    assert received is not None and settlement is not None
    return ReversalRecord(
        key=PaymentKey(row[0], row[1], row[2]),
        settlement_date=settlement,
        biller=row[4],
        amount=int(row[5]),
        received_at=received,
        response_code=row[7],
        payment_id=row[8],
        booked_on=parse_day(row[9]),
        cancel_state=row[10],
    )


def task_from_row(row: Row) -> ResolverTask:
    next_at, created = parse_ts(row[5]), parse_ts(row[6])
    assert next_at is not None and created is not None
    return ResolverTask(
        task_id=int(row[0]),
        kind=TaskKind(row[1]),
        payment_id=row[2],
        biller=row[3],
        attempts=int(row[4]),
        next_at=next_at,
        created_at=created,
        not_before_final=parse_ts(row[7]),
        detail=json.loads(row[8]) if row[8] else {},
    )


def task_params(t: ResolverTask) -> tuple[Any, ...]:
    return (
        t.kind.value,
        t.payment_id,
        t.biller,
        t.attempts,
        ts(t.next_at),
        ts(t.created_at),
        ts(t.not_before_final),
        json.dumps(t.detail, sort_keys=True),
    )
