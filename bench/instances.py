"""Several instances on PostgreSQL beside SQLite: the end-to-end mix, in one run.

Processes (each in its own session, killed by process group at the end): the hubs
(``billhub serve``), and the load (``billhub switch ... load``, the fast engine), one
process per instance, each paying its own half of the bills. The biller is the
batch biller (the hub's own store, in the journal's database since the BillsStore
change, so on PostgreSQL every instance sees one store), or ``--biller rest`` the
REST demo biller as its own process.

Phases, each on a fresh journal (a new SQLite file, a new PostgreSQL database on
``--pg``, dropped after):

1. ``sqlite``: one instance, the baseline;
2. ``pg-1``: one instance on PostgreSQL;
3. ``pg-2``: two instances on one PostgreSQL database, a load on each, together.

After each phase the journal is read: the approved payments must be exactly the
``00`` answers the loads counted (none lost, none extra), and no answer may differ
from the one the load expected (a bill paid twice would be a `51`). Usage::

    .venv/bin/python bench/instances.py [--duration 10] [--in-flight 64] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billhub.simulator.demo_data import generate_accounts, write_bills_file
from billhub.transport.certs import init_dev_certs
from link import CLK_TCK, Procs, _on_terminate, _tail, note, proc_ticks

HERE = Path(__file__).resolve().parent
BATCH, REST = "100002", "100001"
TOKEN = "bench-instances-token"


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

    @property
    def exact(self) -> bool:
        return self.approved_by_loads == self.approved_in_journal and self.unexpected == 0


def psql(pg: str, sql: str) -> None:
    subprocess.run(
        ["psql", pg, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def psql_value(dsn: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", dsn, "-qAtc", sql], check=True, capture_output=True, text=True, timeout=120
    )
    return done.stdout.strip()


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.a = args
        self.work = work
        self.procs = Procs()
        self.certs = work / "certs"
        init_dev_certs(self.certs)
        self.today = datetime.now(UTC).date()
        self.accounts = generate_accounts("02", args.batch_accounts, args.seed, today=self.today)
        self.n_bills = sum(len(x.bills) for x in self.accounts)
        self.rest_port = 0
        self.rrn_tag = 100
        self._round = 0

    # -- processes ---------------------------------------------------------------------

    def start_rest(self) -> None:
        log, err = self.work / "rest.log", self.work / "rest.err"
        with log.open("wb") as out, err.open("wb") as e:
            proc = self.procs.start(
                [
                    sys.executable, "-m", "billhub.simulator.rest_biller", "--port", "0",
                    "--token", TOKEN, "--seed", str(self.a.seed), "--accounts",
                    str(self.a.batch_accounts), "--prefix", "02", "--today",
                    self.today.isoformat(),
                ],
                stdout=out,
                stderr=e,
            )  # fmt: skip
        self.rest_port = int(self._line(proc, log, err, "listening").strip().rsplit(":", 1)[1])

    def _line(self, proc: subprocess.Popen[bytes], log: Path, err: Path, match: str) -> str:
        deadline = time.monotonic() + self.a.ready_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for line in log.read_text("utf-8", "replace").splitlines():
                    if match in line:
                        return line
            if proc.poll() is not None:
                raise RuntimeError(f"exited {proc.returncode}:\n{_tail(log)}\n{_tail(err)}")
            time.sleep(0.05)
        raise RuntimeError(f"no {match!r}:\n{_tail(log)}\n{_tail(err)}")

    def config(self, journal: str, folder: Path) -> str:
        inbox, outbox = folder / "inbox", folder / "outbox"
        if self.a.biller == "rest":
            biller = (
                f'code = "{REST}"\nname = "Damascus"\nkind = "rest"\nbudget_s = 5\n'
                f"max_concurrency = 32\n"
                f'rest = {{ base_url = "http://127.0.0.1:{self.rest_port}", token = "{TOKEN}" }}'
            )
        else:
            biller = (
                f'code = "{BATCH}"\nname = "Rural Damascus"\nkind = "batch"\nbudget_s = 5\n'
                f'batch = {{ inbox = "{inbox}", outbox = "{outbox}" }}'
            )
        return f"""\
[link]
host = "127.0.0.1"
port = 0
shutdown_grace_s = 2.0
[tls]
cert_file = "{self.certs / "hub.crt"}"
key_file = "{self.certs / "hub.key"}"
client_ca_file = "{self.certs / "switch-ca.crt"}"
allowed_subjects = ["switch-1"]
[admin]
enabled = false
[log]
format = "json"
level = "info"
[journal]
{journal}
[[billers]]
{biller}
"""

    def start_hub(self, name: str, text: str) -> tuple[subprocess.Popen[bytes], int]:
        cfg = self.work / f"{name}.toml"
        cfg.write_text(text, "utf-8")
        log, err = self.work / f"{name}.log", self.work / f"{name}.err"
        with log.open("wb") as out, err.open("wb") as e:
            proc = self.procs.start(
                [sys.executable, "-m", "billhub.cli", "serve", "--config", str(cfg)],
                stdout=out,
                stderr=e,
            )
        line = self._line(proc, log, err, '"hub_listening"')
        return proc, int(json.loads(line)["port"])

    def load_cmd(self, port: int, half: int, halves: int) -> list[str]:
        self.rrn_tag += 1
        rest = self.a.biller == "rest"
        return [
            sys.executable, "-m", "billhub.cli", "switch", "--host", "127.0.0.1",
            "--port", str(port), "--certs", str(self.certs), "--json", "load",
            "--links", str(self.a.links), "--in-flight", str(self.a.in_flight),
            "--duration", str(self.a.duration), "--warmup", str(self.a.warmup),
            "--kind", "mix", "--biller", REST if rest else BATCH,
            "--accounts", str(self.a.batch_accounts), "--seed", str(self.a.seed),
            "--prefix", "02", "--today", self.today.isoformat(),
            "--payment-share", str(self.a.payment_share),
            "--settlement-date", self.today.strftime("%m%d"), "--rrn-tag", str(self.rrn_tag),
            "--bill-offset", str(self.n_bills * half // halves),
            "--account-offset", str(self.a.batch_accounts * half // halves),
        ]  # fmt: skip

    # -- phases ------------------------------------------------------------------------

    def phase(self, name: str, journal: str, instances: int, count_approved: Any) -> Result:
        folder = self.work / name
        (folder / "inbox").mkdir(parents=True)
        (folder / "outbox").mkdir()
        if self.a.biller != "rest":
            write_bills_file(folder / "inbox", BATCH, self.accounts, day=self.today)
        hubs = [
            self.start_hub(f"{name}-{i}", self.config(journal, folder)) for i in range(instances)
        ]
        note(f"[{name}] {instances} instance(s) listening")
        loads = []
        for i, (_, port) in enumerate(hubs):
            out = (self.work / f"{name}-load-{i}.out").open("wb")
            err = (self.work / f"{name}-load-{i}.err").open("wb")
            loads.append((self.procs.start(self.load_cmd(port, i, instances), stdout=out,
                                           stderr=err), out, err))  # fmt: skip
        ticks0 = [proc_ticks(p.pid) or 0 for p, _ in hubs]
        t0 = time.monotonic()
        summaries = []
        for proc, out, err in loads:
            proc.wait(timeout=self.a.duration * 4 + 120)
            out.close()
            err.close()
            lines = [ln for ln in Path(out.name).read_text().splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"[{name}] load failed:\n{_tail(Path(err.name))}")
            summaries.append(json.loads(lines[-1]))
        elapsed = time.monotonic() - t0
        cores = sum((proc_ticks(p.pid) or 0) - t for (p, _), t in zip(hubs, ticks0, strict=True))
        for proc, _ in hubs:
            self.procs.stop(proc, signal.SIGTERM, timeout=20)
        answered = sum(int(s["answered"]) for s in summaries)
        seconds = max(float(s["seconds"]) for s in summaries)
        p50 = max(float(s["p50_ms"]) for s in summaries)
        p99 = max(float(s["p99_ms"]) for s in summaries)
        by_loads = sum(
            int((s.get("all_codes") or {}).get("payment", {}).get("00", 0)) for s in summaries
        )
        # Payments only: a load's expected inquiry answers know its own payments, not the
        # other load's (whose bills it counts as paid by an earlier run, --bill-offset).
        unexpected = sum(
            sum((s.get("unexpected") or {}).get("payment", {}).values()) for s in summaries
        )
        result = Result(
            name, instances, seconds, answered, answered / seconds if seconds else 0.0,
            p50, p99, by_loads, count_approved(), unexpected, cores / CLK_TCK / elapsed,
        )  # fmt: skip
        note(
            f"[{name}] {result.throughput:.0f} msg/s  p50 {p50} ms  p99 {p99} ms  approved "
            f"{by_loads} (journal {result.approved_in_journal})  unexpected {unexpected}  "
            f"hub cores {result.hub_cores:.2f}"
        )
        return result

    def run(self) -> list[Result]:
        if self.a.biller == "rest":
            self.start_rest()
        db = self.work / "journal.db"

        def sqlite_approved() -> int:
            with contextlib.closing(sqlite3.connect(f"{db}.{self._round}")) as conn:
                row = conn.execute("SELECT count(*) FROM payments WHERE state='approved'")
                return int(row.fetchone()[0])

        results: list[Result] = []
        for r in range(self.a.rounds):  # interleaved, so that drift on the machine is shared
            self._round = r
            results.append(self.phase(f"sqlite-r{r}", f'path = "{db}.{r}"', 1, sqlite_approved))
            results += self.pg_phases(r)
        return results

    def pg_phases(self, r: int) -> list[Result]:
        results = []
        for n in (1, 2):
            name = f"bench_instances_{os.getpid()}_{r}_{n}"
            psql(self.a.pg, f'CREATE DATABASE "{name}"')
            dsn = self.a.pg.rsplit("/", 1)[0] + f"/{name}"
            try:
                results.append(
                    self.phase(
                        f"pg-{n}-r{r}",
                        f'kind = "postgresql"\ndsn = "{dsn}"',
                        n,
                        lambda dsn=dsn: int(  # type: ignore[misc]
                            psql_value(dsn, "SELECT count(*) FROM payments WHERE state='approved'")
                        ),
                    )
                )
            finally:
                psql(self.a.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return results


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def report(results: list[Result], args: argparse.Namespace) -> str:
    def kind(r: Result) -> str:
        return r.phase.rsplit("-r", 1)[0]

    median = {
        k: _median([r.throughput for r in results if kind(r) == k])
        for k in ("sqlite", "pg-1", "pg-2")
    }
    base, one, two = median["sqlite"], median["pg-1"], median["pg-2"]
    lines = [
        f"# bench/instances.py: mix ({args.payment_share:.0%} payments) against the "
        f"{args.biller} biller, {args.links} links x {args.in_flight} in flight per instance, "
        f"{args.duration:g} s per phase, {args.rounds} round(s), {os.cpu_count()} cores",
        "",
        "| phase | instances | msg/s | p50 ms | p99 ms | hub CPU (cores, phase average) | approved "
        "(loads / journal) | unexpected |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.phase} | {r.instances} | {r.throughput:.0f} | "
            f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.hub_cores:.2f} | "
            f"{r.approved_by_loads} / {r.approved_in_journal} | {r.unexpected} |"
        )
    lines += [
        "",
        f"medians: sqlite {base:.0f}, pg-1 {one:.0f}, pg-2 {two:.0f} msg/s; "
        f"pg-1 / sqlite = {one / base:.0%} (aim >= 60 %); pg-2 / pg-1 = {two / one:.2f} "
        f"(aim >= 1.00); every phase exact (no payment lost or doubled): "
        f"{all(r.exact for r in results)}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--links", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--payment-share", type=float, default=0.5)
    p.add_argument("--batch-accounts", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--biller", choices=["batch", "rest"], default="batch")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test",
                   help="a PostgreSQL where the bench may create and drop databases")  # fmt: skip
    p.add_argument("--rounds", type=int, default=2, help="the three phases, this many times")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_terminate)
    work = Path(tempfile.mkdtemp(prefix="billhub-bench-instances-"))
    bench = Bench(args, work)
    try:
        results = bench.run()
    finally:
        bench.procs.kill_all()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps([r.__dict__ for r in results]))
    else:
        print(report(results, args))
    return 0 if all(r.exact for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
