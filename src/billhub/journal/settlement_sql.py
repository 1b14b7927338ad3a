"""The clearing side of the journal: business days, totals, reconciliations, findings.

One implementation for both journals: the SQL is what SQLite and PostgreSQL both
accept, and it runs through a :class:`SqlRunner` (``?`` placeholders; the
PostgreSQL runner numbers them), on the same database and writer as the
journal, so a cutover's record and the payments it closes share one order of
commits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Protocol

from billhub.journal import codec as c
from billhub.journal.codec import Row
from billhub.pipeline.model import PaymentRecord, PaymentState, ReversalRecord
from billhub.settlement.model import (
    UNKNOWN_CHANNEL,
    DayGroup,
    Finding,
    FindingKind,
    ImportOutcome,
    Reconciliation,
    Totals,
)
from billhub.settlement.ports import CutoverRecord

_SELECT_PAYMENT = f"SELECT {c.PAYMENT_COLUMNS} FROM payments"
_SELECT_REVERSAL = f"SELECT {c.REVERSAL_COLUMNS} FROM reversals"

Statement = tuple[str, tuple[Any, ...]]


class SqlRunner(Protocol):
    """How the store reaches its database (each journal's engine provides one)."""

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """The rows of one query."""
        ...

    async def run(self, statements: Sequence[Statement], *, guarded: bool = False) -> list[int]:
        """Run the statements in one transaction (group commit); the rows each changed.

        ``guarded``: if the first changes no row, the others are not run.
        """
        ...


class SqlSettlementStore:
    """The clearing side of the journal (:class:`~billhub.settlement.ports.SettlementStore`)."""

    def __init__(self, db: SqlRunner) -> None:
        self.j = db

    async def day_totals(self, biller: str, settlement_date: date) -> Totals:
        d = c.day(settlement_date)
        pay = await self.j.rows(
            "SELECT count(*), coalesce(sum(amount), 0) FROM payments "
            "WHERE biller=? AND settlement_date=? AND state=?",
            (biller, d, PaymentState.APPROVED.value),
        )
        rev = await self.j.rows(
            "SELECT count(*), coalesce(sum(amount), 0) FROM reversals "
            "WHERE biller=? AND settlement_date=? AND response_code='00'",
            (biller, d),
        )
        return Totals(int(pay[0][0]), int(pay[0][1]), int(rev[0][0]), int(rev[0][1]))

    async def latest_cutover(self) -> CutoverRecord | None:
        rows = await self.j.rows(
            "SELECT new_date, previous_date, closed_dates, state, requested_at, closed_at "
            "FROM cutovers ORDER BY new_date DESC LIMIT 1",
            (),
        )
        if not rows:
            return None
        r = rows[0]
        new = c.parse_day(r[0])
        requested = c.parse_ts(r[4])
        assert new is not None and requested is not None
        return CutoverRecord(
            new_date=new,
            previous_date=c.parse_day(r[1]),
            closed_dates=[date.fromisoformat(x) for x in json.loads(r[2])],
            state=r[3],
            requested_at=requested,
            closed_at=c.parse_ts(r[5]),
        )

    async def begin_cutover(self, record: CutoverRecord) -> bool:
        changed = await self.j.run(
            [
                (
                    "INSERT INTO cutovers (new_date, previous_date, closed_dates, state, "
                    "requested_at, closed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (new_date) "
                    "DO NOTHING",
                    (
                        c.day(record.new_date),
                        c.day(record.previous_date),
                        json.dumps([d.isoformat() for d in record.closed_dates]),
                        record.state,
                        c.ts(record.requested_at),
                        c.ts(record.closed_at),
                    ),
                )
            ]
        )
        return changed[0] == 1

    async def posting_before(self, day: date) -> int:
        rows = await self.j.rows(
            "SELECT count(*) FROM payments WHERE state=? AND settlement_date < ?",
            (PaymentState.POSTING.value, c.day(day)),
        )
        return int(rows[0][0])

    async def finish_cutover(self, new_date: date, closed_at: datetime) -> None:
        await self.j.run(
            [
                (
                    "UPDATE cutovers SET state='closed', closed_at=? WHERE new_date=?",
                    (c.ts(closed_at), c.day(new_date)),
                )
            ]
        )

    async def dates_with_activity(self, before: date) -> list[date]:
        rows = await self.j.rows(
            "SELECT settlement_date FROM payments WHERE settlement_date < ? "
            "UNION SELECT settlement_date FROM reversals WHERE settlement_date < ? "
            "ORDER BY 1",
            (c.day(before), c.day(before)),
        )
        return [date.fromisoformat(r[0]) for r in rows]

    async def record_payments_file(
        self, biller: str, settlement_date: date, path: str, written_at: datetime
    ) -> None:
        await self.j.run(
            [
                (
                    "INSERT INTO payments_files VALUES (?, ?, ?, ?) ON CONFLICT (biller, "
                    "settlement_date) DO UPDATE SET path=excluded.path, "
                    "written_at=excluded.written_at",
                    (biller, c.day(settlement_date), path, c.ts(written_at)),
                )
            ]
        )

    async def record_reconciliation(
        self, reconciliation: Reconciliation, findings: list[Finding], at: datetime
    ) -> None:
        r = reconciliation

        await self.j.run(
            [
                (
                    "INSERT INTO reconciliations (biller, settlement_date, switch_count, "
                    "switch_amount, switch_reversal_count, switch_reversal_amount, hub_count, "
                    "hub_amount, hub_reversal_count, hub_reversal_amount, response_code, "
                    "answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.biller,
                        c.day(r.settlement_date),
                        r.switch.count,
                        r.switch.amount,
                        r.switch.reversal_count,
                        r.switch.reversal_amount,
                        r.hub.count,
                        r.hub.amount,
                        r.hub.reversal_count,
                        r.hub.reversal_amount,
                        r.response_code,
                        c.ts(r.answered_at),
                    ),
                ),
                *_findings_rows(findings, at),
            ]
        )

    async def reconciliations(self, settlement_date: date) -> list[Reconciliation]:
        rows = await self.j.rows(
            "SELECT biller, settlement_date, switch_count, switch_amount, "
            "switch_reversal_count, switch_reversal_amount, hub_count, hub_amount, "
            "hub_reversal_count, hub_reversal_amount, response_code, answered_at "
            "FROM reconciliations WHERE settlement_date=? ORDER BY seq",
            (c.day(settlement_date),),
        )
        out = []
        for r in rows:
            answered = c.parse_ts(r[11])
            assert answered is not None
            out.append(
                Reconciliation(
                    biller=r[0],
                    settlement_date=date.fromisoformat(r[1]),
                    switch=Totals(int(r[2]), int(r[3]), int(r[4]), int(r[5])),
                    hub=Totals(int(r[6]), int(r[7]), int(r[8]), int(r[9])),
                    response_code=r[10],
                    answered_at=answered,
                )
            )
        return out

    async def first_reconciled_at(self, biller: str, settlement_date: date) -> datetime | None:
        rows = await self.j.rows(
            "SELECT min(answered_at) FROM reconciliations WHERE biller=? AND settlement_date=?",
            (biller, c.day(settlement_date)),
        )
        return c.parse_ts(rows[0][0]) if rows and rows[0][0] else None

    async def findings(self, settlement_date: date) -> list[Finding]:
        rows = await self.j.rows(
            "SELECT kind, settlement_date, biller, detail, hub, switch, acquirer, rrn, source "
            "FROM findings WHERE settlement_date=? ORDER BY seq",
            (c.day(settlement_date),),
        )
        return [
            Finding(
                kind=FindingKind(r[0]),
                settlement_date=date.fromisoformat(r[1]),
                biller=r[2],
                detail=r[3],
                hub=r[4],
                switch=r[5],
                acquirer=r[6],
                rrn=r[7],
                source=r[8],
            )
            for r in rows
        ]

    async def record_import(self, outcome: ImportOutcome, at: datetime) -> bool:
        changed = await self.j.run(
            [
                (
                    "INSERT INTO settlement_imports VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (sha256) DO NOTHING",
                    (outcome.sha256, outcome.file_name, outcome.lines, outcome.matched, c.ts(at)),
                ),
                *_findings_rows(outcome.findings, at),
            ],
            guarded=True,
        )
        return changed[0] == 1

    async def imported(self, sha256: str) -> bool:
        rows = await self.j.rows("SELECT 1 FROM settlement_imports WHERE sha256=?", (sha256,))
        return bool(rows)

    async def day_groups(self, settlement_date: date) -> list[DayGroup]:
        day = c.day(settlement_date)
        paid = await self.j.rows(
            "SELECT biller, acquirer, channel, count(*), sum(amount) FROM payments "
            "WHERE settlement_date=? AND state='approved' GROUP BY biller, acquirer, channel",
            (day,),
        )
        reversed_ = await self.j.rows(
            "SELECT r.biller, r.acquirer, coalesce(p.channel, ?), count(*), sum(r.amount) "
            "FROM reversals r LEFT JOIN payments p ON p.payment_id = r.payment_id "
            "AND p.settlement_date = r.settlement_date "
            "WHERE r.settlement_date=? AND r.response_code='00' "
            "GROUP BY 1, 2, 3",
            (UNKNOWN_CHANNEL, day),
        )
        sums: dict[tuple[str, str, str], list[int]] = {}
        for row in paid:
            sums.setdefault((row[0], row[1], row[2]), [0, 0, 0, 0])[:2] = [int(row[3]), int(row[4])]
        for row in reversed_:
            sums.setdefault((row[0], row[1], row[2]), [0, 0, 0, 0])[2:] = [int(row[3]), int(row[4])]
        return [DayGroup(b, q, ch, Totals(*t)) for (b, q, ch), t in sorted(sums.items())]

    async def payments_on(self, settlement_date: date) -> list[PaymentRecord]:
        rows = await self.j.rows(
            f"{_SELECT_PAYMENT} WHERE settlement_date=? ORDER BY seq", (c.day(settlement_date),)
        )
        return [c.payment_from_row(r) for r in rows]

    async def reversals_on(self, settlement_date: date) -> list[ReversalRecord]:
        rows = await self.j.rows(
            f"{_SELECT_REVERSAL} WHERE settlement_date=? ORDER BY seq", (c.day(settlement_date),)
        )
        return [c.reversal_from_row(r) for r in rows]

    async def open_uncertain(self) -> list[PaymentRecord]:
        rows = await self.j.rows(
            f"{_SELECT_PAYMENT} WHERE state=? AND resolution IS NULL ORDER BY seq",
            (PaymentState.UNCERTAIN.value,),
        )
        return [c.payment_from_row(r) for r in rows]


def _findings_rows(findings: list[Finding], at: datetime) -> list[Statement]:
    return [
        (
            "INSERT INTO findings (kind, settlement_date, biller, acquirer, rrn, hub, switch, "
            "detail, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f.kind.value,
                c.day(f.settlement_date),
                f.biller,
                f.acquirer,
                f.rrn,
                f.hub,
                f.switch,
                f.detail,
                f.source,
                c.ts(at),
            ),
        )
        for f in findings
    ]
