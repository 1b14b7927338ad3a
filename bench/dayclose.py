"""Closing a business day and writing its reports, for 1,000,000 payments.

    .venv/bin/python bench/dayclose.py [--payments 1000000] [--reversals-per-mille 10]
        [--journal sqlite|postgresql] [--dsn postgresql://postgres@127.0.0.1:5432/test]
        [--profile build/] [--keep] [--json]

Setup (not timed with the rest): a journal made by the hub's own journal (its
schema and migrations), then filled directly with N payments of one settlement
date split over a batch biller (``100002``) and an online biller (``100001``):
approved ones, some declined, some without a bill id or a receipt, and
reversals (most answered ``00``, some not). With ``--journal postgresql`` a
database of its own is made on the server of ``--dsn`` and dropped at the end.

Then each step runs in a process of its own, as in production, and the driver
(this process) takes its wall time and its peak RSS (``ru_maxrss`` from
``wait4``):

1. ``close``: the hub's side, with the hub's objects (``build_journal``, the batch
   connector, ``DayCloser``, ``Reconciler``): the batch biller's start, the
   cutover (journal record, the batch biller's payments file of about N/2 rows
   with its trailer, closed state), then one 0500 per biller answered as the hub
   answers it (the totals from the journal, compared, recorded);
2. ``report``: ``billhub report DATE --config ... --out ...``, the command
   operators run: the four CSV files and the HTML page.

Checks, so that a faster run is not a wrong one: the 0500 figures equal the sums
the driver put into the journal, to the minor unit; the payments file's trailer
and row count equal them too; the report's grand total equals them. The
SHA-256 of the payments file and of the CSV files are printed (the HTML carries
its time of generation, so the digest of its ``data-figure`` values is printed
instead), to compare two versions of the code on the same data.

``--profile DIR`` runs each step under ``py-spy record`` (not a project
dependency: ``.venv/bin/pip install py-spy``) and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

DAY = date(2026, 11, 24)
BATCH, REST = "100002", "100001"
RECEIVED = "2026-11-24T10:00:00.000000Z"
HERE = Path(__file__).resolve().parent

PAYMENT_COLUMNS = (
    "payment_id, acquirer, rrn, settlement_mmdd, settlement_date, biller, account, bill_id, "
    "amount, currency, channel, forwarder, content, received_at, state, response_code, "
    "approval_code, answer_de48, receipt, customer_name, answered_at, reversed, resolution, seq"
)
REVERSAL_COLUMNS = (
    "acquirer, rrn, settlement_mmdd, settlement_date, biller, amount, received_at, "
    "response_code, payment_id, booked_on, cancel_state, seq"
)


# -- the journal's content ----------------------------------------------------------------


def payment_rows(n: int, per_mille: int) -> Iterator[tuple[Any, ...]]:
    """N payments of DAY; every 97th declined, every 13th without a bill id, every
    11th without a receipt (the batch connector derives one)."""
    for i in range(n):
        approved = i % 97 != 0
        yield (
            f"P{i:012d}",
            f"6000{i % 7 + 1:02d}",
            f"{i:012d}",
            "1124",
            DAY.isoformat(),
            BATCH if i % 2 else REST,
            f"01{i:08d}",
            None if i % 13 == 0 else f"DM-{i:012d}",
            _amount(i),
            "760",
            f"601{i % 5}",
            "700001",
            "content",
            RECEIVED,
            "approved" if approved else "declined",
            "00" if approved else "05",
            "ABC123" if approved else None,
            "RN",
            None if i % 11 == 0 or not approved else f"R{i}",
            None,
            RECEIVED,
            1 if _reversal(i, per_mille) == "00" else 0,
            None,
            i + 1,
        )


def _amount(i: int) -> int:
    return 100_000 + (i * 7919) % 4_900_000


def _reversal(i: int, per_mille: int) -> str | None:
    """The response code of the reversal of payment ``i``, None if it has none: one
    every ``1000/per_mille`` payments, alternately of either biller, one in nine not
    ``00``; declined payments have none."""
    every = max(1, 1000 // max(per_mille, 1))
    k, rem = divmod(i, every)
    if rem != k % 2 % every or i % 97 == 0:
        return None
    return "91" if k % 9 == 4 else "00"


def reversal_rows(n: int, per_mille: int) -> Iterator[tuple[Any, ...]]:
    for i in range(n):
        code = _reversal(i, per_mille)
        if code is None:
            continue
        yield (
            f"6000{i % 7 + 1:02d}",
            f"{i:012d}",
            "1124",
            DAY.isoformat(),
            BATCH if i % 2 else REST,
            _amount(i),
            RECEIVED,
            code,
            f"P{i:012d}",
            DAY.isoformat(),
            "in_file",
            n + i + 1,
        )


def expected(n: int, per_mille: int) -> dict[str, list[int]]:
    """Per biller: [count, amount, reversal count, reversal amount] as the hub must count."""
    out = {b: [0, 0, 0, 0] for b in (REST, BATCH)}
    for r in payment_rows(n, per_mille):
        if r[14] == "approved":
            out[r[5]][0] += 1
            out[r[5]][1] += r[8]
    for r in reversal_rows(n, per_mille):
        if r[7] == "00":
            out[r[4]][2] += 1
            out[r[4]][3] += r[5]
    return out


def fill_sqlite(db: Path, n: int, per_mille: int) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    conn.executemany(
        f"INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ({', '.join('?' * 24)})",
        payment_rows(n, per_mille),
    )
    conn.executemany(
        f"INSERT INTO reversals ({REVERSAL_COLUMNS}) VALUES ({', '.join('?' * 12)})",
        reversal_rows(n, per_mille),
    )
    conn.commit()  # no ANALYZE: the hub never runs one, its planner has no statistics
    conn.close()


async def fill_postgres(dsn: str, n: int, per_mille: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = payment_rows(n, per_mille)
        while chunk := [r for _, r in zip(range(100_000), rows, strict=False)]:
            await conn.copy_records_to_table(
                "payments", records=chunk, columns=[c.strip() for c in PAYMENT_COLUMNS.split(",")]
            )
        await conn.copy_records_to_table(
            "reversals",
            records=list(reversal_rows(n, per_mille)),
            columns=[c.strip() for c in REVERSAL_COLUMNS.split(",")],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def config_text(work: Path, journal: str) -> str:
    for name in ("x.crt", "x.key"):  # the link is not used here, but the config wants files
        (work / name).write_text("unused\n")
    return f"""
[link]
port = 0
[tls]
cert_file = "{work / "x.crt"}"
key_file = "{work / "x.key"}"
client_ca_file = "{work / "x.crt"}"
allowed_subjects = ["switch-1"]
[journal]
{journal}
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
"""


# -- the hub's side (a child process) -------------------------------------------------------


async def close_day(config_path: Path, want: dict[str, list[int]]) -> dict[str, Any]:
    """Start the batch biller, cut over, answer one 0500 per biller; seconds of each."""
    from billhub.config import load_config
    from billhub.connectors.registry import ConnectorContext, build_biller
    from billhub.iso8583 import codes as rc
    from billhub.iso8583.spec import load_spec
    from billhub.journal.factory import build_journal
    from billhub.settlement.calendar import BusinessDay
    from billhub.settlement.dayclose import DayCloser
    from billhub.settlement.reconcile import Reconciler
    from billhub.simulator.messages import reconciliation

    config = load_config(config_path, biller_secrets=False)
    stores = build_journal(config.journal)
    await stores.open()
    out: dict[str, Any] = {}
    try:
        bcfg = next(b for b in config.billers if b.code == BATCH)
        batch = build_biller(
            bcfg, ConnectorContext(config_path.parent, lambda: DAY, bills=stores.bills)
        )
        t0 = time.perf_counter()
        await batch.start(stores.journal)
        out["start_s"] = time.perf_counter() - t0
        out["rss_before_mb"] = _vm("VmRSS")
        day = BusinessDay(lambda: DAY, DAY)

        async def drained(_: date) -> None:
            return None

        closer = DayCloser(
            stores.settlement,
            day,
            billers=[batch],
            ledger=stores.journal,
            drained=drained,
            exclusive=contextlib.nullcontext,  # type: ignore[arg-type]
            now=lambda: datetime.now(UTC),
            pause=asyncio.sleep,
        )
        t0, c0 = time.perf_counter(), time.process_time()
        code = await closer.cutover((DAY + timedelta(days=1)).strftime("%m%d"))
        out["cutover_s"] = time.perf_counter() - t0
        out["cutover_cpu_s"] = time.process_time() - c0
        assert code == rc.APPROVED, code
        reconciler = Reconciler(
            load_spec(config.link.spec_file).rules,
            stores.settlement,
            billers=frozenset((REST, BATCH)),
            day=day,
            now=lambda: datetime.now(UTC),
        )
        t0, c0 = time.perf_counter(), time.process_time()
        answers = {}
        for b, (cnt, amt, rcnt, ramt) in want.items():
            resp = await reconciler.handle(
                reconciliation(
                    b,
                    DAY.strftime("%m%d"),
                    count=cnt,
                    total=amt,
                    reversal_count=rcnt,
                    reversal_total=ramt,
                )
            )
            answers[b] = [resp.fields[39]] + [int(resp.fields[f]) for f in (74, 86, 75, 87)]
        out["totals_s"] = time.perf_counter() - t0
        out["totals_cpu_s"] = time.process_time() - c0
        out["answers"] = answers
        await batch.close()
    finally:
        await stores.close()
    return out


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the driver -------------------------------------------------------------------------------


def child(cmd: list[str], log: Path, profile: Path | None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one child; raises if it fails. Its CPU
    seconds go into ``CPU`` (the machine is shared: CPU is the steadier figure).

    The peak RSS is the child's own ``VmHWM``, which it writes into ``<log>.hwm`` as
    it exits (see :data:`HWM`): ``ru_maxrss`` from ``wait4`` would not do, Linux
    counts in it the parent's RSS at the fork."""
    if profile is not None:
        py_spy = Path(sys.executable).parent / "py-spy"
        spy = [str(py_spy), "record", "-r", "200", "-f", "speedscope", "-o", str(profile)]
        cmd = [*spy, "--", *cmd]
    with log.open("wb") as out, (log.with_suffix(".err")).open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    CPU[log.stem] = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.with_suffix('.err').read_text()}"
        )
    hwm = log.with_suffix(".hwm")
    return wall, int(hwm.read_text()) / 1024 if hwm.exists() else float("nan"), log.read_text()


CPU: dict[str, float] = {}

#: ``python -c HWM <file> ARGS...``: ``billhub ARGS...`` in this process, then its
#: peak RSS (``VmHWM``, kB) into ``<file>``, whatever way it exits.
HWM = """
import atexit, sys
def hwm(path=sys.argv[1]):
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(path, "w").write(line.split()[1])
atexit.register(hwm)
from billhub.cli import main
sys.exit(main(sys.argv[2:]))
"""


def billhub(log: Path, *args: str) -> list[str]:
    """The command line of ``billhub ARGS`` that leaves its peak RSS beside ``log``."""
    return [sys.executable, "-c", HWM, str(log.with_suffix(".hwm")), *args]


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:16]


def payments_file_check(path: Path, want: list[int]) -> tuple[int, list[int]]:
    """(rows, trailer figures) of the payments file, read as the company would."""
    rows = 0
    last = b""
    with path.open("rb") as fh:
        next(fh)  # header
        for line in fh:
            rows += 1
            last = line
    trailer = last.rstrip(b"\n").decode().split(",")
    assert trailer[0] == "TOTAL", trailer
    figures = [int(x) for x in trailer[1:]]
    assert figures == want, f"payments file trailer {figures} != journal {want}"
    assert rows - 1 == want[0] + want[2], "payments file rows != trailer counts"
    return rows - 1, figures


async def amain(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--payments", type=int, default=1_000_000)
    p.add_argument("--reversals-per-mille", type=int, default=10)
    p.add_argument("--journal", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument(
        "--dsn",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a server to make the journal's own database on (--journal postgresql)",
    )
    p.add_argument("--profile", type=Path, help="folder for py-spy profiles of each step")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument(
        "--cache",
        type=Path,
        help="SQLite: a filled journal kept there (made when missing) and copied for the "
        "run, to skip the fill when measuring again with the same --payments",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--child-close", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_close is not None:  # the hub's side, in a process of its own
        want = json.loads((args.child_close.parent / "want.json").read_text())
        print(json.dumps(await close_day(args.child_close, want)))
        (args.child_close.parent / "close.hwm").write_text(str(int(_vm("VmHWM") * 1024)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="billhub-dayclose-"))
    try:
        return await run(args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


async def run(args: argparse.Namespace, work: Path) -> int:
    from billhub.config import JournalConfig

    (work / "inbox").mkdir()
    (work / "outbox").mkdir()
    n, pm = args.payments, args.reversals_per_mille
    admin_dsn = dbname = None
    if args.journal == "sqlite":
        db = work / "journal.db"
        jcfg = JournalConfig(kind="sqlite", path=db)
        journal_toml = f'path = "{db}"'
    else:
        import asyncpg

        admin_dsn = args.dsn
        dbname = f"billhub_dayclose_{os.getpid()}"
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f"CREATE DATABASE {dbname}")
        await conn.close()
        dsn = re.sub(r"/[^/?]*(\?|$)", f"/{dbname}\\1", admin_dsn.split("://", 1)[1], count=1)
        dsn = admin_dsn.split("://", 1)[0] + "://" + dsn
        jcfg = JournalConfig(kind="postgresql", dsn=dsn)
        journal_toml = f'kind = "postgresql"\ndsn = "{dsn}"'
    try:
        return await _measure(args, work, jcfg, journal_toml, n, pm)
    finally:
        if dbname is not None and admin_dsn is not None:
            import asyncpg

            conn = await asyncpg.connect(admin_dsn)
            await conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            await conn.close()


async def _measure(
    args: argparse.Namespace,
    work: Path,
    jcfg: Any,
    journal_toml: str,
    n: int,
    pm: int,
) -> int:
    from billhub.journal.factory import build_journal

    stores = build_journal(jcfg)
    await stores.open()  # creates the schema exactly as the hub does
    await stores.close()
    t0 = time.perf_counter()
    cache = args.cache
    if cache is not None and jcfg.kind == "sqlite" and cache.exists():
        shutil.copyfile(cache, jcfg.path)
        with contextlib.closing(sqlite3.connect(jcfg.path)) as conn:
            (held,) = conn.execute("SELECT count(*) FROM payments").fetchone()
        if held != n:
            raise SystemExit(f"{cache} holds {held:,} payments, not {n:,}: another --cache")
    elif jcfg.kind == "sqlite":
        fill_sqlite(jcfg.path, n, pm)
        if cache is not None:
            shutil.copyfile(jcfg.path, cache)
    else:
        await fill_postgres(jcfg.dsn, n, pm)
    setup_s = time.perf_counter() - t0
    want = expected(n, pm)
    (work / "want.json").write_text(json.dumps(want))
    config = work / "billhub.toml"
    config.write_text(config_text(work, journal_toml))
    prof = args.profile
    if prof is not None:
        prof.mkdir(parents=True, exist_ok=True)

    close_wall, close_rss, close_out = child(
        [sys.executable, str(HERE / "dayclose.py"), "--child-close", str(config)],
        work / "close.log",
        prof / "close.speedscope.json" if prof else None,
    )
    hub = json.loads(next(x for x in close_out.splitlines()[::-1] if x.startswith("{")))
    for b, (cnt, amt, rcnt, ramt) in want.items():
        assert hub["answers"][b] == ["00", cnt, amt, rcnt, ramt], (b, hub["answers"][b])
    pf = work / "outbox" / f"payments-{BATCH}-{DAY:%Y%m%d}.csv"
    pf_rows, _ = payments_file_check(pf, want[BATCH])

    out_dir = work / "reports"
    log = work / "report.log"
    report_wall, report_rss, _ = child(
        billhub(log, "report", DAY.isoformat(), "--config", str(config), "--out", str(out_dir)),
        log,
        prof / "report.speedscope.json" if prof else None,
    )
    html = (out_dir / f"report-{DAY.isoformat()}.html").read_text("utf-8")
    figures = dict(re.findall(r'data-figure="([^"]+)"[^>]*data-minor="(-?\d+)"', html))
    total = sum(v[1] for v in want.values())
    assert int(figures["total-collected"]) == total, (figures.get("total-collected"), total)
    digests = {
        pf.name: sha(pf),
        **{f.name: sha(f) for f in sorted(out_dir.glob("*.csv"))},
        "html data-figure values": hashlib.sha256(
            json.dumps(sorted(figures.items())).encode()
        ).hexdigest()[:16],
    }
    # What an empty Python process of the same kind costs, to read the steps against.
    log = work / "baseline.log"
    base_wall, base_rss, _ = child(billhub(log, "--help"), log, None)
    steps = {
        "cutover": hub["cutover_s"],
        "0500 totals (2 billers)": hub["totals_s"],
        "report command": report_wall,
    }
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "journal": jcfg.kind,
        "payments": n,
        "setup_s": setup_s,
        "batch_start_s": hub["start_s"],
        "close_process_s": close_wall,
        "close_rss_before_cutover_mb": hub["rss_before_mb"],
        "close_peak_rss_mb": close_rss,
        "report_peak_rss_mb": report_rss,
        "payments_file_rows": pf_rows,
        "payments_file_mb": pf.stat().st_size / 1e6,
        "steps_s": steps,
        "day_close_s": sum(steps.values()),
        "peak_rss_mb": max(close_rss, report_rss),
        "empty_process": {"s": base_wall, "rss_mb": base_rss},
        "cpu_s": dict(CPU),
        "steps_cpu_s": {
            "cutover": hub["cutover_cpu_s"],
            "0500 totals (2 billers)": hub["totals_cpu_s"],
            "report command": CPU["report"],
        },
        "digests": digests,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(_text(result))
    if prof is not None:
        sys.path.insert(0, str(HERE))
        from speedscope import render, summarise

        for name in ("close", "report"):
            path = prof / f"{name}.speedscope.json"
            if path.exists():
                print(f"profile of {name} ({path}):")
                print("\n".join(render(summarise(path, 12))))
    return 0


def _text(r: dict[str, Any]) -> str:
    lines = [
        f"command: {r['command']}",
        f"journal: {r['journal']}, {r['payments']:,} payments; setup (fill, not timed "
        f"below): {r['setup_s']:.1f} s",
        f"batch biller start (in the hub process, before the cutover): {r['batch_start_s']:.2f} s",
    ]
    lines.append(f"  {'step':<26} {'wall':>7}   {'CPU (user+sys, all threads)':>7}")
    for name, s in r["steps_s"].items():
        lines.append(f"  {name:<26} {s:7.2f} s {r['steps_cpu_s'][name]:7.2f} s")
    lines += [
        f"  {'day close total':<26} {r['day_close_s']:7.2f} s "
        f"{sum(r['steps_cpu_s'].values()):7.2f} s   (target < 15 s)",
        f"peak RSS: hub process {r['close_peak_rss_mb']:.0f} MiB "
        f"({r['close_rss_before_cutover_mb']:.0f} before the cutover), report command "
        f"{r['report_peak_rss_mb']:.0f} MiB   (target < 400 MiB)",
        f"payments file: {r['payments_file_rows']:,} rows, {r['payments_file_mb']:.1f} MB",
        "CPU seconds (user+sys) of each process: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_s"].items()),
        f"an empty `billhub --help` for comparison: {r['empty_process']['s']:.2f} s, "
        f"{r['empty_process']['rss_mb']:.0f} MiB",
        "digests (same data, same code path => same figures):",
    ]
    lines += [f"  {k}: {v}" for k, v in r["digests"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
