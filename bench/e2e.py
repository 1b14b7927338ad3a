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
5. ``profile`` (on unless ``--no-profile``): the batch mix again with ``py-spy
   record`` attached to the hub; the top functions by self time.
6. ``rest-profile`` (only when named in ``--phases``): the same under the REST mix.
7. ``--million``: the batch mix until ``--million-count`` answers, with the hub's
   VmRSS (``/proc/PID/status``) before, during and after.

``--phases`` runs a subset of them. ``--hub-src LABEL=DIR`` runs the hub from another
``src/`` folder; with several (or ``--repeat`` above 1) every hub is started at once,
fresh, and they take turns phase by phase over ``--repeat`` rounds, the order
reversed every other round, so that the shared machine's noise falls on all alike:
one table of medians, against the codec limit measured before the first round and
after the last (:func:`compare_run`).

CPU per message of the hub, the load (and the REST biller) comes from ``/proc`` over
the load's measured window, as in ``bench/link.py``. Usage::

    .venv/bin/python bench/e2e.py [--duration 10] [--sweep 64,128,256] [--million]
                                  [--json] [--keep] [--no-profile] [--phases P,Q]
                                  [--hub-src LABEL=DIR ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billhub.simulator.demo_data import generate_accounts, write_bills_file
from harness import (  # bench/ is sys.path[0] when run as a script
    BUILD,
    HERE,
    HubConfig,
    Phase,
    Procs,
    Workload,
    batch_biller,
    cpus,
    dev_certs,
    exit_code,
    find_py_spy,
    load_cmd,
    median,
    note,
    rest_biller,
    rss_kb,
    run_load,
    session,
    start_hub,
    start_rest_biller,
    tail,
    wait_for_line,
)
from speedscope import render, summarise

SERVERS = HERE / "servers.py"
REST_DIRECT = HERE / "rest_direct.py"
REST, BATCH = "100001", "100002"
TOKEN = "bench-token-7c1e"
THROUGHPUT_AIM = 0.50  # batch e2e throughput / codec limit
P99_AIM_MS = 10.0  # p99 at 80 % of the maximum rate
HUB_ADDS_AIM_MS = 5.0  # what the hub may add to a REST biller's p50
PHASES = ("batch", "codec", "latency", "rest", "profile", "rest-profile")


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
        self.rss_start: dict[str, int] = {}
        self.codec_pid: int | None = None
        self.label = "hub"  # the hub under test, when --hub-src names several
        self.src: str | None = None  # its src/ folder (None: the installed package)
        self.hub_dir = workdir
        self.batch: list[Any] = []
        self.accounts_s = 0.0

    # ----------------------------------------------------------------------- set-up

    def setup(self) -> None:
        """Certificates, the demo subscribers, the REST biller and one hub (the installed one)."""
        self.prepare()
        self.start_hub("hub", None)

    def prepare(self) -> None:
        """What every hub of the run shares: certificates, subscribers, the REST biller."""
        a = self.args
        t0 = time.monotonic()
        dev_certs(self.certs)
        self.batch = generate_accounts("02", a.batch_accounts, a.seed, today=self.today)
        self.batch_stats = _account_stats(self.batch)
        self.rest_stats = _account_stats(
            generate_accounts("01", a.rest_accounts, a.seed, today=self.today)
        )
        self.accounts_s = time.monotonic() - t0
        self.start_biller()

    def start_biller(self) -> None:
        a = self.args
        self.biller, self.biller_port = start_rest_biller(
            self.procs,
            self.workdir,
            token=TOKEN,
            seed=a.seed,
            accounts=a.rest_accounts,
            prefix="01",
            today=self.today,
        )
        note(f"REST biller listening on {self.biller_port}")

    def start_hub(self, label: str, src: str | None) -> None:
        """A fresh hub in ``workdir/label`` (its own journal, inbox and logs) from ``src``,
        its batch store loaded from a new bills file, so every bill is open again."""
        a = self.args
        self.label, self.src = label, src
        self.hub_dir = self.workdir / label
        inbox, outbox = self.hub_dir / "inbox", self.hub_dir / "outbox"
        inbox.mkdir(parents=True)
        outbox.mkdir()
        t0 = time.monotonic()
        write_bills_file(inbox, BATCH, self.batch, day=self.today)
        self.timings["bills_file_s"] = self.accounts_s + time.monotonic() - t0
        note(
            f"[{label}] bills file of {a.batch_accounts} accounts ({self.batch_stats['rows']}"
            f" rows) written in {self.timings['bills_file_s']:.1f} s"
        )
        self.batch_bill = self.batch_account = 0
        hub = start_hub(
            self.procs,
            self.hub_dir,
            "hub",
            self.config(inbox, outbox),
            timeout=a.ready_timeout,
            src=src,
        )
        self.hub, self.hub_port = hub.proc, hub.port
        self.timings["hub_start_s"] = hub.start_s
        self.rss_start = rss_kb(hub.pid)
        note(
            f"[{label}] hub{'' if src is None else ' of ' + src} listening on {self.hub_port}"
            f" after {self.timings['hub_start_s']:.1f} s"
        )

    def hub_config(self, inbox: Path, outbox: Path) -> str:
        """The hub's TOML, for ``bench/memsnap.py``, which starts the hub its own way."""
        return self.config(inbox, outbox).toml()

    def config(self, inbox: Path, outbox: Path) -> HubConfig:
        a = self.args
        return HubConfig(
            self.certs,
            self.hub_dir / "journal.db",
            [
                rest_biller(
                    REST,
                    "Damascus (REST demo biller)",
                    f"http://127.0.0.1:{self.biller_port}",
                    TOKEN,
                    max_concurrency=a.rest_max_concurrency,
                ),
                batch_biller(BATCH, "Rural Damascus (batch)", inbox, outbox),
            ],
            comment="Written by bench/e2e.py: a loopback hub, a REST and a batch biller.",
        )

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
        workload = None
        if kind != "echo":
            rest = biller == REST
            self.rrn_tag += 1
            workload = Workload(
                biller,
                a.rest_accounts if rest else a.batch_accounts,
                a.seed,
                "01" if rest else "02",
                self.today,
                a.payment_share,
                self.rrn_tag,
                (self.rest_bill if rest else self.batch_bill) if offsets else None,
                (self.rest_account if rest else self.batch_account) if offsets else None,
            )
        return load_cmd(
            port,
            self.certs,
            kind=kind,
            links=a.links,
            in_flight=in_flight,
            duration=duration,
            warmup=a.warmup,
            workload=workload,
            rate=rate,
            count=count,
            expect=expect,
        )

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
        return run_load(
            self.procs,
            self.workdir,
            f"{self.label}:{name}" if self.args.hub_src and not name.startswith("codec") else name,
            [cmd],
            watch,
            limit_s=limit_s,
            count_syncs=count_syncs,
            rss_every=rss_every,
        )

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

    @contextlib.contextmanager
    def codec_server(self) -> Iterator[int]:
        """``bench/servers.py --mode codec`` for the block; yields its port."""
        log, err = self.workdir / "codec-server.log", self.workdir / "codec-server.err"
        cmd = [sys.executable, str(SERVERS), "--mode", "codec", "--certs", str(self.certs)]
        server = self.procs.start_logged(cmd, log, err)
        try:
            self.codec_pid = server.pid
            yield int(wait_for_line(server, log, err, "LISTENING", 30).split()[1])
        finally:
            self.procs.stop(server, signal.SIGTERM)

    def codec_run(self, port: int, kind: str, in_flight: int) -> Phase:
        a = self.args
        if kind == "echo":
            cmd = self.load_cmd(port, "echo", in_flight=in_flight, duration=a.duration)
        else:  # the REST biller's subscribers, every answer 00: the same mix as the hub's
            cmd = self.load_cmd(
                port,
                "mix",
                in_flight=in_flight,
                duration=a.duration,
                biller=REST,
                expect="00",
                offsets=False,
            )
        watch: dict[str, int | None] = {"server": self.codec_pid}
        return self.run(f"codec-{kind}", cmd, watch, limit_s=a.duration + 120)

    def codec_limit(self, in_flight: int) -> tuple[Phase, Phase]:
        """The codec limit (b): echo tests, then the same mix as the hub's."""
        with self.codec_server() as port:
            return self.codec_run(port, "echo", in_flight), self.codec_run(port, "mix", in_flight)

    def codec_mix(self, in_flight: int) -> Phase:
        """The codec limit with the same mix only (what :func:`compare_run` divides by)."""
        with self.codec_server() as port:
            return self.codec_run(port, "mix", in_flight)

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

    _HUB_STATE = (
        "hub", "hub_port", "hub_dir", "label", "src", "batch_bill", "batch_account",
        "rss_start",
    )  # fmt: skip

    def save_hub(self) -> dict[str, Any]:
        """The running hub's state, so that several hubs can take turns (``--hub-src``);
        the REST biller is shared, so where its bills are is not a hub's."""
        return {k: getattr(self, k) for k in self._HUB_STATE}

    def load_hub(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def rest_once(self, name: str = "rest-hub") -> Phase:
        """The REST mix through the hub once (without the biller asked directly)."""
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
        """The mix against ``biller`` with ``py-spy record`` attached to the hub."""
        a = self.args
        what = "rest" if biller == REST else "batch"
        py_spy = find_py_spy()
        if py_spy is None:
            return {"error": "py-spy is not installed", "hub": self.label, "load": what}
        assert self.hub is not None
        BUILD.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_file = BUILD / f"e2e-{self.label}-{what}-profile-{stamp}.speedscope.json"
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
                    err = f"py-spy cannot attach: {tail(spylog, 5)}"
                    return {"error": err, "hub": self.label, "load": what}
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
            self.check_alive()
        finally:
            self.procs.stop(spy, signal.SIGINT, timeout=20)
        if not out_file.exists():
            err = f"py-spy wrote no profile: {tail(spylog, 5)}"
            return {"error": err, "hub": self.label, "load": what}
        s = summarise(out_file, a.top)
        threads, busy = by_thread(out_file, a.top)
        return {
            "hub": self.label,
            "load": f"{what} mix, {in_flight} in flight",
            "file": str(out_file),
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


def report(
    b: Bench,
    argv: list[str],
    sweep: list[Phase],
    codec: tuple[Phase, Phase] | None,
    lat: Phase | None,
    rest: tuple[Phase, dict[str, Any], Phase] | None,
    profs: list[dict[str, Any]],
    mil: dict[str, Any] | None,
    journal: dict[str, Any],
) -> dict[str, Any]:
    """One hub's report; a phase left out by ``--phases`` is ``None`` (``sweep``: empty)
    and so are its rows and the aims that need it."""
    a = b.args
    best = max(sweep, key=lambda p: p.throughput) if sweep else None
    echo, cmix = codec if codec else (None, None)
    ratio = ratio_mix = None
    if best and echo and cmix:
        ratio = best.throughput / echo.throughput if echo.throughput else None
        ratio_mix = best.throughput / cmix.throughput if cmix.throughput else None
    hub1, direct, hub2 = rest if rest else (None, None, None)

    def kind_p50(summary: dict[str, Any], kind: str) -> float | None:
        v = (summary.get("by_kind") or {}).get(kind, {}).get("p50_ms")
        return float(v) if v is not None else None

    adds: dict[str, float | None] = {}
    if hub1 and hub2 and direct:
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
    ran = [ph for ph in [*sweep, echo, cmix, lat, hub1, hub2] if ph is not None]
    data: dict[str, Any] = {
        "command": argv,
        "python": sys.version.split()[0],
        "cpus": cpus(),
        "today": b.today.isoformat(),
        "hub": {"label": b.label, "src": b.src},
        "phases_asked": a.phases,
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
            for ph in ran
        },
        "rest_direct": direct,
        "best_in_flight": best.summary.get("in_flight") if best else None,
        "ratios": {"batch_over_codec_echo": ratio, "batch_over_codec_mix": ratio_mix},
        "hub_adds_ms_p50": adds or None,
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
    warnings = [w for ph in [*sweep, echo, lat, hub1, hub2] if ph for w in ph.warnings()]
    if mil:
        warnings += mil["phase"].warnings()
    data["warnings"] = warnings
    if a.json:
        print(json.dumps(data, default=str))
        return data

    o: list[str] = []
    o.append(f"command: {shlex.join(argv)}")
    o.append(
        f"cpus: {cpus()}   python {data['python']}   today {b.today}   links {a.links}"
        f"   {a.duration:g} s per phase (+{a.warmup:g} s warm-up)   payment share"
        f" {a.payment_share:g}   phases {','.join(a.phases)}"
    )
    o.append(
        f"hub: {b.label} from {b.src or 'the installed package'}   batch biller:"
        f" {b.batch_stats['accounts']} accounts, {b.batch_stats['rows']} rows in its bills file"
        f" ({b.timings['bills_file_s']:.0f} s to write; hub ready after"
        f" {b.timings['hub_start_s']:.0f} s)   REST biller: {b.rest_stats['accounts']} accounts"
    )
    shown = next((ph for ph in [best, hub1, cmix] if ph is not None), None)
    if shown is not None:
        o.append(f"load:  {shlex.join(shown.command[3:])}")
    o.append("")
    o.append(
        f"  {'':<34} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8}  {'server CPU, µs/msg':>18}"
        f"  {'load CPU, µs/msg':>16}  others"
    )
    if echo and cmix:
        o.append(_row("(b) codec limit, echo", echo))
        o.append(_row("(b) codec limit, same mix", cmix))
    for ph in sweep:
        o.append(_row(f"batch mix max, {ph.summary['in_flight']} in flight", ph))
    rate = float(lat.summary.get("rate") or 0) if lat else 0.0
    if lat:
        o.append(_row(f"batch mix at {a.latency_fraction:.0%} ({rate:.0f}/s, open)", lat))
    if hub1 and hub2 and direct:
        o.append(_row(f"REST mix via hub, {a.rest_concurrency} in flight", hub1))
        o.append(_row("REST mix via hub again", hub2))
        o.append(
            f"  {'REST biller direct (aiohttp)':<34} {direct['throughput_per_s']:9.0f}"
            f" {direct['p50_ms']:8.2f} {direct['p99_ms']:8.2f}   (biller CPU"
            f" {_pc((direct.get('_cpu') or {}).get('biller'))})"
        )
    o.append("")
    o.append("per kind, p50 / p99 ms:")
    kinds = (
        ("batch max", best.summary if best else None),
        ("batch 80 %", lat.summary if lat else None),
        ("REST via hub", hub1.summary if hub1 else None),
        ("REST via hub again", hub2.summary if hub2 else None),
        ("REST direct", direct),
    )
    for label, s in kinds:
        if s is None:
            continue
        parts = []
        for kind, v in (s.get("by_kind") or {}).items():
            parts.append(
                f"{kind} {v.get('answered')} × {v['p50_ms']:.2f} / {v['p99_ms']:.2f}"
                f" codes {v.get('codes') or v.get('statuses')}"
            )
        o.append(f"  {label:<20} " + "; ".join(parts))
    o.append("")
    o.append("ratios and aims:")
    if best and echo:
        o.append(
            f"  batch e2e / codec limit (echo): {_ratio(ratio)}   (same mix: {_ratio(ratio_mix)})"
            f"   aim >= {THROUGHPUT_AIM:.0%}:"
            f" {'yes' if ratio and ratio >= THROUGHPUT_AIM else 'NO'}"
        )
        o.append(
            "    = the whole hub (pipeline, batch store, durable journal) keeps at least half of"
            " the rate at which its bare TLS + codec layer alone could answer"
        )
    if lat:
        p99 = float(lat.summary.get("p99_ms") or 0)
        o.append(
            f"  batch p99 at {a.latency_fraction:.0%} of max: {p99:.2f} ms   aim <"
            f" {P99_AIM_MS:g} ms: {'yes' if p99 < P99_AIM_MS else 'NO'}   (p50"
            f" {lat.summary.get('p50_ms')} ms; achieved {lat.throughput:.0f}/s of {rate:.0f}/s"
            " asked)"
        )
        o.append(
            "    = at a steady load below saturation, 99 % of answers, each payment durably"
            " journaled first, leave within that time"
        )
    if adds:
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
    if not (best and echo) and not lat and not adds:
        o.append("  (none: their phases were left out)")
    o.append("")
    o.append("CPU µs per message (from /proc over each measured window):")
    for ph in [best, lat, hub1]:
        if ph is None:
            continue
        o.append(
            f"  {ph.name:<16} hub {_us(ph.us_per_msg('hub'))}   load {_us(ph.us_per_msg('load'))}"
            + (
                f"   REST biller {_us(ph.us_per_msg('biller'))}"
                if ph.cpu_cores.get("biller")
                else ""
            )
        )
    if echo and cmix:
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
        o += _profile_lines(prof, full=True)
    if warnings:
        o.append("")
        o += [f"warning: {w}" for w in warnings]
    print("\n".join(o))
    return data


def _profile_lines(prof: dict[str, Any], *, full: bool) -> list[str]:
    """A profile's top functions (``full``: per thread and py-spy's summary too)."""
    if prof.get("error"):
        return [f"profile of {prof.get('hub')}, {prof.get('load')} mix: {prof['error']}"]
    o = [
        f"profile of the hub{'' if full else ' ' + str(prof['hub'])} under the {prof['load']}"
        f" (py-spy attached; {prof['throughput_under_py_spy']:.0f} msg/s under sampling):"
        f" {prof['file']}",
        "  top self time over all the hub's busy samples (waits left out):",
    ]
    o += [
        f"    {r['share'] * 100:5.1f}%  {r['function']}  ({r['where']})" for r in prof["busy_self"]
    ]
    if not full:
        return o
    for t in prof["threads"]:
        o.append(
            f"  thread {t['thread']}: busy {t['busy_s']:.1f} s, waiting"
            f" {t['waiting_s']:.1f} s; top: "
            + ", ".join(f"{r['function']} {r['share'] * 100:.0f}%" for r in t["top"][:5])
        )
    o.append("  py-spy's own summary (its 'idle' detection misses pool waits):")
    return o + [str(line) for line in prof["lines"]]


def compare_run(bench: Bench, shown: list[str]) -> int:
    """Several hubs side by side (or one, over rounds): all started at once, then taking
    turns phase by phase.

    Each of ``--repeat`` rounds runs, for every hub in turn (the order reversed every
    other round), the batch mix closed loop at each ``--sweep`` in-flight, the batch mix
    open loop at ``--latency-fraction`` of that hub's maximum in the same round, and
    the REST mix. Interleaving spreads the machine's noise over all hubs alike; the
    table gives the median of the rounds. The codec limit (same mix, at the first
    ``--sweep`` in-flight) is measured before the first round and after the last, so
    that a drift of the machine over the run shows. The profile phases, if asked, run
    once per hub after the last round.
    """
    a = bench.args
    phases = set(a.phases)
    states: dict[str, dict[str, Any]] = {}
    for label, src in a.hub_src or [("hub", None)]:
        bench.start_hub(label, src)
        states[label] = bench.save_hub()
    codecs: list[Phase] = []
    if "codec" in phases:
        codecs.append(bench.codec_mix(a.sweep[0]))
    got: dict[str, dict[str, list[Phase]]] = {label: {} for label in states}
    labels = list(states)
    for rnd in range(a.repeat):
        for label in labels if rnd % 2 == 0 else labels[::-1]:
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
    profs: list[dict[str, Any]] = []
    for label in labels:
        bench.load_hub(states[label])
        if "profile" in phases:
            profs.append(bench.profile(a.sweep[0]))
        if "rest-profile" in phases:
            profs.append(bench.profile(a.rest_concurrency, REST))
        states[label] = bench.save_hub()
    if "codec" in phases:
        codecs.append(bench.codec_mix(a.sweep[0]))
    for label in labels:
        bench.load_hub(states[label])
        bench.stop_hub()
    limit = statistics.fmean(c.throughput for c in codecs) if codecs else 0.0
    codec_us = [u for c in codecs if (u := c.us_per_msg("server")) is not None]
    rows = [
        _median_row(label, key, runs, limit) for label in labels for key, runs in got[label].items()
    ]
    warnings = [
        w for label in labels for runs in got[label].values() for ph in runs for w in ph.warnings()
    ]
    data = {
        "command": shown,
        "cpus": cpus(),
        "hubs": {label: states[label]["src"] for label in labels},
        "rounds": a.repeat,
        "phases_asked": a.phases,
        "codec_mix": [
            {"msg_s": c.throughput, "us_per_msg": c.us_per_msg("server"), "others": c.others}
            for c in codecs
        ],
        "rows": rows,
        "profile": profs,
        "warnings": warnings,
    }
    if a.json:
        print(json.dumps(data, default=str))
        return 1 if warnings else 0
    o = [
        f"command: {shlex.join(shown)}",
        f"cpus: {cpus()}   {a.repeat} rounds, hubs interleaved   {a.duration:g} s per"
        f" phase   REST mix at {a.rest_concurrency} in flight",
        "hubs: "
        + ", ".join(f"{k} = {v or 'the installed package'}" for k, v in data["hubs"].items()),
    ]
    if codecs:
        o.append(
            f"codec limit (b), same mix, at {a.sweep[0]} in flight, before and after: "
            + ", ".join(
                f"{c.throughput:.0f} msg/s ({_us(c.us_per_msg('server')).strip()} µs/msg,"
                f" others {_pc(c.others).strip()})"
                for c in codecs
            )
            + (f"; mean {limit:.0f} msg/s, {median(codec_us):.1f} µs/msg" if codec_us else "")
        )
    else:
        o.append("codec limit: not measured (no 'codec' in --phases): /codec is n/a")
    o += [
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
    for prof in profs:
        o.append("")
        o += _profile_lines(prof, full=False)
    if warnings:
        o.append("")
        o += [f"warning: {w}" for w in warnings]
    print("\n".join(o))
    return 1 if warnings else 0


def _median_row(label: str, key: str, runs: list[Phase], limit: float) -> dict[str, Any]:
    def med(values: list[float | None]) -> float:
        return median([v for v in values if v is not None])

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
        "hub_us": median(us) if us else None,
        "hub_us_range": f"{min(us):.0f}-{max(us):.0f}" if us else "",
        "others": med([ph.others for ph in runs]),
        "all_msg_s": [round(ph.throughput) for ph in runs],
        "all_hub_us": [round(u) for u in us],
    }


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
        help=f"comma-separated subset of {','.join(PHASES)} (default: all but rest-profile,"
        " and profile only without --no-profile; 'latency' needs 'batch')",
    )
    p.add_argument(
        "--hub-src",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="run the hub from this src/ folder (repeatable: every hub started fresh, with its"
        " own journal and store, the same billers; they take turns phase by phase, and one"
        " table compares them)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the hubs' turns (above 1, or with several --hub-src: medians in one"
        " table instead of the full report)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    try:
        args.sweep = [int(x) for x in str(args.sweep).split(",") if x]
    except ValueError:
        p.error(f"--sweep takes comma-separated integers, not {args.sweep!r}")
    if not args.sweep or min(args.sweep) <= 0 or args.duration <= 0:
        p.error("--sweep needs at least one positive value and --duration must be positive")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.phases is None:
        args.phases = [x for x in PHASES if x != "rest-profile"]
    else:
        args.phases = list(dict.fromkeys(x.strip() for x in str(args.phases).split(",") if x))
    if not args.profile:
        args.phases = [x for x in args.phases if x != "profile"]
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown or not args.phases:
        p.error(f"--phases: unknown {unknown or 'none given'}; known: {', '.join(PHASES)}")
    if "latency" in args.phases and "batch" not in args.phases:
        p.error("the latency phase needs the batch phase (its rate is a share of the maximum)")
    hubs: list[tuple[str, str]] = []
    for item in args.hub_src:
        label, _, src = item.rpartition("=")
        label = label or Path(src).resolve().parent.name
        if not re.fullmatch(r"[A-Za-z0-9._-]+", label):
            p.error(f"--hub-src {item!r}: the label must be letters, digits, '.', '_' or '-'")
        if label in (h[0] for h in hubs):
            p.error(f"--hub-src: the label {label!r} is given twice")
        if not (Path(src) / "billhub" / "__init__.py").is_file():
            p.error(f"--hub-src {item!r}: {src} is not a src/ folder holding billhub/")
        hubs.append((label, src))
    args.hub_src = hubs
    return args


def single_run(bench: Bench, shown: list[str]) -> int:
    """One hub, every asked phase in order, and its full report."""
    args = bench.args
    phases = set(args.phases)
    label, src = args.hub_src[0] if args.hub_src else ("hub", None)
    bench.start_hub(label, src)
    sweep = bench.batch_sweep() if "batch" in phases else []
    best = max(sweep, key=lambda p: p.throughput) if sweep else None
    best_inf = int(best.summary["in_flight"]) if best else args.sweep[0]
    codec = bench.codec_limit(best_inf) if "codec" in phases else None
    lat = bench.batch_latency(best.throughput) if best and "latency" in phases else None
    rest = bench.rest() if "rest" in phases else None
    profs = []
    if "profile" in phases:
        profs.append(bench.profile(best_inf))
    if "rest-profile" in phases:
        profs.append(bench.profile(args.rest_concurrency, REST))
    mil = bench.million(best_inf) if args.million else None
    bench.stop_hub()
    journal = bench.journal_counts()
    data = report(bench, shown, sweep, codec, lat, rest, profs, mil, journal)  # logs still here
    return 1 if data["warnings"] else 0


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    shown = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *raw]
    with session("e2e", keep=args.keep) as (procs, workdir):
        bench = Bench(args, procs, workdir)
        try:
            bench.prepare()
            if len(args.hub_src) > 1 or args.repeat > 1:
                return compare_run(bench, shown)
            return single_run(bench, shown)
        except (KeyboardInterrupt, RuntimeError) as exc:
            return exit_code("e2e", exc)


if __name__ == "__main__":
    sys.exit(main())
