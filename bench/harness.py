"""What every benchmark needs, once: processes, certificates, the hub's TOML, /proc, the load.

The benchmarks drive the hub only as an operator does, through ``billhub serve
--config`` and ``billhub switch ... load``, so that they keep working while the hub's
internals change; this module is that boundary. Every child runs in its own session
and is killed by its process group when the benchmark ends, on Ctrl-C, SIGTERM or an
error (:class:`Procs`), so no hub outlives a bench that crashed.

CPU comes from ``/proc/PID/stat`` sampled every 0.1 s, over the window the load
generator reports it measured (wall-clock times in its JSON summary), so start-up,
warm-up and tear-down are left out; "µs per message" is CPU time over answers in
that window, which does not depend on how busy the rest of the machine is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any

from billhub.transport.certs import init_dev_certs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = ROOT / "build"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY_S = 0.1
#: Other processes' CPU above this share of a core during a window: the numbers are disturbed.
NOISE_CORES = 0.15
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def note(msg: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(msg, file=sys.stderr, flush=True)


def tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def on_terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that kills the children


def handle_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C does, through :meth:`Procs.kill_all`."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_terminate)


@contextlib.contextmanager
def session(prog: str, *, keep: bool) -> Iterator[tuple[Procs, Path]]:
    """A bench's processes and work folder: on any exit every child is killed by its
    group, and the folder removed (``keep``: left, and named on stderr)."""
    handle_signals()
    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix=f"billhub-bench-{prog}-"))
    try:
        yield procs, work
    finally:
        procs.kill_all()
        if keep:
            note(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def exit_code(prog: str, exc: BaseException) -> int:
    """What a bench's ``main`` returns when interrupted or when a phase failed."""
    if isinstance(exc, KeyboardInterrupt):
        note("interrupted; stopping every process")
        return 130
    note(f"bench/{prog}.py: error: {exc}")
    return 1


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


# --------------------------------------------------------------------------- processes


class Procs:
    """Every child we started, each the leader of its own process group."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        cmd: Sequence[str],
        *,
        stdout: IO[bytes] | int,
        stderr: IO[bytes] | int,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # Ctrl-C on our terminal does not reach it; we stop it
            cwd=ROOT,
            env=None if env is None else dict(env),
        )
        self.live.append(proc)
        return proc

    def start_logged(
        self, cmd: Sequence[str], log: Path, err: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` with stdout into ``log`` and stderr into ``err``."""
        with log.open("wb") as out, err.open("wb") as e:
            return self.start(cmd, stdout=out, stderr=e, env=env)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the group we created: the child and its children

    def stop(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0
    ) -> None:
        """Ask the process group to stop, wait, then kill it; always reaps."""
        if proc.poll() is None:
            self._signal_group(proc, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        # Kill what is left of the group even if its leader is gone (py-spy's hub);
        # a process group id is not reused while any member lives.
        self._signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)
        if proc in self.live:
            self.live.remove(proc)

    def kill_all(self) -> None:
        for proc in list(self.live):
            self.stop(proc, signal.SIGKILL, timeout=2.0)


def wait_for_line(
    proc: subprocess.Popen[bytes], log: Path, err: Path, match: str, timeout: float
) -> str:
    """The first line of ``log`` containing ``match``; raises if the process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for line in log.read_text("utf-8", "replace").splitlines():
                if match in line:
                    return line
        if proc.poll() is not None:
            raise RuntimeError(
                f"{shlex.join(map(str, proc.args))} exited with {proc.returncode}:\n"  # type: ignore[arg-type]
                f"{tail(log)}\n{tail(err)}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"no {match!r} after {timeout:g} s:\n{tail(log)}\n{tail(err)}")


def dev_certs(folder: Path) -> Path:
    """Development certificates (hub, switch, their CAs) in ``folder``, made once per run."""
    init_dev_certs(folder)
    return folder


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


# --------------------------------------------------------------------------- /proc


def proc_ticks(pid: int | None) -> int | None:
    """utime + stime of a process, in clock ticks; None once it is gone."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def host_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine."""
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except OSError:
        return None
    vals = [int(v) for v in line.split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return total - idle, total


def child_pid(pid: int) -> int | None:
    """The first child of ``pid`` (the hub that py-spy launched)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


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


# --------------------------------------------------------------------------- the hub's TOML


def _value(v: object) -> str:
    """A TOML value: JSON's strings, numbers and booleans are TOML's too."""
    if isinstance(v, Path):
        v = str(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


@dataclass(frozen=True)
class Biller:
    """One ``[[billers]]`` entry; ``settings`` is its ``rest``/``batch``/``database`` table."""

    code: str
    name: str
    kind: str
    settings: Mapping[str, object]
    budget_s: float = 5.0
    max_concurrency: int | None = None

    def toml(self) -> str:
        lines = [
            "[[billers]]",
            f"code = {_value(self.code)}",
            f"name = {_value(self.name)}",
            f"kind = {_value(self.kind)}",
            f"budget_s = {_value(self.budget_s)}",
        ]
        if self.max_concurrency is not None:
            lines.append(f"max_concurrency = {self.max_concurrency}")
        lines.append(f"{self.kind} = {_value(self.settings)}")
        return "\n".join(lines) + "\n"


def rest_biller(code: str, name: str, url: str, token: str, *, max_concurrency: int = 32) -> Biller:
    return Biller(code, name, "rest", {"base_url": url, "token": token}, 5.0, max_concurrency)


def batch_biller(code: str, name: str, inbox: Path, outbox: Path) -> Biller:
    return Biller(code, name, "batch", {"inbox": inbox, "outbox": outbox})


def database_biller(code: str, name: str, dsn: str, *, max_concurrency: int = 16) -> Biller:
    return Biller(code, name, "database", {"dsn": dsn}, 5.0, max_concurrency)


@dataclass(frozen=True)
class HubConfig:
    """The one builder of a bench hub's configuration.

    ``journal``: a path is a SQLite file; a ``postgresql://`` DSN is a PostgreSQL
    journal (several hubs may share it). ``admin_port`` ``None`` turns the admin
    endpoint off (0: a free port, read back from ``hub_listening``). ``reuse_port``:
    hub processes share ``port`` (PostgreSQL only, the hub refuses it on SQLite).
    """

    certs: Path
    journal: Path | str
    billers: Sequence[Biller] = ()
    port: int = 0
    admin_port: int | None = None
    metrics: bool = True
    reuse_port: bool = False
    log_level: str = "info"
    shutdown_grace_s: float = 2.0
    link: Mapping[str, object] = field(default_factory=dict)
    journal_extra: Mapping[str, object] = field(default_factory=dict)
    comment: str = "Written by bench/harness.py."

    def toml(self) -> str:
        link: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "shutdown_grace_s": self.shutdown_grace_s,
        }
        if self.reuse_port:
            link["reuse_port"] = True
        link.update(self.link)
        c = self.certs
        lines = [f"# {self.comment}", "[link]"]
        lines += [f"{k} = {_value(v)}" for k, v in link.items()]
        lines += [
            "[tls]",
            f"cert_file = {_value(c / 'hub.crt')}",
            f"key_file = {_value(c / 'hub.key')}",
            f"client_ca_file = {_value(c / 'switch-ca.crt')}",
            'allowed_subjects = ["switch-1"]',
            "[admin]",
        ]
        if self.admin_port is None:
            lines.append("enabled = false")
        else:
            lines += [
                'host = "127.0.0.1"',
                f"port = {self.admin_port}",
                f"metrics = {_value(self.metrics)}",
            ]
        lines += ["[log]", 'format = "json"', f"level = {_value(self.log_level)}", "[journal]"]
        if isinstance(self.journal, str) and self.journal.startswith("postgresql"):
            lines += ['kind = "postgresql"', f"dsn = {_value(self.journal)}"]
        else:
            lines.append(f"path = {_value(self.journal)}")
        lines += [f"{k} = {_value(v)}" for k, v in self.journal_extra.items()]
        return "\n".join(lines) + "\n" + "".join(b.toml() for b in self.billers)


@dataclass
class Hub:
    """One running ``billhub serve``."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int | None
    log: Path
    err: Path
    start_s: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def links_opened(self) -> int:
        """Links this hub accepted so far, from its log (0 if the event is not logged)."""
        try:
            text = self.log.read_text("utf-8", "replace")
        except OSError:
            return 0
        return text.count('"link_opened"')


def hub_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "billhub.cli", "serve", "--config", str(config)]


def start_hub(
    procs: Procs,
    workdir: Path,
    name: str,
    config: HubConfig,
    *,
    timeout: float = 300.0,
    src: Path | str | None = None,
) -> Hub:
    """Write ``config`` and start a hub on it; returns once it logged ``hub_listening``.

    ``src``: another source tree's ``src/`` folder, put on ``PYTHONPATH`` ahead of the
    installed billhub, so that one run can measure the hub before and after a change.
    """
    path = workdir / f"{name}.toml"
    path.write_text(config.toml(), "utf-8")
    log, err = workdir / f"{name}.log", workdir / f"{name}.err"
    env = None if src is None else {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    t0 = time.monotonic()
    proc = procs.start_logged(hub_cmd(path), log, err, env=env)
    event = json.loads(wait_for_line(proc, log, err, '"hub_listening"', timeout))
    admin = event.get("admin_port")
    return Hub(
        name,
        proc,
        int(event["port"]),
        None if admin is None else int(admin),
        log,
        err,
        time.monotonic() - t0,
    )


def start_rest_biller(
    procs: Procs,
    workdir: Path,
    *,
    token: str,
    seed: int,
    accounts: int,
    prefix: str,
    today: date,
    name: str = "rest-biller",
    timeout: float = 120.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """The demo REST biller as its own process; returns it and its port."""
    cmd = [
        sys.executable, "-m", "billhub.simulator.rest_biller", "--port", "0",
        "--token", token, "--seed", str(seed), "--accounts", str(accounts),
        "--prefix", prefix, "--today", today.isoformat(),
    ]  # fmt: skip
    log, err = workdir / f"{name}.log", workdir / f"{name}.err"
    proc = procs.start_logged(cmd, log, err)
    line = wait_for_line(proc, log, err, "listening", timeout)
    return proc, int(line.strip().rsplit(":", 1)[1])


def psql(dsn: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", dsn, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout.strip()


def pg_reachable(admin_dsn: str) -> bool:
    try:
        return psql(admin_dsn, "SELECT 1") == "1"
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def pg_database(admin_dsn: str, name: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_dsn`` for the block; dropped after."""
    psql(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        psql(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- the load


@dataclass(frozen=True)
class Workload:
    """What ``load --kind inquiry|payment|mix`` sends: the biller's demo subscribers."""

    biller: str
    accounts: int
    seed: int
    prefix: str
    today: date
    payment_share: float = 0.5
    rrn_tag: int = 100
    bill_offset: int | None = None
    account_offset: int | None = None

    def args(self) -> list[str]:
        out = [
            "--biller", self.biller, "--accounts", str(self.accounts), "--seed", str(self.seed),
            "--prefix", self.prefix, "--today", self.today.isoformat(),
            "--payment-share", str(self.payment_share),
            "--settlement-date", self.today.strftime("%m%d"), "--rrn-tag", str(self.rrn_tag),
        ]  # fmt: skip
        if self.bill_offset is not None:
            out += ["--bill-offset", str(self.bill_offset)]
        if self.account_offset is not None:
            out += ["--account-offset", str(self.account_offset)]
        return out


def load_cmd(
    port: int | str,
    certs: Path | str,
    *,
    kind: str,
    links: int,
    in_flight: int,
    duration: float,
    warmup: float,
    workload: Workload | None = None,
    rate: float = 0.0,
    count: int = 0,
    expect: str | None = None,
    engine: str | None = None,
) -> list[str]:
    """``billhub switch --json load ...`` (``--json`` is the switch's, before ``load``)."""
    cmd = [
        sys.executable, "-m", "billhub.cli", "switch", "--host", "127.0.0.1",
        "--port", str(port), "--certs", str(certs), "--json", "load",
        "--links", str(links), "--in-flight", str(in_flight), "--duration", str(duration),
        "--warmup", str(warmup), "--kind", kind,
    ]  # fmt: skip
    if engine is not None:
        cmd += ["--engine", engine]
    if workload is not None and kind != "echo":
        cmd += workload.args()
    if rate > 0:
        cmd += ["--rate", f"{rate:.0f}"]
    if count > 0:
        cmd += ["--count", str(count)]
    if expect is not None:
        cmd += ["--expect", expect]
    return cmd


def last_json(out: Path, err: Path, what: str) -> dict[str, Any]:
    """The last JSON line a load (or ``rest_direct.py``) printed."""
    lines = [ln for ln in out.read_text("utf-8").splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"[{what}] printed no JSON:\n{tail(err)}")
    return dict(json.loads(lines[-1]))


@dataclass
class Phase:
    """One or more load processes run together, and what was sampled meanwhile."""

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
    summaries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return float(self.summary.get("throughput_per_s", 0.0))

    def cores(self, prefix: str) -> float | None:
        """The cores of every watched process whose name starts with ``prefix`` (hub-0, hub-1)."""
        vals = [v for k, v in self.cpu_cores.items() if k.startswith(prefix)]
        if not vals or any(v is None for v in vals):
            return None
        return sum(v for v in vals if v is not None)

    def us_per_msg(self, who: str) -> float | None:
        cores = self.cores(who)
        if cores is None or not self.throughput:
            return None
        return cores / self.throughput * 1e6

    def warnings(self) -> list[str]:
        out = []
        for s in self.summaries or [self.summary]:
            if s.get("unexpected_total"):
                out.append(f"[{self.name}] answers with an unexpected DE 39: {s.get('unexpected')}")
            for key in ("rrn_mismatch", "rrn_missing", "unmatched", "malformed", "failed"):
                if s.get(key):
                    out.append(f"[{self.name}] {key}: {s[key]}")
        if self.others is not None and self.others > NOISE_CORES:
            out.append(
                f"[{self.name}] other processes took {self.others * 100:.0f} % of a core: disturbed"
            )
        return out


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Loads run together as one: answers and rates add up, latencies are the worst."""
    if len(summaries) == 1:
        return summaries[0]
    out: dict[str, Any] = {"loads": len(summaries)}
    for key in ("answered", "failed", "unexpected_total", "excused", "throughput_per_s"):
        out[key] = sum(float(s.get(key) or 0) for s in summaries)
    for key in ("p50_ms", "p99_ms", "p999_ms", "seconds"):
        out[key] = max(float(s.get(key) or 0) for s in summaries)
    out["in_flight"] = sum(int(s.get("in_flight") or 0) for s in summaries)
    codes: dict[str, dict[str, int]] = {}
    for s in summaries:
        for kind, by_code in (s.get("all_codes") or {}).items():
            for code, n in by_code.items():
                codes.setdefault(kind, {})[code] = codes.setdefault(kind, {}).get(code, 0) + n
    out["all_codes"] = codes
    return out


Sample = tuple[float, dict[str, int | None], tuple[int, int] | None]


def cpu_in_window(
    summaries: list[dict[str, Any]], samples: list[Sample], t_exit: float, watched: list[str]
) -> tuple[dict[str, float | None], float, float | None, float | None]:
    """Cores of each watched process, window length, machine share, others' cores.

    The window is where every load measured (the loads report theirs as epoch
    times, and their own CPU in it); without one, about the ``seconds`` before the
    last load exited.
    """
    starts, ends = [], []
    for s in summaries:
        w = s.get("window") or {}
        if "epoch_start" in w:
            starts.append(float(w["epoch_start"]))
            ends.append(float(w["epoch_end"]))
    if starts and max(starts) < min(ends):
        lo, hi = max(starts), min(ends)
    else:
        seconds = max(float(s.get("seconds") or 0.0) for s in summaries)
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
                others = max(0.0, machine * cpus() - sum(v or 0.0 for v in cores.values()))
    load_cores = []
    for s in summaries:
        w = s.get("window") or {}
        if "cpu_s" in w and float(w["epoch_end"]) > float(w["epoch_start"]):
            load_cores.append(float(w["cpu_s"]) / (float(w["epoch_end"]) - float(w["epoch_start"])))
    if load_cores and len(load_cores) == len(summaries):
        cores["load"] = sum(load_cores)
    return cores, dt, machine, others


def _perf_counts(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text("utf-8", "replace").splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:"):
                with contextlib.suppress(ValueError):
                    out[parts[2].split("sys_enter_")[-1]] = int(parts[0])
    return out


class _Group:
    """CPU ticks of processes found one by one, each counted from when it was found."""

    def __init__(self) -> None:
        self.base: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def add(self, pids: Iterable[int]) -> None:
        for pid in pids:
            if pid not in self.base and (t := proc_ticks(pid)) is not None:
                self.base[pid] = self.last[pid] = t

    def ticks(self) -> int:
        for pid in self.base:
            if (t := proc_ticks(pid)) is not None:  # a backend gone keeps its last count
                self.last[pid] = t
        return sum(self.last[p] - self.base[p] for p in self.base)


def pg_backends(admin_dsn: str, database: str) -> Callable[[], list[int]]:
    """The server processes of ``database`` now (what the hubs opened), for ``group``."""

    def find() -> list[int]:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = psql(
                admin_dsn,
                "SELECT pid FROM pg_stat_activity WHERE datname = "
                f"'{database}' AND pid <> pg_backend_pid()",
            )
            return [int(x) for x in out.split()]
        return []

    return find


def run_load(
    procs: Procs,
    workdir: Path,
    name: str,
    cmds: list[list[str]],
    watch: Mapping[str, int | None],
    *,
    limit_s: float,
    count_syncs: bool = False,
    rss_every: float = 0.0,
    ok_codes: tuple[int, ...] = (0,),
    group: tuple[str, Callable[[], Iterable[int]]] | None = None,
) -> Phase:
    """Run load processes together to their end, sampling the CPU of ``watch`` and theirs.

    ``count_syncs``: ``perf stat`` counts the fsync/fdatasync calls of ``watch["hub"]``
    meanwhile (when perf is installed and allowed). ``rss_every``: VmRSS of the hub
    every so many seconds, into :attr:`Phase.rss_series`. ``group``: processes found
    while it runs (PostgreSQL's backends of the journal), looked up once a second and
    counted together under the name given, each from when it was found.
    """
    note(f"[{name}] " + " | ".join(shlex.join(c[3:]) for c in cmds))
    hub_pid = watch.get("hub")
    perf: subprocess.Popen[bytes] | None = None
    perf_out = workdir / f"perf-{name}.txt"
    if count_syncs and hub_pid is not None and shutil.which("perf"):
        perf = procs.start_logged(
            [
                "perf", "stat", "-x", ",", "-e",
                "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync", "-p", str(hub_pid),
            ],
            perf_out,
            perf_out.with_suffix(".err"),
        )  # fmt: skip
    t_start = time.monotonic()
    outs = []
    loads = []
    for i, cmd in enumerate(cmds):
        out, err = workdir / f"load-{name}-{i}.out", workdir / f"load-{name}-{i}.err"
        loads.append(procs.start_logged(cmd, out, err))
        outs.append((out, err))
    samples: list[Sample] = []
    rss_series: list[tuple[float, int]] = []
    next_rss = 0.0
    deadline = time.monotonic() + limit_s
    members = _Group()
    next_look = 0.0
    try:
        while any(p.poll() is None for p in loads):
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"[{name}] the load did not finish in {limit_s:g} s")
            ticks = {k: proc_ticks(pid) for k, pid in watch.items()}
            if group is not None:
                if now >= next_look:
                    members.add(group[1]())
                    next_look = now + 1.0
                ticks[group[0]] = members.ticks()
            mine = [proc_ticks(p.pid) for p in loads]
            ticks["load"] = None if None in mine else sum(t or 0 for t in mine)
            samples.append((time.time(), ticks, host_ticks()))
            if rss_every and hub_pid is not None and now >= next_rss:
                rss_series.append((now - t_start, rss_kb(hub_pid).get("VmRSS", 0)))
                next_rss = now + rss_every
            time.sleep(SAMPLE_EVERY_S)
        t_exit = time.time()
        wall = time.monotonic() - t_start
    finally:
        for p in loads:
            procs.stop(p, signal.SIGKILL, timeout=0.1)
        if perf is not None:
            # perf stat writes its counts on SIGINT, into the stderr we gave it
            procs.stop(perf, signal.SIGINT, timeout=5.0)
    summaries = []
    for p, (out, err) in zip(loads, outs, strict=True):
        if p.returncode not in ok_codes:
            raise RuntimeError(f"[{name}] load exited with {p.returncode}:\n{tail(err)}")
        summaries.append(last_json(out, err, name))
    watched = [*watch, *([group[0]] if group else [])]
    cores, dt, machine, others = cpu_in_window(summaries, samples, t_exit, watched)
    summary = merge_summaries(summaries)
    phase = Phase(
        name, cmds[0], summary, cores, dt, machine, others, summaries=summaries, wall_s=wall
    )
    phase.rss_series = rss_series
    if perf is not None:
        phase.syncs = _perf_counts(perf_out) or _perf_counts(perf_out.with_suffix(".err"))
    note(
        f"    {phase.throughput:.0f} msg/s  p50 {summary.get('p50_ms')} ms  p99 "
        f"{summary.get('p99_ms')} ms  codes {summary.get('codes', summary.get('all_codes'))}"
        f"  unexpected {summary.get('unexpected_total', 0)}  "
        + "  ".join(f"{k} {v * 100:.0f} %" for k, v in cores.items() if v is not None)
    )
    return phase


def median(xs: Sequence[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    if not n:
        return 0.0
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2
