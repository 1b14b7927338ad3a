"""Several instances on PostgreSQL beside SQLite, and a hub per core: the mix, in one run.

Processes (each in its own session, killed by process group at the end): the hubs
(``billhub serve``), and the load (``billhub switch ... load``, the fast engine), one
process per instance, each paying its own half of the bills. The biller is the
batch biller (the hub's own store, in the journal's database since the BillsStore
change, so on PostgreSQL every instance sees one store), or ``--biller rest`` the
REST demo biller as its own process.

Phases (``--phases``), each on a fresh journal (a new SQLite file, a new PostgreSQL
database on ``--pg``, dropped after):

* ``sqlite``: one instance, the baseline;
* ``pg-1``: one instance on PostgreSQL;
* ``pg-2``: two instances on one PostgreSQL database, each on its own port, a load on
  each, together;
* ``pg-2-shared``: a hub per core, two instances on one host sharing one link port
  (``[link] reuse_port = true``) and one PostgreSQL database; the two loads both
  connect to that port and the kernel spreads their links over the two processes
  (how many landed on each is reported, from the hubs' logs).

After each phase the journal is read: the approved payments must be exactly the
``00`` answers the loads counted (none lost, none extra), and no answer may differ
from the one the load expected (a bill paid twice would be a `51`). Usage::

    .venv/bin/python bench/instances.py [--duration 10] [--in-flight 64] [--json]
    .venv/bin/python bench/instances.py --phases sqlite,pg-1,pg-2-shared --links 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from billhub.simulator.demo_data import generate_accounts, write_bills_file
from harness import (  # bench/ is sys.path[0] when run as a script
    DEFAULT_PG,
    Biller,
    Hub,
    HubConfig,
    Procs,
    Workload,
    batch_biller,
    cpus,
    dev_certs,
    exit_code,
    load_cmd,
    median,
    note,
    pg_backends,
    pg_database,
    psql,
    rest_biller,
    run_load,
    session,
    start_hub,
    start_rest_biller,
)

HERE = Path(__file__).resolve().parent
BATCH, REST = "100002", "100001"
TOKEN = "bench-instances-token"
PHASES = ("sqlite", "pg-1", "pg-2", "pg-2-shared")


@dataclass
class Result:
    phase: str
    instances: int
    seconds: float
    answered: int
    throughput: float
    p50_ms: float
    p99_ms: float
    approved_by_loads: int
    approved_in_journal: int
    unexpected: int
    hub_cores: float
    hub_us_per_msg: float | None = None
    load_cores: float | None = None
    others_cores: float | None = None
    links_per_hub: tuple[int, ...] = ()
    pg_cores: float | None = None  # the journal's PostgreSQL backends (on this host)
    pg_us_per_msg: float | None = None

    @property
    def exact(self) -> bool:
        return self.approved_by_loads == self.approved_in_journal and self.unexpected == 0


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, procs: Procs | None = None) -> None:
        self.a = args
        self.work = work
        self.procs = procs or Procs()
        self.certs = dev_certs(work / "certs")
        self.today = datetime.now(UTC).date()
        self.accounts = generate_accounts("02", args.batch_accounts, args.seed, today=self.today)
        self.n_bills = sum(len(x.bills) for x in self.accounts)
        self.rest_port = 0
        self.rrn_tag = 100

    def biller(self, folder: Path) -> Biller:
        if self.a.biller == "rest":
            return rest_biller(REST, "Damascus", f"http://127.0.0.1:{self.rest_port}", TOKEN)
        return batch_biller(BATCH, "Rural Damascus", folder / "inbox", folder / "outbox")

    def load(self, port: int, half: int, halves: int) -> list[str]:
        self.rrn_tag += 1
        a = self.a
        workload = Workload(
            REST if a.biller == "rest" else BATCH,
            a.batch_accounts,
            a.seed,
            "02",
            self.today,
            a.payment_share,
            self.rrn_tag,
            self.n_bills * half // halves,
            a.batch_accounts * half // halves,
        )
        return load_cmd(
            port,
            self.certs,
            kind="mix",
            links=a.links,
            in_flight=a.in_flight,
            duration=a.duration,
            warmup=a.warmup,
            workload=workload,
        )

    # -- phases ------------------------------------------------------------------------

    def phase(
        self,
        name: str,
        journal: Path | str,
        instances: int,
        count_approved: Callable[[], int],
        *,
        shared: bool = False,
    ) -> Result:
        folder = self.work / name
        (folder / "inbox").mkdir(parents=True)
        (folder / "outbox").mkdir()
        if self.a.biller != "rest":
            write_bills_file(folder / "inbox", BATCH, self.accounts, day=self.today)
        hubs: list[Hub] = []
        for i in range(instances):
            config = HubConfig(
                self.certs,
                journal,
                [self.biller(folder)],
                port=hubs[0].port if shared and hubs else 0,
                reuse_port=shared,
                comment=f"Written by bench/instances.py: {name}, instance {i}.",
            )
            hubs.append(
                start_hub(
                    self.procs, self.work, f"{name}-{i}", config, timeout=self.a.ready_timeout
                )
            )
        note(f"[{name}] {instances} instance(s) listening" + (" on one port" if shared else ""))
        loads = [self.load(h.port, i, instances) for i, h in enumerate(hubs)]
        links0 = [h.links_opened() for h in hubs]
        ph = run_load(
            self.procs,
            self.work,
            name,
            loads,
            {f"hub-{i}": h.pid for i, h in enumerate(hubs)},
            limit_s=self.a.duration * 4 + 120,
            group=None
            if isinstance(journal, Path)
            else ("pg", pg_backends(self.a.pg, journal.rsplit("/", 1)[1])),
        )
        links = tuple(h.links_opened() - n for h, n in zip(hubs, links0, strict=True))
        for h in hubs:
            self.procs.stop(h.proc, timeout=20)
        s = ph.summary
        by_loads = int(s["all_codes"].get("payment", {}).get("00", 0))
        # Payments only: a load's expected inquiry answers know its own payments, not the
        # other load's (whose bills it counts as paid by an earlier run, --bill-offset).
        unexpected = sum(
            sum((x.get("unexpected") or {}).get("payment", {}).values()) for x in ph.summaries
        )
        answered = int(s["answered"])
        seconds = float(s["seconds"])
        result = Result(
            name,
            instances,
            seconds,
            answered,
            ph.throughput,
            float(s["p50_ms"]),
            float(s["p99_ms"]),
            by_loads,
            count_approved(),
            unexpected,
            ph.cores("hub") or 0.0,
            ph.us_per_msg("hub"),
            ph.cores("load"),
            ph.others,
            links,
            ph.cores("pg"),
            ph.us_per_msg("pg"),
        )
        note(
            f"[{name}] {result.throughput:.0f} msg/s  p50 {result.p50_ms} ms  p99 "
            f"{result.p99_ms} ms  approved {by_loads} (journal {result.approved_in_journal})  "
            f"unexpected {unexpected}  hub cores {result.hub_cores:.2f}  links per hub {links}"
        )
        return result

    def run_phase(self, kind: str, r: int) -> Result:
        if kind == "sqlite":
            db = self.work / f"journal.db.{r}"

            def sqlite_approved() -> int:
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    row = conn.execute("SELECT count(*) FROM payments WHERE state='approved'")
                    return int(row.fetchone()[0])

            return self.phase(f"sqlite-r{r}", db, 1, sqlite_approved)
        n = 1 if kind == "pg-1" else 2
        with pg_database(self.a.pg, f"bench_instances_{os.getpid()}_{r}_{kind}") as dsn:
            return self.phase(
                f"{kind}-r{r}",
                dsn,
                n,
                lambda: int(psql(dsn, "SELECT count(*) FROM payments WHERE state='approved'")),
                shared=kind == "pg-2-shared",
            )

    def run(self) -> list[Result]:
        if self.a.biller == "rest":
            _, self.rest_port = start_rest_biller(
                self.procs,
                self.work,
                token=TOKEN,
                seed=self.a.seed,
                accounts=self.a.batch_accounts,
                prefix="02",
                today=self.today,
            )
        results: list[Result] = []
        for r in range(self.a.rounds):  # interleaved, so that drift on the machine is shared
            results += [self.run_phase(kind, r) for kind in self.a.phases]
        return results


def _kind(r: Result) -> str:
    return r.phase.rsplit("-r", 1)[0]


def medians(results: list[Result]) -> dict[str, float]:
    kinds = dict.fromkeys(_kind(r) for r in results)
    return {k: median([r.throughput for r in results if _kind(r) == k]) for k in kinds}


def report(results: list[Result], args: argparse.Namespace) -> str:
    med = medians(results)
    lines = [
        f"# bench/instances.py: mix ({args.payment_share:.0%} payments) against the "
        f"{args.biller} biller, {args.links} links x {args.in_flight} in flight per load, "
        f"{args.duration:g} s per phase, {args.rounds} round(s), {cpus()} cores",
        "",
        "| phase | instances | msg/s | p50 ms | p99 ms | hub CPU (cores) | hub µs/msg | "
        "PostgreSQL (cores) | PostgreSQL µs/msg | load (cores) | others (cores) | "
        "links per hub | approved (loads / journal) | unexpected |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def f(x: float | None, fmt: str = ".2f") -> str:
        return "n/a" if x is None else format(x, fmt)

    for r in results:
        lines.append(
            f"| {r.phase} | {r.instances} | {r.throughput:.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.hub_cores:.2f} | {f(r.hub_us_per_msg, '.0f')} | "
            f"{f(r.pg_cores)} | {f(r.pg_us_per_msg, '.0f')} | "
            f"{f(r.load_cores)} | {f(r.others_cores)} | "
            f"{' + '.join(map(str, r.links_per_hub))} | "
            f"{r.approved_by_loads} / {r.approved_in_journal} | {r.unexpected} |"
        )
    parts = [f"{k} {v:.0f}" for k, v in med.items()]
    ratios = []
    base, one = med.get("sqlite"), med.get("pg-1")
    if base and one:
        ratios.append(f"pg-1 / sqlite = {one / base:.0%} (aim >= 60 %)")
    for two in ("pg-2", "pg-2-shared"):
        if one and med.get(two):
            ratios.append(f"{two} / pg-1 = {med[two] / one:.2f} (aim >= 1.00)")
    lines += [
        "",
        f"medians: {', '.join(parts)} msg/s; {'; '.join(ratios)}; every phase exact "
        f"(no payment lost or doubled): {all(r.exact for r in results)}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--links", type=int, default=2, help="per load (one load per instance)")
    p.add_argument("--in-flight", type=int, default=64, help="per load")
    p.add_argument("--payment-share", type=float, default=0.5)
    p.add_argument("--batch-accounts", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--biller", choices=["batch", "rest"], default="batch")
    p.add_argument("--pg", default=DEFAULT_PG,
                   help="a PostgreSQL where the bench may create and drop databases")  # fmt: skip
    p.add_argument("--phases", default="sqlite,pg-1,pg-2",
                   help=f"comma-separated, of {', '.join(PHASES)}")  # fmt: skip
    p.add_argument("--rounds", type=int, default=2, help="the phases, this many times")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    args.phases = [x for x in str(args.phases).split(",") if x]
    wrong = [x for x in args.phases if x not in PHASES]
    if wrong or not args.phases:
        p.error(f"--phases: unknown {wrong}; choose from {', '.join(PHASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with session("instances", keep=args.keep) as (procs, work):
        try:
            results = Bench(args, work, procs).run()
        except (KeyboardInterrupt, RuntimeError, subprocess.CalledProcessError) as exc:
            return exit_code("instances", exc)
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
    else:
        print(report(results, args))
    return 0 if all(r.exact for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
