"""Start-up with history: how long ``billhub serve`` takes to be ready, and its RSS
then, with N past payments in its SQLite journal, for several N in one run.

The journal is made by the journal's own migrations (``SqliteJournal.open``), then
filled with synthetic history straight through sqlite3 (``executemany`` in large
transactions, no sync): N payments over ``--days`` settlement days, half to a REST
biller and half to a batch biller, each of those with its bill (``bills``, as its
file set it: ``open``) and the claim that took it (``bill_claims``); one payment in
``--reversal-every`` reversed (with its reversal), as many reversals of keys never
paid, one done resolver task per reversal, and every day but the last closed
(``cutovers``). The sizes are filled in increasing order into the same file, so a
run of 0, 1,000,000 and 10,000,000 writes 10,000,000 payments once.

For each size the hub (``billhub serve --config``, its own process, logs into a
file) is started ``--repeat`` times and timed from exec to ready: the log line
``hub_listening`` and the link port accepting a TCP connection. Its VmRSS is read
then, and it is stopped with SIGTERM. The journal's pages are in the OS cache
(they were just written): these are warm starts. Usage::

    .venv/bin/python bench/startup.py                        # 0, 1M, 10M: ~10+ min
    .venv/bin/python bench/startup.py --sizes 0,100000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from billhub.journal.sqlite import SqliteJournal
from billhub.transport.certs import init_dev_certs
from harness import (  # bench/ is sys.path[0] when run as a script
    CLK_TCK,
    HubConfig,
    Procs,
    batch_biller,
    note,
    on_terminate,
    proc_ticks,
    rest_biller,
    rss_kb,
    wait_for_line,
)

REST, BATCH = "100001", "100002"
ACQUIRER = "000001"
FIRST_DAY = date(2026, 1, 5)
CHUNK = 200_000


def _config(workdir: Path, certs: Path, journal: Path) -> str:
    inbox, outbox = workdir / "inbox", workdir / "outbox"
    inbox.mkdir(exist_ok=True)
    outbox.mkdir(exist_ok=True)
    return HubConfig(
        certs,
        journal,
        [
            rest_biller(
                REST, "REST biller (never called here)", "http://127.0.0.1:9", "startup-bench-token"
            ),
            batch_biller(BATCH, "Batch biller", inbox, outbox),
        ],
        shutdown_grace_s=1.0,
        comment="Written by bench/startup.py: a loopback hub, a REST and a batch biller, "
        "a large journal.",
    ).toml()


def _migrate(path: Path) -> None:
    async def run() -> None:
        journal = SqliteJournal(path)
        await journal.open()
        await journal.close()

    asyncio.run(run())


class History:
    """Synthetic history appended to one journal file, payment ``done`` onwards."""

    def __init__(self, path: Path, *, days: int, reversal_every: int) -> None:
        self.path = path
        self.days = days
        self.reversal_every = reversal_every
        self.done = 0
        self.seq = 0
        self.tasks = 0
        self.taken = False

    def fill(self, total: int, per_day: int) -> float:
        """Append payments until there are ``total``; returns the seconds it took."""
        t0 = time.monotonic()
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-1048576")
            # A schema that marks taken bills on the bill (by trigger, per claim): the fill
            # marks them itself, triggers off, which is what they would have written.
            cols = [r[1] for r in conn.execute("PRAGMA table_info(bills)")]
            self.taken = "taken" in cols
            triggers = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
            ).fetchall()
            for name, _ in triggers:
                conn.execute(f"DROP TRIGGER {name}")
            while self.done < total:
                n = min(CHUNK, total - self.done)
                self._chunk(conn, self.done, n, per_day)
                self.done += n
                if self.done % 1_000_000 == 0 or self.done == total:
                    note(f"  {self.done:,} payments ({time.monotonic() - t0:.0f} s)")
            self._days(conn, per_day)
            for _, sql in triggers:
                conn.execute(sql)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        return time.monotonic() - t0

    def _chunk(self, conn: sqlite3.Connection, start: int, n: int, per_day: int) -> None:
        payments: list[tuple[Any, ...]] = []
        bills: list[tuple[Any, ...]] = []
        claims: list[tuple[Any, ...]] = []
        reversals: list[tuple[Any, ...]] = []
        tasks: list[tuple[Any, ...]] = []
        for i in range(start, start + n):
            day = FIRST_DAY + timedelta(days=min(i // per_day, self.days - 1))
            iso, mmdd = day.isoformat(), f"{day:%m%d}"
            at = f"{iso}T10:00:00.000000+00:00"
            batch = i % 2 == 1
            biller = BATCH if batch else REST
            pid = f"P{i:016d}"
            rrn = f"{i % 1_000_000_000_000:012d}"
            bill_id = f"B{i:015d}" if batch else None
            account = f"{'02' if batch else '01'}{i % 500_000:010d}"
            reversed_ = 1 if i % self.reversal_every == 0 else 0
            self.seq += 1
            payments.append(
                (
                    pid, ACQUIRER, rrn, mmdd, iso, biller, account, bill_id, 12_500, "760",
                    "60", "000002", f"{account}|{bill_id}|12500", at, "approved", "00",
                    "A1B2C3", None, f"R{i:015d}", "Customer", at, reversed_, None,
                    self.seq, "startup-bench",
                )
            )  # fmt: skip
            if batch:
                self.seq += 1
                bills.append(
                    (BATCH, bill_id, account, "Customer", "202601", iso, 12_500, "open",
                     "20260101-000000001", i + 2, self.seq)
                )  # fmt: skip
                self.seq += 1
                claims.append((BATCH, bill_id, pid, 0 if reversed_ else 1, self.seq))
            if reversed_:
                self.seq += 1
                reversals.append(
                    (ACQUIRER, rrn, mmdd, iso, biller, 12_500, at, "00", pid, iso,
                     "confirmed", self.seq)
                )  # fmt: skip
                self.seq += 1
                never = f"{(i + 1) % 1_000_000_000_000:012d}"  # a key whose payment never came
                reversals.append(
                    (ACQUIRER, never, "1231", iso, biller, 100, at, "25", None, None,
                     "none", self.seq)
                )  # fmt: skip
                tasks.append(("cancel", pid, biller, 1, at, at, None, "{}", at, "cancelled"))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO payments (payment_id, acquirer, rrn, settlement_mmdd, settlement_date, "
            "biller, account, bill_id, amount, currency, channel, forwarder, content, "
            "received_at, state, response_code, approval_code, answer_de48, receipt, "
            "customer_name, answered_at, reversed, resolution, seq, instance) "
            f"VALUES ({', '.join('?' * 25)})",
            payments,
        )
        if self.taken:
            conn.executemany(
                "INSERT INTO bills (biller, bill_id, account, customer_name, period, due_date, "
                f"amount, status, file_order, row_no, seq, taken) VALUES ({', '.join('?' * 12)})",
                [(*b, k[3]) for b, k in zip(bills, claims, strict=True)],
            )
        else:
            conn.executemany(
                "INSERT INTO bills (biller, bill_id, account, customer_name, period, due_date, "
                f"amount, status, file_order, row_no, seq) VALUES ({', '.join('?' * 11)})",
                bills,
            )
        conn.executemany("INSERT INTO bill_claims VALUES (?, ?, ?, ?, ?)", claims)
        conn.executemany(
            "INSERT INTO reversals (acquirer, rrn, settlement_mmdd, settlement_date, biller, "
            "amount, received_at, response_code, payment_id, booked_on, cancel_state, seq) "
            f"VALUES ({', '.join('?' * 12)})",
            reversals,
        )
        conn.executemany(
            "INSERT INTO tasks (kind, payment_id, biller, attempts, next_at, created_at, "
            "not_before_final, detail, done_at, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tasks,
        )
        conn.execute("COMMIT")

    def _days(self, conn: sqlite3.Connection, per_day: int) -> None:
        """Every settlement day of the history but the last closed, with its files."""
        last = min(max(self.done - 1, 0) // per_day, self.days - 1) if self.done else 0
        rows = []
        for d in range(1, last + 1):
            new, prev = FIRST_DAY + timedelta(days=d), FIRST_DAY + timedelta(days=d - 1)
            at = f"{new.isoformat()}T00:00:05+00:00"
            rows.append((new.isoformat(), prev.isoformat(), json.dumps([prev.isoformat()]), at))
        conn.executemany(
            "INSERT INTO cutovers VALUES (?, ?, ?, 'closed', ?, ?4) ON CONFLICT DO NOTHING", rows
        )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def time_start(procs: Procs, workdir: Path, config: Path, label: str) -> dict[str, Any]:
    """Start ``billhub serve`` once; seconds from exec to ready, and VmRSS then."""
    log, err = workdir / f"hub-{label}.log", workdir / f"hub-{label}.err"
    cmd = [sys.executable, "-m", "billhub.cli", "serve", "--config", str(config)]
    t0 = time.monotonic()
    with log.open("wb") as out, err.open("wb") as e:
        hub = procs.start(cmd, stdout=out, stderr=e)
    line = wait_for_line(hub, log, err, '"hub_listening"', 600.0)
    logged = time.monotonic() - t0
    port = int(json.loads(line)["port"])
    while not _accepts(port):
        time.sleep(0.01)
    ready = time.monotonic() - t0
    rss = rss_kb(hub.pid)
    ticks = proc_ticks(hub.pid) or 0
    procs.stop(hub, signal.SIGTERM, timeout=30.0)
    return {
        "ready_s": round(ready, 3),
        "cpu_s": round(ticks / CLK_TCK, 2),  # the hub's own CPU until ready (less noisy)
        "logged_s": round(logged, 3),
        "rss_mib": round(rss.get("VmRSS", 0) / 1024, 1),
        "hwm_mib": round(rss.get("VmHWM", 0) / 1024, 1),
    }


def bills_load(procs: Procs, workdir: Path, accounts: int, repeat: int) -> list[dict[str, Any]]:
    """Start-up with a bills file of ``accounts`` demo subscribers in the batch biller's
    inbox and an empty journal: each start gets a new journal and the file again."""
    from billhub.simulator.demo_data import generate_accounts, write_bills_file

    certs = workdir / "certs"
    source = workdir / "source"
    source.mkdir()
    subscribers = generate_accounts("02", accounts, 7, today=FIRST_DAY)
    bills_file = write_bills_file(source, BATCH, subscribers, day=FIRST_DAY)
    rows = sum(1 for _ in bills_file.open("rb")) - 1
    note(f"bills file of {accounts:,} accounts, {rows:,} rows")
    out = []
    for k in range(repeat):
        run = workdir / f"bills-{k}"
        run.mkdir()
        journal = run / "journal.db"
        config = run / "billhub.toml"
        config.write_text(_config(run, certs, journal), "utf-8")
        shutil.copy(bills_file, run / "inbox" / bills_file.name)
        res = time_start(procs, run, config, f"bills-{k}")
        loaded = [ln for ln in (run / f"hub-bills-{k}.log").open() if '"bills_file"' in ln]
        res["rows"] = json.loads(loaded[0]).get("rows") if loaded else None
        note(f"bills file: ready {res['ready_s']:.2f} s, VmRSS {res['rss_mib']} MiB, {res}")
        out.append(res)
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/startup.py", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="0,1000000,10000000", help="payments, increasing")
    p.add_argument("--days", type=int, default=100, help="settlement days of history")
    p.add_argument("--reversal-every", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=2, help="starts per size (the best is shown)")
    p.add_argument(
        "--bills-accounts",
        type=int,
        default=0,
        help="instead: time start-up with a bills file of this many accounts to load",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if sizes != sorted(sizes):
        p.error("--sizes must be increasing")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_terminate)
    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="billhub-startup-"))
    results: list[dict[str, Any]] = []
    try:
        certs = workdir / "certs"
        init_dev_certs(certs)
        if args.bills_accounts:
            starts = bills_load(procs, workdir, args.bills_accounts, args.repeat)
            best = min(starts, key=lambda s: s["ready_s"])
            print(f"command: {' '.join([sys.executable, *sys.argv])}")
            print(f"bills file load: best ready {best['ready_s']:.2f} s of {starts}")
            return 0
        journal = workdir / "journal.db"
        _migrate(journal)
        config = workdir / "billhub.toml"
        config.write_text(_config(workdir, certs, journal), "utf-8")
        per_day = max(1, -(-sizes[-1] // args.days))
        history = History(journal, days=args.days, reversal_every=args.reversal_every)
        for n in sizes:
            built = history.fill(n, per_day)
            size = journal.stat().st_size
            starts = [time_start(procs, workdir, config, f"{n}-{k}") for k in range(args.repeat)]
            best = min(starts, key=lambda s: s["ready_s"])
            row = {"payments": n, "fill_s": round(built, 1), "db_mib": size // 2**20, **best}
            row["all_ready_s"] = [s["ready_s"] for s in starts]
            results.append(row)
            note(
                f"N={n:>12,}: ready {best['ready_s']:.2f} s (log line {best['logged_s']:.2f} s, "
                f"CPU {best['cpu_s']:.1f} s), "
                f"VmRSS {best['rss_mib']} MiB (peak {best['hwm_mib']}), journal "
                f"{size / 2**20:,.0f} MiB, filled in {built:.0f} s; every start "
                f"{row['all_ready_s']}"
            )
    finally:
        procs.kill_all()
        if args.keep:
            note(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    base = results[0]["ready_s"] if results else None
    if args.json:
        print(json.dumps({"command": sys.argv, "results": results}))
    else:
        print(f"command: {' '.join([sys.executable, *sys.argv])}")
        print(
            f"{'payments':>12} {'ready s':>8} {'x N=first':>9} {'CPU s':>6} {'VmRSS MiB':>10} "
            f"{'db MiB':>8}"
        )
        for r in results:
            ratio = r["ready_s"] / base if base else float("nan")
            print(
                f"{r['payments']:>12,} {r['ready_s']:>8.2f} {ratio:>9.2f} {r['cpu_s']:>6.1f} "
                f"{r['rss_mib']:>10.1f} {r['db_mib']:>8,}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
