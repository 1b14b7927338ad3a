"""After a crash: payments whose biller may hold them although no answer was recorded.

A payment is recorded ``POSTING`` before its biller is asked. One found so at
start-up was asked, maybe posted, and never answered on the wire (the answer
is written only after the outcome is recorded): it becomes uncertain, `91` for
its repeats (a key's answer is final, and the switch got none), with a resolve
task whose "unknown" is final only after the quiet period, all in one commit,
before the hub reads its first new request (specs/READINGS.md 17).
"""

from __future__ import annotations

from datetime import datetime

from billhub.iso8583 import codes as rc
from billhub.pipeline.model import PaymentRecord, PaymentState, ResolverTask, TaskKind
from billhub.pipeline.ports import Journal


async def recover_unfinished(
    journal: Journal, now: datetime, not_before_final: datetime
) -> list[PaymentRecord]:
    """Turn every ``POSTING`` payment into an uncertain one with its task; returns them."""
    unfinished = await journal.unfinished_payments()
    outcomes: list[tuple[PaymentRecord, ResolverTask | None]] = []
    for record in unfinished:
        record.state = PaymentState.UNCERTAIN
        record.response_code = rc.UNAVAILABLE
        record.answered_at = now
        task = ResolverTask(
            0, TaskKind.RESOLVE, record.payment_id, record.biller, 0, now, now, not_before_final
        )
        outcomes.append((record, task))
    if outcomes:
        await journal.write_outcomes(outcomes)
    return unfinished
