"""Closing a business day and writing its reports, for 1,000,000 payments.

    .venv/bin/python bench/dayclose.py [--payments 1000000] [--reversals-per-mille 10]

Builds a journal (the hub's own SQLite schema, made by the hub's own journal)
holding N approved payments of one settlement date split over a batch biller and
an online biller, plus reversals, then times what the operators wait for:

1. the cutover: ``DayCloser.cutover`` as the hub runs it (journal record, the
   batch biller's payments file of N/2 rows with its trailer, closed state);
2. the 0500 totals of each biller (what a 0510 answers);
3. ``billhub report DATE``: the four CSV files and the HTML page.

Setup (filling the journal) is not timed. One process: there is no load to
separate from the hub here; the figures are wall-clock seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from billhub.app.clearing import write_report
from billhub.config import JournalConfig, parse_config
from billhub.connectors.registry import ConnectorContext, build_biller
from billhub.journal.factory import build_journal
from billhub.settlement.calendar import BusinessDay
from billhub.settlement.dayclose import DayCloser

DAY = date(2026, 11, 24)
BATCH, REST = "100002", "100001"


def fill(db: Path, n: int, per_mille: int) -> tuple[int, int]:
    """N approved payments of DAY (half per biller) and reversals; returns (sum, reversed sum)."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    received = "2026-11-24T10:00:00.000000Z"
    total = rev_total = 0

    def rows():  # type: ignore[no-untyped-def]
        nonlocal total
        for i in range(n):
            biller = BATCH if i % 2 else REST
            amount = 100_000 + (i * 7919) % 4_900_000
            total += amount
            yield (
                f"P{i:012d}",
                f"6000{i % 7 + 1:02d}",
                f"{i:012d}",
                "1124",
                DAY.isoformat(),
                biller,
                f"01{i:08d}",
                f"DM-{i:012d}",
                amount,
                "760",
                f"601{i % 5}",
                "700001",
                "content",
                received,
                "approved",
                "00",
                "ABC123",
                "RN",
                f"R{i}",
                None,
                received,
                0,
                None,
                i + 1,
            )

    conn.executemany(
        "INSERT INTO payments (payment_id, acquirer, rrn, settlement_mmdd, settlement_date, "
        "biller, account, bill_id, amount, currency, channel, forwarder, content, received_at, "
        "state, response_code, approval_code, answer_de48, receipt, customer_name, answered_at, "
        "reversed, resolution, seq) VALUES (" + ", ".join("?" * 24) + ")",
        rows(),
    )
    reversals = []
    for i in range(0, n, max(1, 1000 // max(per_mille, 1))):
        amount = 100_000 + (i * 7919) % 4_900_000
        rev_total += amount
        reversals.append(
            (
                f"6000{i % 7 + 1:02d}",
                f"{i:012d}",
                "1124",
                DAY.isoformat(),
                BATCH if i % 2 else REST,
                amount,
                received,
                "00",
                f"P{i:012d}",
                DAY.isoformat(),
                "in_file",
                n + i + 1,
            )
        )
    conn.executemany(
        "INSERT INTO reversals (acquirer, rrn, settlement_mmdd, settlement_date, biller, amount, "
        "received_at, response_code, payment_id, booked_on, cancel_state, seq) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        reversals,
    )
    conn.executemany(
        "UPDATE payments SET reversed=1 WHERE payment_id=?", [(r[8],) for r in reversals]
    )
    conn.commit()
    conn.close()
    return total, rev_total


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--payments", type=int, default=1_000_000)
    p.add_argument("--reversals-per-mille", type=int, default=10)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="billhub-dayclose-"))
    try:
        return await run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def run(args: argparse.Namespace, work: Path) -> int:
    db = work / "journal.db"
    (work / "inbox").mkdir()
    (work / "outbox").mkdir()
    stores = build_journal(JournalConfig(kind="sqlite", path=db))
    await stores.open()  # creates the schema exactly as the hub does
    await stores.close()
    t0 = time.perf_counter()
    total, rev_total = fill(db, args.payments, args.reversals_per_mille)
    print(
        f"setup: {args.payments:,} payments, reversals {rev_total:,} of {total:,} minor units, "
        f"in {time.perf_counter() - t0:.1f} s (not timed below)"
    )

    for name in ("x.crt", "x.key"):  # the link is not used here, but the config wants files
        (work / name).write_text("unused\n")
    config = parse_config(
        f"""
[link]
port = 0
[tls]
cert_file = "{work / "x.crt"}"
key_file = "{work / "x.key"}"
client_ca_file = "{work / "x.crt"}"
allowed_subjects = ["switch-1"]
[journal]
path = "{db}"
[[billers]]
code = "{REST}"
name = "Damascus"
kind = "rest"
rest = {{ base_url = "http://127.0.0.1:9", token = "t" }}
[[billers]]
code = "{BATCH}"
name = "Rural Damascus"
kind = "batch"
batch = {{ inbox = "{work / "inbox"}", outbox = "{work / "outbox"}" }}
""",
        base_dir=work,
        env={},
    )
    stores = build_journal(config.journal)
    await stores.open()
    journal, store = stores.journal, stores.settlement
    bcfg = next(b for b in config.billers if b.code == BATCH)
    batch = build_biller(bcfg, ConnectorContext(work, lambda: DAY, bills=stores.bills))
    t0 = time.perf_counter()
    await batch.start(journal)
    start_s = time.perf_counter() - t0
    day = BusinessDay(lambda: DAY, DAY)

    async def drained(_: date) -> None:
        return None

    closer = DayCloser(
        store,
        day,
        billers=[batch],
        ledger=journal,
        drained=drained,
        exclusive=contextlib.nullcontext,  # type: ignore[arg-type]
        now=lambda: datetime.now(UTC),
        pause=asyncio.sleep,
    )
    t0 = time.perf_counter()
    code = await closer.cutover((DAY + timedelta(days=1)).strftime("%m%d"))
    cutover_s = time.perf_counter() - t0
    assert code == "00"
    t0 = time.perf_counter()
    totals = {b: await store.day_totals(b, DAY) for b in (REST, BATCH)}
    totals_s = time.perf_counter() - t0
    assert sum(t.amount for t in totals.values()) == total
    assert sum(t.reversal_amount for t in totals.values()) == rev_total
    await batch.close()
    await stores.close()
    t0 = time.perf_counter()
    done = await write_report(config, DAY, work / "reports")
    report_s = time.perf_counter() - t0
    assert done.collected == total
    pf = work / "outbox" / f"payments-{BATCH}-{DAY:%Y%m%d}.csv"
    trailer = pf.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].decode().split(",")
    assert int(trailer[2]) - int(trailer[4]) == totals[BATCH].net, "payments file = 0500 figures"
    print(f"command: {' '.join(sys.argv)}")
    held = args.payments // 2
    print(f"batch biller start (index from the store, {held:,} payments held): {start_s:.2f} s")
    print(
        f"cutover (close the day, payments file of {pf.stat().st_size / 1e6:.1f} MB): "
        f"{cutover_s:.2f} s"
    )
    print(f"0500 totals of both billers: {totals_s:.2f} s")
    print(f"reports (4 CSV + HTML) for {args.payments:,} payments: {report_s:.2f} s")
    print(
        f"close + totals + reports: {cutover_s + totals_s + report_s:.2f} s; "
        f"peak RSS {rss_mb():.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
