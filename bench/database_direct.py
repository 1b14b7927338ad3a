"""The database biller beside the REST biller, through one hub, in the same run.

Run::

    .venv/bin/python bench/database_direct.py                      # about a minute
    .venv/bin/python bench/database_direct.py --duration 10 --repeat 3 --in-flight 32
    .venv/bin/python bench/database_direct.py --json

Processes, each its own: the hub (``billhub serve``, SQLite journal, info logs into a
file, admin off) with two billers, ``100001`` the REST demo biller
(``python -m billhub.simulator.rest_biller``) and ``100003`` a database biller on a
fresh PostgreSQL database of the machine's server (``--admin-dsn``; the default
schema, filled by the demo-data generator with the same subscribers); and one
``billhub switch --json load --kind mix`` per phase. Phases alternate REST, database,
REST, database... (``--repeat`` pairs), so that both see the same machine.

It prints per phase the answers per second, inquiries and payments per second,
p50/p99, and the database biller's throughput as a share of the REST biller's (the
baseline measured in the same run). Then the exactly-once check: the payments the
switch got `00` for are the payments the company's table holds, none twice, and
every bill was paid at most its amount. Exit status 1 when an answer was unexpected
or the check fails. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from billhub.connectors.database.schema import install, load_bills
from billhub.simulator.demo_data import bills_table_rows, generate_accounts
from billhub.transport.certs import init_dev_certs

REST, DB = "100001", "100003"
TOKEN = "bench-token"
PREFIX = {REST: "01", DB: "03"}


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    out = log.open("a")
    return subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def wait_line(log: Path, needle: str, proc: subprocess.Popen[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"{log.name}: no {needle!r}: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


async def make_database(admin: str, name: str, accounts: int, seed: int, today: Any) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = admin.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"
    await install(dsn)
    await load_bills(dsn, bills_table_rows(generate_accounts("03", accounts, seed, today=today)))
    return dsn


async def drop_database(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def table_check(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        posted = await conn.fetchval("SELECT count(*) FROM payments WHERE status = 'posted'")
        overpaid = await conn.fetchval("SELECT count(*) FROM bills WHERE paid > amount")
        mismatched = await conn.fetchval(
            "SELECT count(*) FROM payments p WHERE amount <> (SELECT coalesce(sum(amount), 0)"
            " FROM payment_bills l WHERE l.payment_id = p.payment_id)"
        )
        return {
            "posted": int(posted),
            "overpaid_bills": int(overpaid),
            "lines_off": int(mismatched),
        }
    finally:
        await conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--accounts", type=int, default=3000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--links", type=int, default=2)
    p.add_argument("--max-concurrency", type=int, default=16, help="per biller")
    p.add_argument("--payment-share", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=2, help="REST/database pairs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    today = datetime.now(UTC).date()
    work = Path(tempfile.mkdtemp(prefix="billhub-bench-db-"))
    certs = work / "certs"
    init_dev_certs(certs)
    name = f"bh_bench_{os.getpid()}"
    dsn = asyncio.run(make_database(args.admin_dsn, name, args.accounts, args.seed, today))
    procs: list[subprocess.Popen[str]] = []
    phases: list[dict[str, Any]] = []
    try:
        biller_log = work / "rest-biller.log"
        biller = start(
            [
                sys.executable, "-m", "billhub.simulator.rest_biller", "--port", "0",
                "--token", TOKEN, "--seed", str(args.seed), "--accounts", str(args.accounts),
                "--prefix", "01", "--today", today.isoformat(),
            ],
            biller_log,
        )  # fmt: skip
        procs.append(biller)
        rest_port = int(wait_line(biller_log, "listening", biller).rsplit(":", 1)[1])
        cfg = work / "billhub.toml"
        cfg.write_text(
            f"""
[link]
host = "127.0.0.1"
port = 0
[tls]
cert_file = "{certs / "hub.crt"}"
key_file = "{certs / "hub.key"}"
client_ca_file = "{certs / "switch-ca.crt"}"
allowed_subjects = ["switch-1"]
[admin]
enabled = false
[log]
level = "info"
[journal]
path = "{work / "journal.db"}"
[[billers]]
code = "{REST}"
name = "Damascus (REST)"
kind = "rest"
max_concurrency = {args.max_concurrency}
rest = {{ base_url = "http://127.0.0.1:{rest_port}", token = "{TOKEN}" }}
[[billers]]
code = "{DB}"
name = "Aleppo (database)"
kind = "database"
max_concurrency = {args.max_concurrency}
[billers.database]
dsn = "{dsn}"
""",
            "utf-8",
        )
        hub_log = work / "hub.log"
        hub = start([sys.executable, "-m", "billhub.cli", "serve", "--config", str(cfg)], hub_log)
        procs.append(hub)
        port = int(json.loads(wait_line(hub_log, '"hub_listening"', hub))["port"])
        offsets = {REST: 0, DB: 0}
        accounts_at = {REST: 0, DB: 0}
        tag = 1000
        approved = {REST: 0, DB: 0}
        for _ in range(args.repeat):
            for biller_code in (REST, DB):
                tag += 1
                cmd = [
                    sys.executable, "-m", "billhub.cli", "switch", "--host", "127.0.0.1",
                    "--port", str(port), "--certs", str(certs), "--json", "load",
                    "--links", str(args.links), "--in-flight", str(args.in_flight),
                    "--duration", str(args.duration), "--warmup", str(args.warmup),
                    "--kind", "mix", "--biller", biller_code, "--accounts", str(args.accounts),
                    "--seed", str(args.seed), "--prefix", PREFIX[biller_code],
                    "--today", today.isoformat(), "--payment-share", str(args.payment_share),
                    "--settlement-date", today.strftime("%m%d"), "--rrn-tag", str(tag),
                    "--bill-offset", str(offsets[biller_code]),
                    "--account-offset", str(accounts_at[biller_code]),
                ]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode not in (0, 1) or not done.stdout.strip():
                    raise SystemExit(f"load failed: {done.stderr[-2000:]}")
                s = json.loads(done.stdout.strip().splitlines()[-1])
                offsets[biller_code] = int(s["workload"]["next_bill"])
                accounts_at[biller_code] = int(s["workload"]["next_account"])
                approved[biller_code] += int(s["all_codes"].get("payment", {}).get("00", 0))
                phases.append({"biller": biller_code, **s})
        checked = asyncio.run(table_check(dsn))
    finally:
        for proc in reversed(procs):
            stop(proc)
        asyncio.run(drop_database(args.admin_dsn, name))
    return report(args, phases, approved, checked, work)


def _rate(s: dict[str, Any], kind: str) -> float:
    k = s["by_kind"].get(kind, {})
    return float(k.get("answered", 0)) / float(s["seconds"])


def report(
    args: argparse.Namespace,
    phases: list[dict[str, Any]],
    approved: dict[str, int],
    checked: dict[str, int],
    work: Path,
) -> int:
    by: dict[str, list[dict[str, Any]]] = {REST: [], DB: []}
    for s in phases:
        by[s["biller"]].append(s)

    def med(code: str, f: Any) -> float:
        return statistics.median(f(s) for s in by[code])

    rows = {
        code: {
            "msg_per_s": med(code, lambda s: s["throughput_per_s"]),
            "inquiries_per_s": med(code, lambda s: _rate(s, "inquiry")),
            "payments_per_s": med(code, lambda s: _rate(s, "payment")),
            "p50_ms": med(code, lambda s: s["p50_ms"]),
            "p99_ms": med(code, lambda s: s["p99_ms"]),
            "unexpected": sum(s["unexpected_total"] for s in by[code]),
        }
        for code in (REST, DB)
    }
    ratio = rows[DB]["msg_per_s"] / rows[REST]["msg_per_s"] if rows[REST]["msg_per_s"] else 0.0
    once = (
        checked["posted"] == approved[DB]
        and checked["overpaid_bills"] == 0
        and checked["lines_off"] == 0
    )
    ok = once and rows[DB]["unexpected"] == 0 and rows[REST]["unexpected"] == 0
    out = {
        "command": " ".join(sys.argv),
        "cpus": os.cpu_count(),
        "billers": rows,
        "database_over_rest": round(ratio, 3),
        "phases": [
            {
                k: s[k]
                for k in ("biller", "throughput_per_s", "p50_ms", "p99_ms", "unexpected_total")
            }
            for s in phases
        ],
        "approved_database_payments": approved[DB],
        "table": checked,
        "exactly_once": once,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"$ {out['command']}   ({out['cpus']} CPUs, mix {args.payment_share:g} payments,"
              f" {args.links} links x {args.in_flight} in flight, {args.duration:g} s per phase,"
              f" medians of {args.repeat})")  # fmt: skip
        print(f"{'biller':<22}{'msg/s':>9}{'inq/s':>9}{'pay/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
        for code, label in ((REST, "REST 100001"), (DB, "database (PG) 100003")):
            r = rows[code]
            print(f"{label:<22}{r['msg_per_s']:>9.0f}{r['inquiries_per_s']:>9.0f}"
                  f"{r['payments_per_s']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")  # fmt: skip
        print(f"database / REST throughput: {ratio:.2f}")
        print(
            f"exactly once: {approved[DB]} payments answered 00, {checked['posted']} posted in"
            f" the table, {checked['overpaid_bills']} bills overpaid,"
            f" {checked['lines_off']} payments whose bill shares do not add up:"
            f" {'ok' if once else 'FAILED'}"
        )
    if args.keep:
        print(f"work folder: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
