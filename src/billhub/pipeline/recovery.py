"""After a crash: payments whose biller may hold them although no answer was recorded.

A payment is recorded ``POSTING`` before its biller is asked. One found so at
start-up was asked, maybe posted, and never answered on the wire (the answer
is written only after the outcome is recorded): it becomes uncertain, `91` for
its repeats (a key's answer is final, and the switch got none), with a resolve
task whose "unknown" is final only after the quiet period, all in one commit,
before the hub reads its first new request (specs/READINGS.md 17).

On a journal several instances share, the payments of an instance that died are
taken over the same way by the others while they run (the journal returns only
those of instances gone). Two survivors may find the same payment at once: the
outcome is written only where the row is still ``POSTING``, so one of them
writes it and its task, and the other writes nothing.
"""

from __future__ import annotations

from datetime import datetime

from billhub.iso8583 import codes as rc
from billhub.pipeline.model import PaymentRecord, PaymentState, ResolverTask, TaskKind
from billhub.pipeline.ports import Journal


async def recover_unfinished(
    journal: Journal, now: datetime, not_before_final: datetime
) -> list[PaymentRecord]:
    """Turn every ``POSTING`` payment into an uncertain one with its task; returns those
    this call turned (not those another instance took meanwhile)."""
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
    if not outcomes:
        return []
    return await journal.write_outcomes(outcomes, if_posting=True)
