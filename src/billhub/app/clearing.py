"""``billhub report`` and ``billhub settle import``: clearing from the journal.

Both open the journal through its factory (SQLite in WAL mode lets them run
beside a live hub) and leave it as they found it but for what they are meant to
record: the import records its findings once per file, the report only reads.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from billhub.config import Config
from billhub.errors import ConfigError
from billhub.iso8583 import codes as rc
from billhub.journal.factory import JournalSet, build_journal
from billhub.pipeline.model import ReversalRecord
from billhub.settlement.importfile import match_lines, parse_settlement_file
from billhub.settlement.model import ImportOutcome
from billhub.settlement.report import build_report, render_csv, render_html


def _journal(config: Config, *, read_only: bool) -> JournalSet:
    """The journal of ``config``, which must exist: clearing never creates one."""
    path = config.journal.path
    if config.journal.kind == "sqlite" and path is not None and not path.exists():
        raise ConfigError("journal.path", f"no journal at {path}")
    return build_journal(config.journal, read_only=read_only)


@dataclass
class ReportFiles:
    settlement_date: date
    files: list[Path]
    collected: int
    exceptions: int


async def write_report(config: Config, day: date, out_dir: Path) -> ReportFiles:
    """The settlement report of ``day``: four CSV files and one HTML page in ``out_dir``."""
    journal = _journal(config, read_only=True)
    await journal.open()
    try:
        store = journal.settlement
        reversals = await store.reversals_on(day)
        adjustments: list[ReversalRecord] = []
        first: dict[str, datetime | None] = {}  # one question per biller, not per reversal
        for r in reversals:
            if r.response_code != rc.APPROVED:
                continue
            if r.biller not in first:
                first[r.biller] = await store.first_reconciled_at(r.biller, day)
            since = first[r.biller]
            if since is not None and r.received_at > since:
                adjustments.append(r)
        report = build_report(
            day,
            billers={b.code: b.name for b in config.billers},
            groups=await store.day_groups(day),
            reconciliations=await store.reconciliations(day),
            findings=await store.findings(day),
            uncertain_open=await store.open_uncertain(),
            adjustments=adjustments,
            generated_at=datetime.now(UTC),
        )
    finally:
        await journal.close()
    files = {**render_csv(report), f"report-{day.isoformat()}.html": render_html(report)}
    written = []
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    for name, text in files.items():
        path = out_dir / name
        await asyncio.to_thread(path.write_text, text, "utf-8")
        written.append(path)
    return ReportFiles(day, written, report.total.amount, len(report.exceptions))


async def import_settlement_file(config: Config, path: Path) -> ImportOutcome:
    """Match the switch's settlement file against the journal and record the findings.

    A malformed file raises :class:`~billhub.settlement.importfile.SettlementFileError`
    and records nothing; the same file imported again changes nothing.
    """
    data = await asyncio.to_thread(path.read_bytes)
    sha = hashlib.sha256(data).hexdigest()
    gc.disable()  # a million small objects: the cyclic collector only slows parsing down
    try:
        lines = parse_settlement_file(data)
    finally:
        gc.enable()
    journal = _journal(config, read_only=False)
    await journal.open()
    try:
        store = journal.settlement
        outcome = ImportOutcome(path.name, sha, already_imported=False, lines=len(lines))
        if await store.imported(sha):
            outcome.already_imported = True
            return outcome
        for d in sorted({line.settlement_date for line in lines}):
            day_lines = [line for line in lines if line.settlement_date == d]
            matched, findings = match_lines(
                day_lines,
                await store.payments_on(d),
                await store.reversals_on(d),
                d,
                file_name=path.name,
            )
            outcome.matched += matched
            outcome.findings.extend(findings)
        outcome.already_imported = not await store.record_import(outcome, datetime.now(UTC))
        return outcome
    finally:
        await journal.close()
