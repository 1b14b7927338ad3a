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
import statistics
import sys
from datetime import UTC, datetime
from typing import Any

import asyncpg

from billhub.connectors.database.schema import install, load_bills
from billhub.simulator.demo_data import bills_table_rows, generate_accounts
from harness import (  # bench/ is sys.path[0] when run as a script
    HubConfig,
    Workload,
    database_biller,
    dev_certs,
    load_cmd,
    rest_biller,
    run_load,
    session,
    start_hub,
    start_rest_biller,
)

REST, DB = "100001", "100003"
TOKEN = "bench-token"
PREFIX = {REST: "01", DB: "03"}


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
    name = f"bh_bench_{os.getpid()}"
    dsn = asyncio.run(make_database(args.admin_dsn, name, args.accounts, args.seed, today))
    phases: list[dict[str, Any]] = []
    try:
        with session("db", keep=args.keep) as (procs, work):
            certs = dev_certs(work / "certs")
            _, rest_port = start_rest_biller(
                procs, work, token=TOKEN, seed=args.seed, accounts=args.accounts,
                prefix="01", today=today,
            )  # fmt: skip
            billers = [
                rest_biller(
                    REST, "Damascus (REST)", f"http://127.0.0.1:{rest_port}", TOKEN,
                    max_concurrency=args.max_concurrency,
                ),
                database_biller(
                    DB, "Aleppo (database)", dsn, max_concurrency=args.max_concurrency
                ),
            ]  # fmt: skip
            config = HubConfig(
                certs, work / "journal.db", billers, comment="Written by bench/database_direct.py."
            )
            hub = start_hub(procs, work, "hub", config, timeout=120)
            offsets = {REST: 0, DB: 0}
            accounts_at = {REST: 0, DB: 0}
            tag = 1000
            approved = {REST: 0, DB: 0}
            for i in range(args.repeat):
                for biller_code in (REST, DB):
                    tag += 1
                    workload = Workload(
                        biller_code, args.accounts, args.seed, PREFIX[biller_code], today,
                        args.payment_share, tag, offsets[biller_code], accounts_at[biller_code],
                    )  # fmt: skip
                    cmd = load_cmd(
                        hub.port, certs, kind="mix", links=args.links, in_flight=args.in_flight,
                        duration=args.duration, warmup=args.warmup, workload=workload,
                    )  # fmt: skip
                    ph = run_load(
                        procs, work, f"{biller_code}-{i}", [cmd], {"hub": hub.pid},
                        limit_s=args.duration * 4 + 120, ok_codes=(0, 1),
                    )  # fmt: skip
                    s = ph.summary
                    offsets[biller_code] = int(s["workload"]["next_bill"])
                    accounts_at[biller_code] = int(s["workload"]["next_account"])
                    approved[biller_code] += int(s["all_codes"].get("payment", {}).get("00", 0))
                    phases.append({"biller": biller_code, **s})
            procs.stop(hub.proc, timeout=20)
            checked = asyncio.run(table_check(dsn))
            return report(args, phases, approved, checked)
    finally:
        asyncio.run(drop_database(args.admin_dsn, name))


def _rate(s: dict[str, Any], kind: str) -> float:
    k = s["by_kind"].get(kind, {})
    return float(k.get("answered", 0)) / float(s["seconds"])


def report(
    args: argparse.Namespace,
    phases: list[dict[str, Any]],
    approved: dict[str, int],
    checked: dict[str, int],
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
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
