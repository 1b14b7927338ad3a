"""End-to-end benchmark: switch -> hub -> billers, each in its own process, in one run.

Processes (each in its own session, killed by process group at the end, on Ctrl-C,
SIGTERM or error):

* the hub, ``billhub serve --config <generated toml>`` (logs at ``info`` into a file,
  admin disabled, the SQLite journal durable in a temporary folder), with two
  billers: ``100001`` REST (the demo biller below) and ``100002`` batch (the hub's
  own store, loaded at start from a bills file of ``--batch-accounts`` demo
  subscribers written into its inbox);
* the REST demo biller, ``python -m billhub.simulator.rest_biller --port 0 --token T
  --seed S --accounts N --prefix 01 --today YYYY-MM-DD``;
* the load, ``billhub switch ... load`` (the fast engine), one process per phase,
  which generates the same demo subscribers from the same prefix, count, seed and
  ``today``, so it knows every bill it pays and the answer each request should get;
* ``bench/servers.py --mode codec`` for the codec limit (b) of ``bench/link.py``;
* ``bench/rest_direct.py``: the REST biller asked directly with aiohttp.

Phases, in order:

1. batch, max load: ``--kind mix`` (inquiries and payments, ``--payment-share``)
   against the batch biller, closed loop, for each in-flight of ``--sweep``; the
   best is the maximum rate. ``perf stat`` counts the hub's fsync/fdatasync calls
   meanwhile (SQLite syncs the WAL once per commit), for the journal's group sizes.
2. codec limit (b) at the best in-flight: echo tests (as ``bench/link.py``), and
   the same mix of requests (``--expect 00``: the codec server approves all).
3. batch at ``--latency-fraction`` (80 %) of the maximum rate, open loop
   (``--rate``): p50/p99.
4. REST through the hub at ``--rest-concurrency`` in flight, then the REST biller
   asked directly with the same calls at the same concurrency: "hub adds X ms at p50".
5. ``--profile`` (default on): the batch mix again with ``py-spy record`` attached
   to the hub; the top functions by self time.
6. ``--million``: the batch mix until ``--million-count`` answers, with the hub's
   VmRSS (``/proc/PID/status``) before, during and after.

CPU per message of the hub, the load (and the REST biller) comes from ``/proc`` over
the load's measured window, as in ``bench/link.py``. Usage::

    .venv/bin/python bench/e2e.py [--duration 10] [--sweep 64,128,256] [--million]
                                  [--json] [--keep] [--no-profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billhub.simulator.demo_data import generate_accounts, write_bills_file
from billhub.transport.certs import init_dev_certs
from link import (  # bench/ is sys.path[0] when run as a script
    CLK_TCK,
    Procs,
    _on_terminate,
    _tail,
    find_py_spy,
    host_ticks,
    note,
    proc_ticks,
)
from speedscope import render, summarise

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = ROOT / "build"
SERVERS = HERE / "servers.py"
REST_DIRECT = HERE / "rest_direct.py"
REST, BATCH = "100001", "100002"
TOKEN = "bench-token-7c1e"
SAMPLE_EVERY_S = 0.1
THROUGHPUT_AIM = 0.50  # batch e2e throughput / codec limit
P99_AIM_MS = 10.0  # p99 at 80 % of the maximum rate
HUB_ADDS_AIM_MS = 5.0  # what the hub may add to a REST biller's p50
PHASES = ("batch", "codec", "latency", "rest", "profile", "rest-profile")


# --------------------------------------------------------------------------- helpers


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB; empty once it is gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def wait_for_line(
    proc: subprocess.Popen[bytes], log: Path, err: Path, match: str, timeout: float
) -> str:
    """The first line of ``log`` containing ``match``; raises if the process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in log.read_text("utf-8", "replace").splitlines():
                if match in line:
                    return line
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(
                f"{shlex.join(map(str, proc.args))} exited with {proc.returncode}:\n"
                f"{_tail(log)}\n{_tail(err)}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"no {match!r} after {timeout:g} s:\n{_tail(log)}\n{_tail(err)}")


@dataclass
class Phase:
    """One load process run and what was sampled meanwhile."""

    name: str
    command: list[str]
    summary: dict[str, Any]
    cpu_cores: dict[str, float | None]  # share of one core per watched process
    window_s: float
    machine: float | None
    others: float | None
    syncs: dict[str, int] = field(default_factory=dict)
    rss_series: list[tuple[float, int]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        return float(self.summary.get("throughput_per_s", 0.0))

    def us_per_msg(self, who: str) -> float | None:
        cores = self.cpu_cores.get(who)
        if cores is None or not self.throughput:
            return None
        return cores / self.throughput * 1e6


class Bench:
    def __init__(self, args: argparse.Namespace, procs: Procs, workdir: Path) -> None:
        self.args = args
        self.procs = procs
        self.workdir = workdir
        self.certs = workdir / "certs"
        self.today = datetime.now(UTC).date()
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_port = 0
        self.biller: subprocess.Popen[bytes] | None = None
        self.biller_port = 0
        self.rrn_tag = 100
        self.batch_bill = 0  # bills of the batch biller paid by earlier phases
        self.batch_account = 0
        self.rest_bill = 0
        self.rest_account = 0
        self.timings: dict[str, float] = {}
        self.batch_stats: dict[str, int] = {}
        self.rest_stats: dict[str, int] = {}
        self.label = "hub"  # the hub under test, when --hub-src names several
        self.hub_dir = workdir

    # ----------------------------------------------------------------------- set-up

    def setup(self) -> None:
        a = self.args
        t0 = time.monotonic()
        init_dev_certs(self.certs)
        self.batch_accounts = generate_accounts("02", a.batch_accounts, a.seed, today=self.today)
        self.batch_stats = _account_stats(self.batch_accounts)
        self.rest_stats = _account_stats(
            generate_accounts("01", a.rest_accounts, a.seed, today=self.today)
        )
        self.timings["bills_file_s"] = time.monotonic() - t0
        self.start_biller()

    def start_hub(self, label: str, src: str | None) -> None:
        """A fresh hub (its own journal, inbox and logs) from ``src`` (a ``src/`` folder;
        ``None``: the installed package), its batch store loaded from a new bills file."""
        a = self.args
        self.label = label
        self.hub_dir = self.workdir / label
        inbox, outbox = self.hub_dir / "inbox", self.hub_dir / "outbox"
        inbox.mkdir(parents=True)
        outbox.mkdir()
        t0 = time.monotonic()
        write_bills_file(inbox, BATCH, self.batch_accounts, day=self.today)
        note(
            f"[{label}] bills file of {a.batch_accounts} accounts ({self.batch_stats['rows']}"
            f" rows) written in {time.monotonic() - t0:.1f} s"
        )
        self.batch_bill = self.batch_account = 0  # a fresh store: every bill open again
        config = self.hub_dir / "billhub.toml"
        config.write_text(self.hub_config(inbox, outbox), "utf-8")
        t1 = time.monotonic()
        log, err = self.hub_dir / "hub.log", self.hub_dir / "hub.err"
        env = [] if src is None else ["env", f"PYTHONPATH={Path(src).resolve()}"]
        with log.open("wb") as out, err.open("wb") as e:
            self.hub = self.procs.start(
                [*env, sys.executable, "-m", "billhub.cli", "serve", "--config", str(config)],
                stdout=out,
                stderr=e,
            )
        line = wait_for_line(self.hub, log, err, '"hub_listening"', a.ready_timeout)
        self.hub_port = int(json.loads(line)["port"])
        self.timings["hub_start_s"] = time.monotonic() - t1
        note(f"hub listening on {self.hub_port} after {self.timings['hub_start_s']:.1f} s")

    def start_biller(self) -> None:
        a = self.args
        log, err = self.workdir / "rest-biller.log", self.workdir / "rest-biller.err"
        with log.open("wb") as out, err.open("wb") as e:
            self.biller = self.procs.start(
                [
                    sys.executable,
                    "-m",
                    "billhub.simulator.rest_biller",
                    "--port",
                    "0",
                    "--token",
                    TOKEN,
                    "--seed",
                    str(a.seed),
                    "--accounts",
                    str(a.rest_accounts),
                    "--prefix",
                    "01",
                    "--today",
                    self.today.isoformat(),
                ],
                stdout=out,
                stderr=e,
            )
        line = wait_for_line(self.biller, log, err, "listening", 120)
        self.biller_port = int(line.strip().rsplit(":", 1)[1])
        note(f"REST biller listening on {self.biller_port}")

    def hub_config(self, inbox: Path, outbox: Path) -> str:
        return f"""\
# Written by bench/e2e.py: a loopback hub, a REST and a batch biller, a durable journal.
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
path = "{self.hub_dir / "journal.db"}"

[[billers]]
code = "{REST}"
name = "Damascus (REST demo biller)"
kind = "rest"
budget_s = 5
max_concurrency = {self.args.rest_max_concurrency}
rest = {{ base_url = "http://127.0.0.1:{self.biller_port}", token = "{TOKEN}" }}

[[billers]]
code = "{BATCH}"
name = "Rural Damascus (batch)"
kind = "batch"
budget_s = 5
batch = {{ inbox = "{inbox}", outbox = "{outbox}" }}
"""

    # ----------------------------------------------------------------------- loads

    def load_cmd(
        self,
        port: int,
        kind: str,
        *,
        in_flight: int,
        duration: float,
        biller: str = BATCH,
        rate: float = 0.0,
        count: int = 0,
        expect: str | None = None,
        offsets: bool = True,
    ) -> list[str]:
        a = self.args
        cmd = [
            sys.executable,
            "-m",
            "billhub.cli",
            "switch",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--certs",
            str(self.certs),
            "--json",
            "load",
            "--links",
            str(a.links),
            "--in-flight",
            str(in_flight),
            "--duration",
            str(duration),
            "--warmup",
            str(a.warmup),
            "--kind",
            kind,
        ]
        if kind != "echo":
            rest = biller == REST
            self.rrn_tag += 1
            cmd += [
                "--biller",
                biller,
                "--accounts",
                str(a.rest_accounts if rest else a.batch_accounts),
                "--seed",
                str(a.seed),
                "--prefix",
                "01" if rest else "02",
                "--today",
                self.today.isoformat(),
                "--payment-share",
                str(a.payment_share),
                "--settlement-date",
                self.today.strftime("%m%d"),
                "--rrn-tag",
                str(self.rrn_tag),
            ]
            if offsets:
                bill = self.rest_bill if rest else self.batch_bill
                account = self.rest_account if rest else self.batch_account
                cmd += ["--bill-offset", str(bill), "--account-offset", str(account)]
        if rate > 0:
            cmd += ["--rate", f"{rate:.0f}"]
        if count > 0:
            cmd += ["--count", str(count)]
        if expect is not None:
            cmd += ["--expect", expect]
        return cmd

    def advance(self, biller: str, summary: dict[str, Any]) -> None:
        """Remember which bills and accounts the next run against ``biller`` starts at."""
        wl = summary.get("workload") or {}
        if "next_bill" not in wl:
            return
        if biller == REST:
            self.rest_bill, self.rest_account = int(wl["next_bill"]), int(wl["next_account"])
        else:
            self.batch_bill, self.batch_account = int(wl["next_bill"]), int(wl["next_account"])

    def run(
        self,
        name: str,
        cmd: list[str],
        watch: dict[str, int | None],
        *,
        limit_s: float,
        count_syncs: bool = False,
        rss_every: float = 0.0,
    ) -> Phase:
        """Run one load process to its end, sampling the CPU of ``watch`` and the load."""
        name = f"{self.label}/{name}" if self.args.hub_src else name
        note(f"[{name}] {shlex.join(cmd[3:])}")
        file_name = name.replace("/", "-")
        out_path = self.workdir / f"load-{file_name}.out"
        err_path = self.workdir / f"load-{file_name}.err"
        perf: subprocess.Popen[bytes] | None = None
        perf_out = self.workdir / f"perf-{file_name}.txt"
        hub_pid = watch.get("hub")
        if count_syncs and hub_pid is not None and shutil.which("perf"):
            with perf_out.open("wb") as po:
                perf = self.procs.start(
                    [
                        "perf",
                        "stat",
                        "-x",
                        ",",
                        "-e",
                        "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync",
                        "-p",
                        str(hub_pid),
                    ],
                    stdout=po,
                    stderr=po,
                )
        t_start = time.monotonic()
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = self.procs.start(cmd, stdout=out, stderr=err)
        samples: list[tuple[float, dict[str, int | None], tuple[int, int] | None]] = []
        rss_series: list[tuple[float, int]] = []
        next_rss = 0.0
        deadline = time.monotonic() + limit_s
        try:
            while proc.poll() is None:
                now = time.monotonic()
                wall = time.time()
                if now > deadline:
                    raise RuntimeError(f"[{name}] the load did not finish in {limit_s:g} s")
                ticks = {k: proc_ticks(pid) for k, pid in watch.items()}
                ticks["load"] = proc_ticks(proc.pid)
                samples.append((wall, ticks, host_ticks()))
                if rss_every and hub_pid is not None and now >= next_rss:
                    rss_series.append((now - t_start, rss_kb(hub_pid).get("VmRSS", 0)))
                    next_rss = now + rss_every
                time.sleep(SAMPLE_EVERY_S)
            t_exit = time.monotonic()
            wall_exit = time.time()
        finally:
            self.procs.stop(proc, signal.SIGKILL, timeout=0.1)
            if perf is not None:
                self.procs.stop(perf, signal.SIGINT, timeout=5.0)
        if proc.returncode != 0:
            raise RuntimeError(f"[{name}] load exited with {proc.returncode}:\n{_tail(err_path)}")
        lines = [ln for ln in out_path.read_text("utf-8").splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"[{name}] load printed no JSON:\n{_tail(err_path)}")
        summary = json.loads(lines[-1])
        phase = _phase(name, cmd, summary, samples, wall_exit, list(watch))
        phase.wall_s = t_exit - t_start
        phase.rss_series = rss_series
        if perf is not None:
            phase.syncs = _perf_counts(perf_out)
        note(
            f"    {phase.throughput:.0f} msg/s  p50 {summary.get('p50_ms')} ms  p99 "
            f"{summary.get('p99_ms')} ms  codes {summary.get('codes')}  unexpected "
            f"{summary.get('unexpected_total', 0)}  "
            + "  ".join(f"{k} {v * 100:.0f} %" for k, v in phase.cpu_cores.items() if v is not None)
        )
        return phase

    def hub_watch(self) -> dict[str, int | None]:
        assert self.hub is not None and self.biller is not None
        return {"hub": self.hub.pid, "biller": self.biller.pid}

    def check_alive(self) -> None:
        for what, p in (("hub", self.hub), ("REST biller", self.biller)):
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"the {what} died (exit {p.returncode})")

    # ----------------------------------------------------------------------- phases

    def batch_sweep(self) -> list[Phase]:
        a = self.args
        out = []
        for inf in a.sweep:
            cmd = self.load_cmd(self.hub_port, "mix", in_flight=inf, duration=a.duration)
            ph = self.run(
                f"batch-max-{inf}",
                cmd,
                self.hub_watch(),
                limit_s=a.duration + 180,
                count_syncs=True,
            )
            self.advance(BATCH, ph.summary)
            self.check_alive()
            out.append(ph)
        return out

    def codec_limit(self, in_flight: int) -> tuple[Phase, Phase]:
        a = self.args
        log, err = self.workdir / "codec-server.log", self.workdir / "codec-server.err"
        with log.open("wb") as o, err.open("wb") as e:
            server = self.procs.start(
                [sys.executable, str(SERVERS), "--mode", "codec", "--certs", str(self.certs)],
                stdout=o,
                stderr=e,
            )
        try:
            port = int(wait_for_line(server, log, err, "LISTENING", 30).split()[1])
            echo = self.run(
                "codec-echo",
                self.load_cmd(port, "echo", in_flight=in_flight, duration=a.duration),
                {"server": server.pid},
                limit_s=a.duration + 120,
            )
            mix = self.run(
                "codec-mix",
                self.load_cmd(
                    port,
                    "mix",
                    in_flight=in_flight,
                    duration=a.duration,
                    biller=REST,
                    expect="00",
                    offsets=False,
                ),
                {"server": server.pid},
                limit_s=a.duration + 120,
            )
        finally:
            self.procs.stop(server, signal.SIGTERM)
        return echo, mix

    def batch_latency(self, max_rate: float) -> Phase:
        a = self.args
        rate = max_rate * a.latency_fraction
        cmd = self.load_cmd(
            self.hub_port, "mix", in_flight=a.rate_cap, duration=a.duration, rate=rate
        )
        ph = self.run("batch-80pct", cmd, self.hub_watch(), limit_s=a.duration + 180)
        self.advance(BATCH, ph.summary)
        self.check_alive()
        return ph

    _HUB_STATE = ("hub", "hub_port", "hub_dir", "label", "batch_bill", "batch_account")

    def save_hub(self) -> dict[str, Any]:
        """The running hub's state, so that several hubs can take turns (``--hub-src``)."""
        return {k: getattr(self, k) for k in self._HUB_STATE}

    def load_hub(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def rest_once(self, name: str = "rest-hub") -> Phase:
        """The REST mix through the hub once (no direct phase)."""
        a = self.args
        ph = self.run(
            name,
            self.load_cmd(
                self.hub_port, "mix", in_flight=a.rest_concurrency, duration=a.duration, biller=REST
            ),
            self.hub_watch(),
            limit_s=a.duration + 180,
        )
        self.advance(REST, ph.summary)
        self.check_alive()
        return ph

    def rest(self) -> tuple[Phase, dict[str, Any], Phase]:
        a = self.args
        c = a.rest_concurrency
        via_hub = self.run(
            "rest-hub",
            self.load_cmd(self.hub_port, "mix", in_flight=c, duration=a.duration, biller=REST),
            self.hub_watch(),
            limit_s=a.duration + 180,
        )
        self.advance(REST, via_hub.summary)
        self.check_alive()
        direct_cmd = [
            sys.executable,
            str(REST_DIRECT),
            "--url",
            f"http://127.0.0.1:{self.biller_port}",
            "--token",
            TOKEN,
            "--accounts",
            str(a.rest_accounts),
            "--seed",
            str(a.seed),
            "--prefix",
            "01",
            "--today",
            self.today.isoformat(),
            "--concurrency",
            str(c),
            "--duration",
            str(a.duration),
            "--warmup",
            str(a.warmup),
            "--payment-share",
            str(a.payment_share),
            "--bill-offset",
            str(self.rest_bill),
            "--account-offset",
            str(self.rest_account),
        ]
        assert self.biller is not None
        direct = self.run(
            "rest-direct", direct_cmd, {"biller": self.biller.pid}, limit_s=a.duration + 120
        )
        self.rest_bill = int(direct.summary.get("next_bill", self.rest_bill))
        self.rest_account = int(direct.summary.get("next_account", self.rest_account))
        # and once more through the hub, so that the biller's state (ledger size) and
        # warm-up do not favour one side
        via_hub2 = self.run(
            "rest-hub-2",
            self.load_cmd(self.hub_port, "mix", in_flight=c, duration=a.duration, biller=REST),
            self.hub_watch(),
            limit_s=a.duration + 180,
        )
        self.advance(REST, via_hub2.summary)
        return via_hub, direct.summary | {"_cpu": direct.cpu_cores}, via_hub2

    def profile(self, in_flight: int, biller: str = BATCH) -> dict[str, Any]:
        a = self.args
        py_spy = find_py_spy()
        if py_spy is None:
            return {"error": "py-spy is not installed"}
        assert self.hub is not None
        BUILD.mkdir(exist_ok=True)
        what = "rest" if biller == REST else "batch"
        out_file = (
            BUILD
            / f"e2e-{self.label}-{what}-profile-{time.strftime('%Y%m%d-%H%M%S')}.speedscope.json"
        )
        spylog = self.hub_dir / f"py-spy-{what}.log"
        with spylog.open("wb") as sl:
            spy = self.procs.start(
                [
                    py_spy,
                    "record",
                    "-o",
                    str(out_file),
                    "-f",
                    "speedscope",
                    "--rate",
                    str(a.profile_rate),
                    "--pid",
                    str(self.hub.pid),
                ],
                stdout=sl,
                stderr=sl,
            )
        try:
            deadline = time.monotonic() + 15
            while "Sampling process" not in spylog.read_text("utf-8", "replace"):
                if spy.poll() is not None or time.monotonic() > deadline:
                    return {"error": f"py-spy cannot attach: {_tail(spylog, 5)}"}
                time.sleep(0.05)
            ph = self.run(
                f"{what}-profile",
                self.load_cmd(
                    self.hub_port, "mix", in_flight=in_flight, duration=a.duration, biller=biller
                ),
                self.hub_watch(),
                limit_s=a.duration + 180,
            )
            self.advance(biller, ph.summary)
        finally:
            self.procs.stop(spy, signal.SIGINT, timeout=20)
        if not out_file.exists():
            return {"error": f"py-spy wrote no profile: {_tail(spylog, 5)}"}
        s = summarise(out_file, a.top)
        threads, busy = by_thread(out_file, a.top)
        return {
            "file": str(out_file),
            "load": f"{what} mix, {in_flight} in flight",
            "throughput_under_py_spy": ph.throughput,
            "hub_cpu_under_py_spy": ph.cpu_cores.get("hub"),
            "lines": render(s),
            "busy_self": busy,
            "threads": threads,
        }

    def million(self, in_flight: int) -> dict[str, Any]:
        a = self.args
        assert self.hub is not None
        before = rss_kb(self.hub.pid)
        cmd = self.load_cmd(
            self.hub_port,
            "mix",
            in_flight=in_flight,
            duration=a.million_limit,
            count=a.million_count,
        )
        ph = self.run(
            "million",
            cmd,
            self.hub_watch(),
            limit_s=a.million_limit + 300,
            count_syncs=True,
            rss_every=10.0,
        )
        self.advance(BATCH, ph.summary)
        time.sleep(1.0)
        after = rss_kb(self.hub.pid)
        self.check_alive()
        return {"phase": ph, "before": before, "after": after}

    def journal_counts(self) -> dict[str, Any]:
        """Rows of the journal, read with sqlite3 once the hub has stopped."""
        db = self.hub_dir / "journal.db"
        out: dict[str, Any] = {}
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            out["payments"] = {
                f"{biller} {state} {code}": n
                for biller, state, code, n in conn.execute(
                    "SELECT biller, state, response_code, count(*) FROM payments "
                    "GROUP BY biller, state, response_code ORDER BY biller, state"
                )
            }
            out["total"] = conn.execute("SELECT count(*) FROM payments").fetchone()[0]
        out["db_bytes"] = db.stat().st_size if db.exists() else 0
        return out

    def hub_log_bytes(self) -> int:
        log = self.hub_dir / "hub.log"
        return log.stat().st_size if log.exists() else 0

    def stop_hub(self) -> None:
        if self.hub is not None:
            self.procs.stop(self.hub, signal.SIGTERM, timeout=30)
            self.hub = None


#: Leaf frames of a thread that waits but that py-spy does not mark idle: a pool
#: thread blocked on its work queue (``SimpleQueue.get`` is C, so ``_worker`` is the
#: leaf). The event loop's epoll wait is marked idle by py-spy itself.
IDLE_LEAVES = {("_worker", "concurrent/futures/thread.py")}


def by_thread(path: Path, top: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per thread: samples, waiting samples, top self time; and the top over all busy samples.

    Shares are of busy samples (waiting leaves of :data:`IDLE_LEAVES` left out), so
    that a thread pool waiting for work does not look like the hottest function.
    """
    doc = json.loads(path.read_text("utf-8"))
    frames = doc["shared"]["frames"]

    def key(i: int) -> tuple[str, str]:
        f = frames[i]
        file = f.get("file", "") or ""
        for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
            j = file.find(marker)
            if j >= 0:
                file = file[j + len(marker) :]
                break
        return f.get("name", "?"), file

    threads = []
    every: dict[tuple[str, str], float] = {}
    total_busy = 0.0
    for prof in doc.get("profiles", []):
        if prof.get("type") != "sampled":
            continue
        weights = prof.get("weights") or [1.0] * len(prof["samples"])
        mine: dict[tuple[str, str], float] = {}
        waiting = busy = 0.0
        for stack, w in zip(prof["samples"], weights, strict=False):
            if not stack:
                continue
            leaf = key(stack[-1])
            if any(leaf[0] == n and leaf[1].endswith(f) for n, f in IDLE_LEAVES):
                waiting += w
                continue
            busy += w
            mine[leaf] = mine.get(leaf, 0.0) + w
            every[leaf] = every.get(leaf, 0.0) + w
        total_busy += busy
        rows = sorted(mine.items(), key=lambda kv: -kv[1])[:top]
        threads.append(
            {
                "thread": prof.get("name", "?"),
                "busy_s": round(busy, 2),
                "waiting_s": round(waiting, 2),
                "top": [
                    {"function": n, "where": f, "share": round(v / busy, 4) if busy else 0.0}
                    for (n, f), v in rows
                ],
            }
        )
    rows = sorted(every.items(), key=lambda kv: -kv[1])[:top]
    overall = [
        {"function": n, "where": f, "share": round(v / total_busy, 4) if total_busy else 0.0}
        for (n, f), v in rows
    ]
    return threads, overall


def _account_stats(accounts: list[Any]) -> dict[str, int]:
    active = [x for x in accounts if x.status == "active"]
    return {
        "accounts": len(accounts),
        "open_bills_payable": sum(len(x.bills) for x in active),
        "rows": sum(len(x.bills) + len(x.paid_bills) + len(x.cancelled_bills) for x in accounts),
    }


def _perf_counts(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text("utf-8", "replace").splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:"):
                with contextlib.suppress(ValueError):
                    out[parts[2].split("sys_enter_")[-1]] = int(parts[0])
    return out


def _phase(
    name: str,
    cmd: list[str],
    summary: dict[str, Any],
    samples: list[tuple[float, dict[str, int | None], tuple[int, int] | None]],
    t_exit: float,
    watched: list[str],
) -> Phase:
    """CPU over the load's measured window (wall-clock times the load reports).

    The load reports its window as epoch times and its own CPU in it (process
    time); the other processes' CPU comes from the samples inside the window.
    Without a reported window: about the ``seconds`` before the load exited.
    """
    seconds = float(summary.get("seconds") or 0.0)
    window = summary.get("window") or {}
    if "epoch_start" in window:
        lo, hi = float(window["epoch_start"]), float(window["epoch_end"])
    else:
        lo, hi = t_exit - seconds - 0.2, t_exit - 0.3
    inside = [s for s in samples if lo <= s[0] <= hi] or samples[-2:]
    cores: dict[str, float | None] = {k: None for k in [*watched, "load"]}
    machine = others = None
    dt = 0.0
    if len(inside) >= 2:
        first, last = inside[0], inside[-1]
        dt = last[0] - first[0]
        for k in cores:
            a, b = first[1].get(k), last[1].get(k)
            if a is not None and b is not None and dt > 0:
                cores[k] = (b - a) / CLK_TCK / dt
        if first[2] is not None and last[2] is not None:
            busy = last[2][0] - first[2][0]
            total = last[2][1] - first[2][1]
            if total:
                machine = busy / total
                ncpu = len(_cpus())
                others = max(0.0, machine * ncpu - sum(v or 0.0 for v in cores.values()))
    if "cpu_s" in window and window["epoch_end"] > window["epoch_start"]:
        span = float(window["epoch_end"]) - float(window["epoch_start"])
        cores["load"] = float(window["cpu_s"]) / span
    return Phase(name, cmd, summary, cores, dt, machine, others)


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


# --------------------------------------------------------------------------- report


def _us(x: float | None) -> str:
    return "    n/a" if x is None else f"{x:7.1f}"


def _pc(x: float | None) -> str:
    return "  n/a" if x is None else f"{x * 100:4.0f}%"


def _row(label: str, ph: Phase, extra: str = "") -> str:
    s = ph.summary
    return (
        f"  {label:<34} {ph.throughput:9.0f} {s.get('p50_ms', 0):8.2f} {s.get('p99_ms', 0):8.2f}"
        f"  {_pc(ph.cpu_cores.get('hub') or ph.cpu_cores.get('server'))}"
        f" {_us(ph.us_per_msg('hub') or ph.us_per_msg('server'))}"
        f"  {_pc(ph.cpu_cores.get('load'))} {_us(ph.us_per_msg('load'))}"
        f"  {_pc(ph.others)}{extra}"
    )


def _checks(ph: Phase) -> list[str]:
    s = ph.summary
    out = []
    if s.get("unexpected_total"):
        out.append(f"[{ph.name}] answers with an unexpected DE 39: {s.get('unexpected')}")
    for key in ("rrn_mismatch", "rrn_missing", "unmatched", "malformed", "failed"):
        if s.get(key):
            out.append(f"[{ph.name}] {key}: {s[key]}")
    if ph.others is not None and ph.others > 0.15:
        out.append(f"[{ph.name}] other processes took {ph.others * 100:.0f} % of a core: disturbed")
    return out


def report(
    b: Bench,
    argv: list[str],
    sweep: list[Phase],
    codec: tuple[Phase, Phase],
    lat: Phase,
    rest: tuple[Phase, dict[str, Any], Phase],
    profs: list[dict[str, Any]],
    mil: dict[str, Any] | None,
    journal: dict[str, Any],
) -> dict[str, Any]:
    a = b.args
    best = max(sweep, key=lambda p: p.throughput)
    echo, cmix = codec
    ratio = best.throughput / echo.throughput if echo.throughput else None
    ratio_mix = best.throughput / cmix.throughput if cmix.throughput else None
    hub1, direct, hub2 = rest

    def kind_p50(summary: dict[str, Any], kind: str) -> float | None:
        v = (summary.get("by_kind") or {}).get(kind, {}).get("p50_ms")
        return float(v) if v is not None else None

    adds: dict[str, float | None] = {}
    for kind in ("inquiry", "payment"):
        hp = [kind_p50(h.summary, kind) for h in (hub1, hub2)]
        hv = [x for x in hp if x is not None]
        dp = kind_p50(direct, kind)
        adds[kind] = (sum(hv) / len(hv) - dp) if hv and dp is not None else None
    hub_all = (hub1.summary["p50_ms"] + hub2.summary["p50_ms"]) / 2
    adds["all"] = hub_all - float(direct["p50_ms"])

    groups = []
    for ph in [*sweep, *([mil["phase"]] if mil else [])]:
        syncs = sum(ph.syncs.values())
        pay = sum((ph.summary.get("all_codes") or {}).get("payment", {}).values())
        if syncs:
            groups.append(
                {
                    "phase": ph.name,
                    "payments": pay,
                    "syncs": syncs,
                    "payments_per_sync": round(pay / syncs, 2),
                    "journal_ops_per_sync": round(2 * pay / syncs, 2),
                }
            )

    data: dict[str, Any] = {
        "command": argv,
        "python": sys.version.split()[0],
        "cpus": len(_cpus()),
        "today": b.today.isoformat(),
        "setup": {
            **b.timings,
            "batch": b.batch_stats,
            "rest": b.rest_stats,
        },
        "phases": {
            ph.name: {
                "command": ph.command,
                "summary": ph.summary,
                "cpu_cores": ph.cpu_cores,
                "us_per_msg": {k: ph.us_per_msg(k) for k in ph.cpu_cores},
                "others_cores": ph.others,
                "syncs": ph.syncs,
            }
            for ph in [*sweep, echo, cmix, lat, hub1, hub2]
        },
        "rest_direct": direct,
        "best_in_flight": best.summary.get("in_flight"),
        "ratios": {"batch_over_codec_echo": ratio, "batch_over_codec_mix": ratio_mix},
        "hub_adds_ms_p50": adds,
        "journal_groups": groups,
        "journal": journal,
        "hub_log_bytes": b.hub_log_bytes(),
        "profile": profs,
    }
    if mil:
        ph = mil["phase"]
        data["million"] = {
            "summary": ph.summary,
            "rss_before_kb": mil["before"],
            "rss_after_kb": mil["after"],
            "rss_series_kb": ph.rss_series,
            "us_per_msg": {k: ph.us_per_msg(k) for k in ph.cpu_cores},
            "wall_s": ph.wall_s,
        }
    warnings = [w for ph in [*sweep, echo, lat, hub1, hub2] for w in _checks(ph)]
    if mil:
        warnings += _checks(mil["phase"])
    data["warnings"] = warnings
    if a.json:
        print(json.dumps(data, default=str))
        return data

    o: list[str] = []
    o.append(f"command: {shlex.join(argv)}")
    o.append(
        f"cpus: {len(_cpus())}   python {data['python']}   today {b.today}   links {a.links}"
        f"   {a.duration:g} s per phase (+{a.warmup:g} s warm-up)   payment share"
        f" {a.payment_share:g}"
    )
    o.append(
        f"batch biller: {b.batch_stats['accounts']} accounts, {b.batch_stats['rows']} rows in its"
        f" bills file ({b.timings['bills_file_s']:.0f} s to write; hub ready after"
        f" {b.timings['hub_start_s']:.0f} s)   REST biller: {b.rest_stats['accounts']} accounts"
    )
    o.append(f"load:  {shlex.join(best.command[3:])}")
    o.append("")
    o.append(
        f"  {'':<34} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8}  {'server CPU, µs/msg':>18}"
        f"  {'load CPU, µs/msg':>16}  others"
    )
    o.append(_row("(b) codec limit, echo", echo))
    o.append(_row("(b) codec limit, same mix", cmix))
    for ph in sweep:
        o.append(_row(f"batch mix max, {ph.summary['in_flight']} in flight", ph))
    rate = float(lat.summary.get("rate") or 0)
    o.append(_row(f"batch mix at {a.latency_fraction:.0%} ({rate:.0f}/s, open)", lat))
    o.append(_row(f"REST mix via hub, {a.rest_concurrency} in flight", hub1))
    o.append(_row("REST mix via hub again", hub2))
    o.append(
        f"  {'REST biller direct (aiohttp)':<34} {direct['throughput_per_s']:9.0f}"
        f" {direct['p50_ms']:8.2f} {direct['p99_ms']:8.2f}   (biller CPU"
        f" {_pc((direct.get('_cpu') or {}).get('biller'))})"
    )
    o.append("")
    o.append("per kind, p50 / p99 ms:")
    for label, s in (
        ("batch max", best.summary),
        ("batch 80 %", lat.summary),
        ("REST via hub", hub1.summary),
        ("REST via hub again", hub2.summary),
        ("REST direct", direct),
    ):
        parts = []
        for kind, v in (s.get("by_kind") or {}).items():
            parts.append(
                f"{kind} {v.get('answered')} × {v['p50_ms']:.2f} / {v['p99_ms']:.2f}"
                f" codes {v.get('codes') or v.get('statuses')}"
            )
        o.append(f"  {label:<20} " + "; ".join(parts))
    o.append("")
    o.append("ratios and aims:")
    o.append(
        f"  batch e2e / codec limit (echo): {_ratio(ratio)}   (same mix: {_ratio(ratio_mix)})"
        f"   aim >= {THROUGHPUT_AIM:.0%}: {'yes' if ratio and ratio >= THROUGHPUT_AIM else 'NO'}"
    )
    o.append(
        "    = the whole hub (pipeline, batch store, durable journal) keeps at least half of"
        " the rate at which its bare TLS + codec layer alone could answer"
    )
    p99 = float(lat.summary.get("p99_ms") or 0)
    o.append(
        f"  batch p99 at {a.latency_fraction:.0%} of max: {p99:.2f} ms   aim < {P99_AIM_MS:g} ms:"
        f" {'yes' if p99 < P99_AIM_MS else 'NO'}   (p50 {lat.summary.get('p50_ms')} ms;"
        f" achieved {lat.throughput:.0f}/s of {rate:.0f}/s asked)"
    )
    o.append(
        "    = at a steady load below saturation, 99 % of answers, each payment durably"
        " journaled first, leave within that time"
    )
    fmt = {k: ("n/a" if v is None else f"{v:.2f} ms") for k, v in adds.items()}
    o.append(
        f"  hub adds {fmt['all']} at p50 to the REST biller (inquiry {fmt['inquiry']},"
        f" payment {fmt['payment']})   aim < {HUB_ADDS_AIM_MS:g} ms:"
        f" {'yes' if adds['all'] is not None and adds['all'] < HUB_ADDS_AIM_MS else 'NO'}"
    )
    o.append(
        "    = what the switch waits beyond the biller's own answer time: TLS, codec,"
        " pipeline, journal commit (payments), the hub's HTTP client"
    )
    o.append("")
    o.append("CPU µs per message (from /proc over each measured window):")
    for ph in [best, lat, hub1]:
        o.append(
            f"  {ph.name:<16} hub {_us(ph.us_per_msg('hub'))}   load {_us(ph.us_per_msg('load'))}"
            + (
                f"   REST biller {_us(ph.us_per_msg('biller'))}"
                if ph.cpu_cores.get("biller")
                else ""
            )
        )
    o.append(
        f"  codec server (b): {_us(echo.us_per_msg('server'))} (echo)"
        f"  {_us(cmix.us_per_msg('server'))} (mix)"
    )
    if groups:
        o.append("")
        o.append("journal group commit (fsync+fdatasync of the hub, counted by perf):")
        for g in groups:
            o.append(
                f"  {g['phase']:<16} {g['payments']} payments, {g['syncs']} syncs:"
                f" {g['payments_per_sync']} payments ({g['journal_ops_per_sync']} journal writes)"
                " per commit"
            )
    o.append(f"hub log: {b.hub_log_bytes() / 1e6:.1f} MB at info level (one line per message)")
    o.append(
        f"journal after the run: {journal.get('total')} payment rows "
        f"{journal.get('payments')}  ({journal.get('db_bytes', 0) / 1e6:.1f} MB)"
    )
    if mil:
        ph = mil["phase"]
        s = ph.summary
        bkb, akb = mil["before"].get("VmRSS", 0), mil["after"].get("VmRSS", 0)
        o.append("")
        o.append(
            f"million: {s.get('total_answered')} answered in {ph.wall_s:.0f} s wall"
            f" ({ph.throughput:.0f} msg/s, p50 {s.get('p50_ms')} ms, p99 {s.get('p99_ms')} ms),"
            f" codes {s.get('all_codes')}"
        )
        o.append(
            f"  hub VmRSS before {bkb / 1024:.1f} MiB, after {akb / 1024:.1f} MiB"
            f" (+{(akb - bkb) / 1024:.1f} MiB; peak VmHWM {mil['after'].get('VmHWM', 0) / 1024:.1f}"
            f" MiB)   CPU µs/msg: hub {_us(ph.us_per_msg('hub'))}, load"
            f" {_us(ph.us_per_msg('load'))}"
        )
        series = ph.rss_series
        if series:
            step = max(1, len(series) // 10)
            o.append(
                "  VmRSS over time: "
                + ", ".join(f"{t:.0f}s {kb / 1024:.0f}M" for t, kb in series[::step])
            )
    for prof in profs:
        o.append("")
        if prof.get("error"):
            o.append(f"profile: {prof['error']}")
        else:
            o.append(
                f"profile of the hub under the {prof['load']} (py-spy attached;"
                f" {prof['throughput_under_py_spy']:.0f} msg/s under sampling): {prof['file']}"
            )
            o.append("  top self time over all the hub's busy samples (waits left out):")
            o += [
                f"    {r['share'] * 100:5.1f}%  {r['function']}  ({r['where']})"
                for r in prof["busy_self"]
            ]
            for t in prof["threads"]:
                o.append(
                    f"  thread {t['thread']}: busy {t['busy_s']:.1f} s, waiting"
                    f" {t['waiting_s']:.1f} s; top: "
                    + ", ".join(f"{r['function']} {r['share'] * 100:.0f}%" for r in t["top"][:5])
                )
            o.append("  py-spy's own summary (its 'idle' detection misses pool waits):")
            o += prof["lines"]
    if warnings:
        o.append("")
        o += [f"warning: {w}" for w in warnings]
    print("\n".join(o))
    return data


def compare_run(bench: Bench, shown: list[str]) -> int:
    """Several hubs side by side: all started at once, then taking turns phase by phase.

    Each of ``--repeat`` rounds runs, for every hub in turn (the order reversed every
    other round), the batch mix closed loop at each ``--sweep`` in-flight, the batch mix
    open loop at ``--latency-fraction`` of that hub's maximum in the same round, and
    the REST mix. Interleaving spreads the machine's noise over all hubs alike; the
    table gives the median of the rounds. The codec limit (same mix, at the first
    ``--sweep`` in-flight) is measured before the first round and after the last.
    """
    a = bench.args
    phases = set(a.phases)
    states: dict[str, dict[str, Any]] = {}
    for label, src in a.hub_src:
        bench.start_hub(label, src)
        states[label] = bench.save_hub()
    codecs: list[Phase] = []
    if "codec" in phases:
        codecs.append(bench.codec_limit(a.sweep[0])[1])
    got: dict[str, dict[str, list[Phase]]] = {label: {} for label in states}
    labels = list(states)
    for r in range(a.repeat):
        for label in labels if r % 2 == 0 else labels[::-1]:
            bench.load_hub(states[label])
            mine = got[label]
            if "batch" in phases:
                sweep = bench.batch_sweep()
                for ph in sweep:
                    mine.setdefault(f"batch max {ph.summary['in_flight']}", []).append(ph)
                best = max(sweep, key=lambda p: p.throughput)
                if "latency" in phases:
                    mine.setdefault("batch 80 % open", []).append(
                        bench.batch_latency(best.throughput)
                    )
            if "rest" in phases:
                mine.setdefault("REST mix", []).append(bench.rest_once())
            states[label] = bench.save_hub()
    if "codec" in phases:
        codecs.append(bench.codec_limit(a.sweep[0])[1])
    for label in labels:
        bench.load_hub(states[label])
        bench.stop_hub()
    limit = statistics.fmean(c.throughput for c in codecs) if codecs else 0.0
    codec_us = [u for c in codecs if (u := c.us_per_msg("server")) is not None]
    rows: list[dict[str, Any]] = []
    for label in labels:
        for key, runs in got[label].items():
            rows.append(_median_row(label, key, runs, limit))
    warnings = [
        w for label in labels for runs in got[label].values() for ph in runs for w in _checks(ph)
    ]
    data = {
        "command": shown,
        "cpus": len(_cpus()),
        "codec_mix": [
            {"msg_s": c.throughput, "us_per_msg": c.us_per_msg("server"), "others": c.others}
            for c in codecs
        ],
        "rows": rows,
        "warnings": warnings,
    }
    if a.json:
        print(json.dumps(data, default=str))
        return 0
    o = [
        f"command: {shlex.join(shown)}",
        f"cpus: {len(_cpus())}   {a.repeat} rounds, hubs interleaved   {a.duration:g} s per"
        f" phase   REST mix at {a.rest_concurrency} in flight",
        "codec limit (b), same mix, at "
        f"{a.sweep[0]} in flight: "
        + ", ".join(
            f"{c.throughput:.0f} msg/s ({_us(c.us_per_msg('server')).strip()} µs/msg,"
            f" others {_pc(c.others).strip()})"
            for c in codecs
        )
        + (
            f"; mean {limit:.0f} msg/s, {statistics.median(codec_us):.1f} µs/msg"
            if codec_us
            else ""
        ),
        "",
        "median of the rounds (min-max of hub µs/msg):",
        f"  {'hub':<10} {'phase':<18} {'msg/s':>8} {'/codec':>7} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'hub µs/msg':>11} {'(range)':>15} {'others':>7}",
    ]
    for r in rows:
        o.append(
            f"  {r['hub']:<10} {r['phase']:<18} {r['msg_s']:8.0f} {_ratio(r['ratio']):>7}"
            f" {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {_us(r['hub_us']):>11}"
            f" {r['hub_us_range']:>15} {_pc(r['others']):>7}"
        )
    if warnings:
        o.append("")
        o += [f"warning: {w}" for w in warnings]
    print("\n".join(o))
    return 0


def _median_row(label: str, key: str, runs: list[Phase], limit: float) -> dict[str, Any]:
    def med(values: list[float | None]) -> float:
        vals = [v for v in values if v is not None]
        return statistics.median(vals) if vals else 0.0

    us = [u for ph in runs if (u := ph.us_per_msg("hub")) is not None]
    msg_s = med([ph.throughput for ph in runs])
    return {
        "hub": label,
        "phase": key,
        "rounds": len(runs),
        "msg_s": msg_s,
        "ratio": msg_s / limit if limit else None,
        "p50_ms": med([ph.summary.get("p50_ms") for ph in runs]),
        "p99_ms": med([ph.summary.get("p99_ms") for ph in runs]),
        "hub_us": med(list(us)) if us else None,
        "hub_us_range": f"{min(us):.0f}-{max(us):.0f}" if us else "",
        "others": med([ph.others for ph in runs]),
        "all_msg_s": [round(ph.throughput) for ph in runs],
        "all_hub_us": [round(u) for u in us],
    }


def _skipped(name: str, in_flight: int) -> Phase:
    """A phase left out by ``--phases``: zeros, so that the report still prints."""
    summary = {"throughput_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "in_flight": in_flight}
    return Phase(name, [], summary, {}, 0.0, None, None)


def _headline(
    sweep: list[Phase],
    codec: tuple[Phase, Phase],
    lat: Phase,
    rest: tuple[Phase, dict[str, Any], Phase],
) -> dict[str, Any]:
    """What the aims of issue 10 compare, for one hub: rates over the codec limit (mix)."""
    best = max(sweep, key=lambda p: p.throughput)
    limit = codec[1].throughput
    rows = {}
    for key, ph in (("batch max", best), ("batch 80 % open", lat), ("REST mix", rest[0])):
        rows[key] = {
            "msg_s": ph.throughput,
            "ratio": ph.throughput / limit if limit and ph.throughput else None,
            "p50_ms": ph.summary.get("p50_ms"),
            "p99_ms": ph.summary.get("p99_ms"),
            "hub_us": ph.us_per_msg("hub"),
            "others": ph.others,
        }
    second = rest[2]
    if second.throughput:
        rows["REST mix again"] = {
            "msg_s": second.throughput,
            "ratio": second.throughput / limit if limit else None,
            "p50_ms": second.summary.get("p50_ms"),
            "p99_ms": second.summary.get("p99_ms"),
            "hub_us": second.us_per_msg("hub"),
            "others": second.others,
        }
    return {"codec_mix_msg_s": limit, "codec_mix_us": codec[1].us_per_msg("server"), "rows": rows}


def compare(results: list[tuple[str, dict[str, Any]]]) -> str:
    """One table of every hub's headline numbers, against the same codec limit."""
    first = results[0][1]
    o = [
        "",
        f"comparison (codec limit, same mix: {first['codec_mix_msg_s']:.0f} msg/s,"
        f" {_us(first['codec_mix_us']).strip()} µs/msg):",
        f"  {'hub':<10} {'phase':<18} {'msg/s':>8} {'/codec':>7} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'hub µs/msg':>11} {'others':>7}",
    ]
    for label, h in results:
        for key, r in h["rows"].items():
            if not r["msg_s"]:
                continue
            o.append(
                f"  {label:<10} {key:<18} {r['msg_s']:8.0f} {_ratio(r['ratio']):>7}"
                f" {r['p50_ms'] or 0:8.2f} {r['p99_ms'] or 0:8.2f} {_us(r['hub_us']):>11}"
                f" {_pc(r['others']):>7}"
            )
    return "\n".join(o)


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/e2e.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--links", type=int, default=2)
    p.add_argument(
        "--sweep",
        default="64,256",
        help="in-flight values for the maximum batch rate (comma-separated)",
    )
    p.add_argument("--payment-share", type=float, default=0.5)
    p.add_argument("--latency-fraction", type=float, default=0.8)
    p.add_argument("--rate-cap", type=int, default=512, help="max outstanding in --rate mode")
    p.add_argument("--batch-accounts", type=int, default=200_000)
    p.add_argument("--rest-accounts", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rest-concurrency", type=int, default=16)
    p.add_argument("--rest-max-concurrency", type=int, default=32, help="the hub's pool to it")
    p.add_argument("--million", action="store_true", help="also run 1,000,000 messages")
    p.add_argument("--million-count", type=int, default=1_000_000)
    p.add_argument("--million-limit", type=float, default=1800.0, help="seconds at most")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--ready-timeout", type=float, default=300.0, help="hub start-up, seconds")
    p.add_argument(
        "--phases",
        default=None,
        help=f"comma-separated subset of {','.join(PHASES)} (default: all but rest-profile;"
        " 'latency' needs 'batch')",
    )
    p.add_argument(
        "--hub-src",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="run the hub from this src/ folder (repeatable: each hub in turn, fresh journal"
        " and store, the same billers, load and codec limit; then a comparison)",
    )
    p.add_argument("--repeat", type=int, default=1, help="rounds, with several --hub-src (medians)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    if args.phases is None:
        args.phases = [
            x for x in PHASES if x != "rest-profile" and (args.profile or x != "profile")
        ]
    else:
        args.phases = [x for x in str(args.phases).split(",") if x]
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown:
        p.error(f"unknown phases {unknown}; known: {', '.join(PHASES)}")
    if "latency" in args.phases and "batch" not in args.phases:
        p.error("the latency phase needs the batch phase (its rate is 80 % of the maximum)")
    hubs = []
    for item in args.hub_src:
        label, _, src = item.rpartition("=")
        hubs.append((label or Path(src).resolve().parent.name, src))
    args.hub_src = hubs
    args.sweep = [int(x) for x in str(args.sweep).split(",") if x]
    if not args.sweep or args.duration <= 0:
        p.error("--sweep needs at least one value and --duration must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    shown = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *raw]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_terminate)
    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="billhub-e2e-"))
    bench = Bench(args, procs, workdir)
    phases = set(args.phases)
    try:
        bench.setup()
        if len(args.hub_src) > 1:
            return compare_run(bench, shown)
        codec: tuple[Phase, Phase] | None = None
        results: list[tuple[str, dict[str, Any]]] = []
        failed = False
        for label, src in args.hub_src or [("hub", None)]:
            bench.start_hub(label, src)
            if "batch" in phases:
                sweep = bench.batch_sweep()
            else:
                sweep = [_skipped("batch-max", args.sweep[0])]
            best = max(sweep, key=lambda p: p.throughput)
            best_inf = int(best.summary["in_flight"])
            if codec is None:  # once, for every hub
                if "codec" in phases:
                    codec = bench.codec_limit(best_inf)
                else:
                    codec = (_skipped("codec-echo", best_inf), _skipped("codec-mix", best_inf))
            lat = (
                bench.batch_latency(best.throughput)
                if "latency" in phases
                else _skipped("batch-80pct", args.rate_cap)
            )
            if "rest" in phases:
                rest = bench.rest()
            else:
                rest = (
                    _skipped("rest-hub", args.rest_concurrency),
                    {"throughput_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0},
                    _skipped("rest-hub-2", args.rest_concurrency),
                )
            profs = []
            if "profile" in phases:
                profs.append(bench.profile(best_inf))
            if "rest-profile" in phases:
                profs.append(bench.profile(args.rest_concurrency, REST))
            mil = bench.million(best_inf) if args.million else None
            bench.stop_hub()
            journal = bench.journal_counts()
            if args.hub_src and not args.json:
                print(f"\n==================== hub {label}: {src}")
            data = report(bench, shown, sweep, codec, lat, rest, profs, mil, journal)
            failed = failed or bool(data["warnings"])
            results.append((label, _headline(sweep, codec, lat, rest)))
        if len(results) > 1 and not args.json:
            print(compare(results))
        return 1 if failed else 0
    except KeyboardInterrupt:
        note("interrupted; stopping every process")
        return 130
    except RuntimeError as exc:
        note(f"bench/e2e.py: error: {exc}")
        return 1
    finally:
        procs.kill_all()
        if args.keep:
            note(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
