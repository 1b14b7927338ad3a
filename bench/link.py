"""Link benchmark: the hub against a bare mTLS echo server and a bare codec server.

One run measures three servers on loopback, each in its own process, each driven
by the simulated switch in another process (``billhub switch ... load --kind echo``):

(a) ``bench/servers.py --mode echo``: mutual TLS as the hub sets it up, frames split
    with billhub's ``Framer``, each answered with the same bytes and MTI + 10
    (0800 -> 0810), no decoding. The transport limit.
(b) ``bench/servers.py --mode codec``: the same, but each frame is decoded with the
    bundled spec, answered with ``make_response(..., "00")`` and encoded. The codec
    limit.
(c) the real hub, ``billhub serve --config <generated toml>`` (logs at ``info`` into a
    file), answering echo tests (0800/301) after the switch's sign-on.

Usage::

    .venv/bin/python bench/link.py [--duration 5] [--in-flight 64] [--links 2]
                                   [--repeat K] [--json] [--profile] [--keep]
                                   [--event-loop auto|uvloop|asyncio] [--load-rate R]
                                   [--baseline-src DIR] [--compare-loops]

``--baseline-src DIR`` adds (b0) and (c0), the codec server and the hub of another
source tree (``git archive main src bench | tar -x -C DIR``), and ``--compare-loops``
adds (bs) and (cs), (b) and (c) on the standard library's loop; each is interleaved
with the trio and set against it by server CPU per message. ``--load-rate R`` drives
every server open loop at R requests/s, so that on a busy machine each gets the same
batches.

``--repeat K`` runs the trio K times interleaved (a b c a b c ...) and reports the
median of each number. Besides throughput and latency it samples ``/proc`` for the
CPU of the server and of the load generator during the measured window, so that a
run where the load generator, not the server, is the bottleneck says so.

``--profile`` then runs (c) once more under ``py-spy record`` (py-spy launches the
hub itself, so no ptrace attach is needed) and writes a speedscope file into
``build/``, printing the top functions by self time. Its numbers are not
comparable (sampling slows the hub) and are reported apart.

Every server and load process is started in its own session and killed, by its
process group, on exit, Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import (  # bench/ is sys.path[0] when run as a script
    CLK_TCK,
    NOISE_CORES,
    HubConfig,
    Procs,
    child_pid,
    dev_certs,
    exit_code,
    find_py_spy,
    host_ticks,
    note,
    proc_ticks,
    session,
)
from harness import tail as _tail
from speedscope import render, summarise

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS = HERE / "servers.py"
BUILD = ROOT / "build"
KINDS = ("a", "b", "c")
LABELS = {
    "a": "bare mTLS echo",
    "b": "bare mTLS + codec",
    "c": "billhub hub (serve)",
    "b0": "baseline: mTLS + codec",
    "c0": "baseline: hub",
    "bs": "codec, stdlib loop",
    "cs": "hub, stdlib loop",
}
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
SAMPLE_EVERY_S = 0.1
C_OVER_B_TARGET = 0.70
P99_TARGET_MS = 10.0


# --------------------------------------------------------------------------- /proc sampling


@dataclass
class Sample:
    t: float
    server: int | None
    load: int | None
    host: tuple[int, int] | None
    wall: float = 0.0  # time.time(), to place the sample in the load's own window


@dataclass
class CpuUse:
    """Shares of one core (1.0 = 100 %) over the steady window, and of the machine."""

    window_s: float
    server: float | None
    load: float | None
    machine: float | None

    @property
    def others(self) -> float | None:
        """Cores used by every other process (tests someone runs, the bench itself)."""
        if self.machine is None or self.server is None or self.load is None:
            return None
        return max(0.0, self.machine * (os.cpu_count() or 1) - self.server - self.load)


def _rate(a: int | None, b: int | None, dt: float) -> float | None:
    if a is None or b is None or dt <= 0:
        return None
    return (b - a) / CLK_TCK / dt


def steady_cpu(
    samples: list[Sample], t_exit: float, duration: float, window: dict[str, Any] | None = None
) -> CpuUse | None:
    """CPU during the load's measured window.

    The load generator reports its window's wall-clock start and end (``window``); the
    samples inside it are used. Without it (an older load generator) the window is taken
    as [exit - duration, exit - 0.3 s], which on a loaded machine, where closing the
    links and exiting take a while, can catch the idle tail instead of the load.
    """
    if window and "epoch_start" in window and "epoch_end" in window:
        start, end = float(window["epoch_start"]), float(window["epoch_end"])
        inside = [s for s in samples if start <= s.wall <= end]
    else:
        lo, hi = t_exit - duration, t_exit - 0.3
        inside = [s for s in samples if lo <= s.t <= hi]
    if len(inside) < 2:
        inside = samples[-2:] if len(samples) >= 2 else []
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    dt = last.t - first.t
    machine = None
    if first.host is not None and last.host is not None:
        busy = last.host[0] - first.host[0]
        total = last.host[1] - first.host[1]
        machine = busy / total if total else None
    return CpuUse(
        dt, _rate(first.server, last.server, dt), _rate(first.load, last.load, dt), machine
    )


# --------------------------------------------------------------------------- one measurement


@dataclass
class Run:
    kind: str
    repeat: int
    throughput: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    answered: int
    failed: int
    codes: dict[str, int]
    cpu: CpuUse | None
    server_log_lines: int = 0
    warnings: list[str] = field(default_factory=list)

    def server_us_per_msg(self) -> float | None:
        if self.cpu is None or self.cpu.server is None or not self.throughput:
            return None
        return self.cpu.server / self.throughput * 1e6

    def load_us_per_msg(self) -> float | None:
        if self.cpu is None or self.cpu.load is None or not self.throughput:
            return None
        return self.cpu.load / self.throughput * 1e6


def _listening_port(kind: str, log: Path) -> int | None:
    try:
        text = log.read_text("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        if kind[0] in "ab" and line.startswith("LISTENING "):
            return int(line.split()[1])
        if kind[0] == "c" and "hub_listening" in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "hub_listening":
                return int(event["port"])
    return None


def wait_ready(proc: subprocess.Popen[bytes], kind: str, log: Path, errlog: Path) -> int:
    """The port the server printed (or the hub logged) once it listens."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        port = _listening_port(kind, log)
        if port is not None:
            return port
        if proc.poll() is not None:
            raise RuntimeError(
                f"({kind}) server exited with {proc.returncode} before listening:\n"
                f"{_tail(log)}\n{_tail(errlog)}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"({kind}) server not listening after {READY_TIMEOUT_S:g} s:\n{_tail(log)}")


def kinds(args: argparse.Namespace) -> tuple[str, ...]:
    """The servers of one trio: (a), (b), (c), and the comparisons asked for."""
    out = KINDS
    if args.baseline_src is not None:
        out += ("b0", "c0")
    if args.compare_loops:
        out += ("bs", "cs")
    return out


def server_cmd(
    kind: str, certs: Path, config: Path, args: argparse.Namespace
) -> tuple[list[str], dict[str, str] | None]:
    """The command of one server, and its environment (None: ours).

    ``b0``/``c0`` run another source tree's ``bench/servers.py`` and hub (``PYTHONPATH``
    ahead of the installed billhub), on whatever loop that tree uses; ``bs``/``cs`` are
    (b) and (c) on the standard library's loop.
    """
    loop = "asyncio" if kind in ("bs", "cs") else args.event_loop
    if kind in ("b0", "c0"):
        base = Path(args.baseline_src).resolve()
        env = {**os.environ, "PYTHONPATH": str(base / "src")}
        if kind == "b0":
            servers = base / "bench" / "servers.py"
            return [sys.executable, str(servers), "--mode", "codec", "--certs", str(certs)], env
        return [sys.executable, "-m", "billhub.cli", "serve", "--config", str(config)], env
    if kind[0] in "ab":
        mode = "echo" if kind == "a" else "codec"
        cmd = [sys.executable, str(SERVERS), "--mode", mode, "--certs", str(certs)]
        return [*cmd, "--event-loop", loop], None
    cmd = [sys.executable, "-m", "billhub.cli", "serve", "--config", str(config)]
    return [*cmd, "--event-loop", loop], None


def load_cmd(args: argparse.Namespace, port: int | str, certs: Path | str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "billhub.cli",
        "switch",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--certs",
        str(certs),
        "--json",  # a `switch` option: after `load` argparse rejects it
        "--event-loop",
        args.load_event_loop,
        "load",
        "--links",
        str(args.links),
        "--in-flight",
        str(args.in_flight),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--kind",
        "echo",
        "--engine",
        args.load_engine,
        *(["--rate", str(args.load_rate)] if args.load_rate else []),
    ]


def drive(
    procs: Procs,
    args: argparse.Namespace,
    port: int,
    certs: Path,
    server_pid: Callable[[], int | None],
    workdir: Path,
    tag: str,
) -> tuple[dict[str, Any], CpuUse | None]:
    """Run one load process against ``port``, sampling CPU until it exits."""
    out_path = workdir / f"load-{tag}.out"
    err_path = workdir / f"load-{tag}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = procs.start(load_cmd(args, port, certs), stdout=out, stderr=err)
    samples: list[Sample] = []
    deadline = time.monotonic() + args.warmup + args.duration + 60.0
    spid = server_pid()
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"load generator for {tag} did not finish in time")
            if spid is None:
                spid = server_pid()
            samples.append(
                Sample(now, proc_ticks(spid), proc_ticks(proc.pid), host_ticks(), time.time())
            )
            time.sleep(SAMPLE_EVERY_S)
        t_exit = time.monotonic()
    finally:
        procs.stop(proc, signal.SIGKILL, timeout=0.1)
    if proc.returncode != 0:
        raise RuntimeError(
            f"load generator for {tag} exited with {proc.returncode}:\n{_tail(err_path)}"
        )
    lines = [ln for ln in out_path.read_text("utf-8").splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"load generator for {tag} printed no JSON:\n{_tail(out_path)}")
    summary = json.loads(lines[-1])
    return summary, steady_cpu(samples, t_exit, args.duration, summary.get("window"))


def measure(
    procs: Procs,
    args: argparse.Namespace,
    kind: str,
    repeat: int,
    certs: Path,
    config: Path,
    workdir: Path,
) -> Run:
    tag = f"{kind}{repeat + 1}"
    log = workdir / f"server-{tag}.log"
    errlog = workdir / f"server-{tag}.err"
    cmd, env = server_cmd(kind, certs, config, args)
    with log.open("wb") as out, errlog.open("wb") as err:
        server = procs.start(cmd, stdout=out, stderr=err, env=env)
    try:
        port = wait_ready(server, kind, log, errlog)
        summary, cpu = drive(procs, args, port, certs, lambda: server.pid, workdir, tag)
        if server.poll() is not None:
            raise RuntimeError(f"({kind}) server died during the load:\n{_tail(errlog)}")
    finally:
        procs.stop(server, signal.SIGTERM)
    return _run_from(kind, repeat, summary, cpu, log)


def _run_from(kind: str, repeat: int, s: dict[str, Any], cpu: CpuUse | None, log: Path) -> Run:
    codes = {str(k): int(v) for k, v in dict(s.get("codes", {})).items()}
    try:
        log_lines = len(log.read_text("utf-8", "replace").splitlines())
    except OSError:
        log_lines = 0
    run = Run(
        kind=kind,
        repeat=repeat,
        throughput=float(s["throughput_per_s"]),
        p50_ms=float(s["p50_ms"]),
        p99_ms=float(s["p99_ms"]),
        p999_ms=float(s["p999_ms"]),
        answered=int(s["answered"]),
        failed=int(s["failed"]),
        codes=codes,
        cpu=cpu,
        server_log_lines=log_lines,
    )
    expected = "--" if kind == "a" else "00"  # (a) answers without DE 39
    wrong = {c: n for c, n in codes.items() if c != expected}
    if run.failed:
        run.warnings.append(f"({kind}) {run.failed} requests failed")
    if wrong:
        run.warnings.append(f"({kind}) unexpected response codes {wrong}")
    if not run.answered:
        run.warnings.append(f"({kind}) nothing answered")
    return run


# --------------------------------------------------------------------------- profile


@dataclass
class ProfileResult:
    path: Path | None
    run: Run | None
    top: list[str]
    error: str | None = None
    how: str = ""


def _spy_cmd(py_spy: str, args: argparse.Namespace, out_file: Path) -> list[str]:
    cmd = [py_spy, "record", "-o", str(out_file), "-f", "speedscope", "--rate", str(args.rate)]
    if args.profile_native:
        cmd.append("--native")
    return cmd


def _finish(out_file: Path, run: Run | None, how: str, args: argparse.Namespace) -> ProfileResult:
    try:
        top = render(summarise(out_file, args.top))
    except (ValueError, KeyError, OSError) as exc:
        return ProfileResult(out_file, run, [], f"cannot read the profile: {exc}", how)
    return ProfileResult(out_file, run, top, None, how)


def _profile_attach(
    procs: Procs,
    args: argparse.Namespace,
    py_spy: str,
    out_file: Path,
    certs: Path,
    config: Path,
    workdir: Path,
) -> ProfileResult:
    """The hub runs as in (c); py-spy attaches to it (ptrace) for the load only."""
    how = "py-spy attached to the running hub for the load only"
    log, errlog = workdir / "server-profile.log", workdir / "server-profile.err"
    spylog = workdir / "py-spy-attach.log"
    with log.open("wb") as out, errlog.open("wb") as err:
        hub = procs.start(server_cmd("c", certs, config, args)[0], stdout=out, stderr=err)
    summary: dict[str, Any] | None = None
    cpu: CpuUse | None = None
    try:
        port = wait_ready(hub, "c", log, errlog)
        with spylog.open("wb") as sl:
            spy = procs.start(
                [*_spy_cmd(py_spy, args, out_file), "--pid", str(hub.pid)], stdout=sl, stderr=sl
            )
        try:
            deadline = time.monotonic() + 10.0
            while "Sampling process" not in spylog.read_text("utf-8", "replace"):
                if spy.poll() is not None or time.monotonic() > deadline:
                    return ProfileResult(None, None, [], f"cannot attach:\n{_tail(spylog, 5)}")
                time.sleep(0.05)
            summary, cpu = drive(procs, args, port, certs, lambda: hub.pid, workdir, "profile")
        finally:
            procs.stop(spy, signal.SIGINT, timeout=STOP_TIMEOUT_S)  # py-spy writes on SIGINT
    finally:
        procs.stop(hub, signal.SIGTERM)
    run = _run_from("c", 0, summary, cpu, log) if summary is not None else None
    if not out_file.exists():
        return ProfileResult(None, run, [], f"py-spy wrote no profile:\n{_tail(spylog, 5)}")
    return _finish(out_file, run, how, args)


def _profile_launch(
    procs: Procs,
    args: argparse.Namespace,
    py_spy: str,
    out_file: Path,
    certs: Path,
    config: Path,
    workdir: Path,
) -> ProfileResult:
    """py-spy starts the hub itself (no ptrace attach needed) and samples its whole life."""
    how = "py-spy launched the hub (whole life; import samples left out)"
    cmd = [*_spy_cmd(py_spy, args, out_file), "--", *server_cmd("c", certs, config, args)[0]]
    log, errlog = workdir / "server-launch.log", workdir / "server-launch.err"
    with log.open("wb") as out, errlog.open("wb") as err:
        spy = procs.start(cmd, stdout=out, stderr=err)
    summary: dict[str, Any] | None = None
    cpu: CpuUse | None = None
    try:
        try:
            port = wait_ready(spy, "c", log, errlog)
        except RuntimeError as exc:
            return ProfileResult(None, None, [], f"py-spy could not run the hub: {exc}", how)
        summary, cpu = drive(
            procs, args, port, certs, lambda: child_pid(spy.pid), workdir, "launch"
        )
    finally:
        # SIGINT to the group: the hub shuts down, py-spy writes its file.
        procs.stop(spy, signal.SIGINT, timeout=STOP_TIMEOUT_S + 5.0)
    run = _run_from("c", 0, summary, cpu, log) if summary is not None else None
    if not out_file.exists():
        return ProfileResult(None, run, [], f"py-spy wrote no profile:\n{_tail(errlog)}", how)
    return _finish(out_file, run, how, args)


def profile_hub(
    procs: Procs, args: argparse.Namespace, certs: Path, config: Path, workdir: Path
) -> ProfileResult:
    """Run (c) once more under ``py-spy record``: attach if allowed, else let py-spy launch it."""
    py_spy = find_py_spy()
    if py_spy is None:
        return ProfileResult(None, None, [], "py-spy is not installed (pip install py-spy)")
    BUILD.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_file = BUILD / f"hub-profile-{stamp}.speedscope.json"
    result = _profile_attach(procs, args, py_spy, out_file, certs, config, workdir)
    if result.path is not None:
        return result
    note(f"py-spy attach failed ({result.error}); letting py-spy launch the hub instead")
    out_file.unlink(missing_ok=True)
    return _profile_launch(procs, args, py_spy, out_file, certs, config, workdir)


# --------------------------------------------------------------------------- report


def median_run(runs: list[Run]) -> Run:
    """Per-number medians over repeats (each number on its own)."""

    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    def med_opt(values: list[float | None]) -> float | None:
        vs = [v for v in values if v is not None]
        return float(statistics.median(vs)) if vs else None

    cpus = [r.cpu for r in runs if r.cpu is not None]
    cpu = (
        CpuUse(
            med([c.window_s for c in cpus]),
            med_opt([c.server for c in cpus]),
            med_opt([c.load for c in cpus]),
            med_opt([c.machine for c in cpus]),
        )
        if cpus
        else None
    )
    codes: dict[str, int] = {}
    for r in runs:
        for c, n in r.codes.items():
            codes[c] = codes.get(c, 0) + n
    return Run(
        kind=runs[0].kind,
        repeat=len(runs),
        throughput=med([r.throughput for r in runs]),
        p50_ms=med([r.p50_ms for r in runs]),
        p99_ms=med([r.p99_ms for r in runs]),
        p999_ms=med([r.p999_ms for r in runs]),
        answered=int(med([float(r.answered) for r in runs])),
        failed=sum(r.failed for r in runs),
        codes=codes,
        cpu=cpu,
        server_log_lines=max(r.server_log_lines for r in runs),
        warnings=[w for r in runs for w in r.warnings],
    )


def result_line(kind: str, r: Run) -> str:
    label = f"({kind}) {LABELS[kind]}:"
    return (
        f"{label:<30} {r.throughput:9.1f} msg/s  p50 {r.p50_ms:.2f} ms  "
        f"p99 {r.p99_ms:.2f} ms  p99.9 {r.p999_ms:.2f} ms"
    )


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{x * 100:4.0f} %"


def _us(x: float | None) -> str:
    return "   n/a" if x is None else f"{x:6.1f}"


def bottleneck(r: Run) -> str:
    """Which side limits the closed loop, from the CPU each used in the window."""
    cpu = r.cpu
    if cpu is None or cpu.server is None or cpu.load is None:
        return "unknown (no CPU samples)"
    s, ld, others = cpu.server, cpu.load, cpu.others or 0.0
    if s >= 0.9 and ld >= 0.9:
        return "both server and load generator at a full core (2 cores, 2 busy processes)"
    if ld >= 0.9:
        return "load generator (at a full core; the server is not)"
    if s >= 0.9:
        return "server (at a full core)"
    if others > NOISE_CORES and (cpu.machine or 0.0) >= 0.9:
        return f"CPU contention: other processes took {others * 100:.0f} % of a core"
    return "neither process at a full core: round-trip/latency bound"


def _others(r: Run) -> float | None:
    return r.cpu.others if r.cpu is not None else None


def _ratio(x: float, y: float) -> float | None:
    return x / y if y else None


def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def comparisons(cost: dict[str, float | None]) -> dict[str, tuple[float | None, float | None]]:
    """Server CPU per message, before -> after, for each comparison measured in this run."""
    pairs = {
        "codec server, baseline -> this tree": ("b0", "b"),
        "hub, baseline -> this tree": ("c0", "c"),
        "codec server, stdlib loop -> --event-loop": ("bs", "b"),
        "hub, stdlib loop -> --event-loop": ("cs", "c"),
    }
    return {what: (cost[x], cost[y]) for what, (x, y) in pairs.items() if x in cost and y in cost}


def report(
    args: argparse.Namespace,
    argv: list[str],
    medians: dict[str, Run],
    runs: list[Run],
    prof: ProfileResult | None,
) -> dict[str, Any]:
    a, b, c = medians["a"], medians["b"], medians["c"]
    c_over_b = _ratio(c.throughput, b.throughput)
    b_over_a = _ratio(b.throughput, a.throughput)
    c_ok = c_over_b is not None and c_over_b >= C_OVER_B_TARGET
    p99_ok = c.p99_ms < P99_TARGET_MS
    measured = tuple(medians)
    cost = {k: medians[k].server_us_per_msg() for k in measured}
    cap_c_over_b = cost["b"] / cost["c"] if cost["b"] and cost["c"] else None
    cap_b_over_a = cost["a"] / cost["b"] if cost["a"] and cost["b"] else None

    warnings = [w for k in measured for w in medians[k].warnings]
    if c.server_log_lines > 50:
        warnings.append(f"(c) hub wrote {c.server_log_lines} log lines at info level")
    for k in measured:
        cpu = medians[k].cpu
        if cpu is not None and cpu.others is not None and cpu.others > NOISE_CORES:
            warnings.append(
                f"({k}) other processes used {cpu.others * 100:.0f} % of a core during the"
                " window: numbers are disturbed, use --repeat"
            )

    data: dict[str, Any] = {
        "command": argv,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "params": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "links": args.links,
            "load_engine": args.load_engine,
            "load_rate": args.load_rate,
            "event_loop": args.event_loop,
            "load_event_loop": args.load_event_loop,
            "baseline_src": args.baseline_src,
            "in_flight": args.in_flight,
            "repeat": args.repeat,
        },
        "load_command": load_cmd(args, "PORT", "CERTS"),
        "median": {k: asdict(v) for k, v in medians.items()},
        "runs": [asdict(r) for r in runs],
        "ratios": {"c_over_b": c_over_b, "b_over_a": b_over_a},
        "server_cpu_us_per_msg": cost,
        "capacity_ratios_by_server_cpu": {"c_over_b": cap_c_over_b, "b_over_a": cap_b_over_a},
        "checks": {
            "c_at_least_70pct_of_b": c_ok,
            "c_p99_below_10ms": p99_ok,
        },
        "comparisons": comparisons(cost),
        "bottleneck": {k: bottleneck(medians[k]) for k in measured},
        "cpu_others_cores": {k: _others(medians[k]) for k in measured},
        "warnings": warnings,
    }
    if prof is not None:
        data["profile"] = {
            "file": str(prof.path) if prof.path else None,
            "error": prof.error,
            "how": prof.how,
            "run": asdict(prof.run) if prof.run else None,
            "top": prof.top,
        }
    if args.json:
        print(json.dumps(data, default=str))
        return data

    out: list[str] = []
    out.append(f"command: {shlex.join(argv)}")
    out.append(
        f"cpus: {os.cpu_count()}   python {data['python']}   "
        f"links {args.links}, {args.in_flight} in flight, {args.duration:g} s "
        f"(+{args.warmup:g} s warm-up)"
        + (f", median of {args.repeat} interleaved runs" if args.repeat > 1 else "")
    )
    out.append(f"load:  {shlex.join(load_cmd(args, 'PORT', 'CERTS'))}")
    out.append("")
    out += [result_line(k, medians[k]) for k in measured]
    out.append(f"ratios: c/b {_fmt_ratio(c_over_b)}   b/a {_fmt_ratio(b_over_a)}")
    out.append(
        f"(c) >= 70 % of (b): {'yes' if c_ok else 'NO'}"
        f" ({(c_over_b or 0) * 100:.1f} %)   "
        f"(c) p99 < 10 ms at {args.in_flight} in flight: {'yes' if p99_ok else 'NO'}"
        f" ({c.p99_ms:.2f} ms)"
    )
    out.append("")
    out.append("CPU in the measured window (100 % = one core; µs = CPU µs per message answered):")
    for k in measured:
        r = medians[k]
        cpu = r.cpu
        out.append(
            f"  ({k}) server {_pct(cpu.server if cpu else None)} {_us(r.server_us_per_msg())} µs"
            f"   load gen {_pct(cpu.load if cpu else None)} {_us(r.load_us_per_msg())} µs"
            f"   machine {_pct(cpu.machine if cpu else None)} of {os.cpu_count()} cores"
            f" (others {_pct(cpu.others if cpu else None).strip()})"
            f"   -> bottleneck: {bottleneck(r)}"
        )
    out.append(
        "  server capacity ratios from CPU per message (load-independent): "
        f"c/b {_fmt_ratio(cap_c_over_b)}   b/a {_fmt_ratio(cap_b_over_a)}"
        + (f"   (hub at 100 % of a core ≈ {1e6 / cost['c']:.0f} msg/s)" if cost["c"] else "")
    )
    for what, (before, after) in comparisons(cost).items():
        out.append(
            f"  {what}: {_us(before).strip()} -> {_us(after).strip()} µs per message"
            + (f" ({before / after:.2f}x less CPU)" if before and after else "")
        )
    for w in warnings:
        out.append(f"warning: {w}")
    if prof is not None:
        out.append("")
        if prof.run is not None:
            out.append(
                "under py-spy (not comparable): " + result_line("c", prof.run).split(":", 1)[1]
            )
        if prof.path is not None:
            out.append(f"profile of the hub: {prof.path}  ({prof.how})")
        if prof.error:
            out.append(f"profile: {prof.error}")
        out += prof.top
    print("\n".join(out))
    return data


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/link.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    p.add_argument("--in-flight", type=int, default=64, help="requests in flight in total")
    p.add_argument("--links", type=int, default=2)
    p.add_argument("--warmup", type=float, default=0.5, help="load warm-up, not measured")
    p.add_argument("--repeat", type=int, default=1, help="run the trio K times; report medians")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--profile", action="store_true", help="also run (c) under py-spy record")
    p.add_argument("--profile-native", action="store_true", help="py-spy --native")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=10, help="functions listed from the profile")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, certs)")
    p.add_argument(
        "--event-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="the loop of (a), (b) and (c) (default auto: uvloop where installed)",
    )
    p.add_argument(
        "--load-event-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="the load generator's loop (default auto)",
    )
    p.add_argument(
        "--load-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="open loop: the load sends R requests/s (default: closed loop). On a busy "
        "machine a fixed rate gives every server the same batches, so CPU per message "
        "compares fairly",
    )
    p.add_argument(
        "--baseline-src",
        default=None,
        metavar="DIR",
        help="also run (b0) and (c0): DIR/bench/servers.py and the hub of DIR/src, e.g. "
        "after `git archive main src bench | tar -x -C DIR`",
    )
    p.add_argument(
        "--compare-loops",
        action="store_true",
        help="also run (bs) and (cs): (b) and (c) on the standard library's loop",
    )
    p.add_argument(
        "--load-engine",
        choices=["fast", "link"],
        default="fast",
        help="the load generator's engine: fast (templates) or link (SwitchLink + codec)",
    )
    args = p.parse_args(argv)
    if args.duration <= 0 or args.in_flight < 1 or args.links < 1 or args.repeat < 1:
        p.error("--duration, --in-flight, --links and --repeat must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    shown = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *raw]
    with session("link", keep=args.keep) as (procs, workdir):
        try:
            certs = workdir / "certs"
            dev_certs(certs)
            config = workdir / "billhub.toml"
            hub = HubConfig(
                certs,
                workdir / "journal.db",
                shutdown_grace_s=1.0,
                comment="Written by bench/link.py: a loopback hub with development certificates.",
            )
            config.write_text(hub.toml(), "utf-8")
            runs: list[Run] = []
            for i in range(args.repeat):
                for kind in kinds(args):
                    note(f"[{i + 1}/{args.repeat}] ({kind}) {LABELS[kind]} ...")
                    run = measure(procs, args, kind, i, certs, config, workdir)
                    note(
                        f"    {run.throughput:.1f} msg/s  p99 {run.p99_ms:.2f} ms"
                        f"  server CPU {_pct(run.cpu.server if run.cpu else None).strip()}"
                        f"  load CPU {_pct(run.cpu.load if run.cpu else None).strip()}"
                    )
                    runs.append(run)
            prof = None
            if args.profile:
                note("(c) under py-spy record ...")
                prof = profile_hub(procs, args, certs, config, workdir)
            medians = {k: median_run([r for r in runs if r.kind == k]) for k in kinds(args)}
            report(args, shown, medians, runs, prof)
            return 1 if any(r.warnings for r in runs) else 0
        except (KeyboardInterrupt, RuntimeError) as exc:
            return exit_code("link", exc)


if __name__ == "__main__":
    sys.exit(main())
