"""What the metrics cost: the same hub and load with ``[admin] metrics`` off and on.

Each run starts a fresh hub (``billhub serve --config <generated toml>``, logs at
``info`` into a file as in production, the admin port on, a durable SQLite journal and
one batch biller loaded from a bills file of ``--accounts`` demo subscribers) and
drives it with the simulated switch in another process::

    billhub switch --certs DIR --json load --kind inquiry|mix --biller 100002 ...

Runs alternate off/on (``--repeat`` pairs) so that drift of the machine hits both
alike; the report gives the median of each. With metrics on, ``/metrics`` is scraped
every ``--scrape-every`` seconds during the load (the scrape's own cost is part of the
price), and once at the end to check that the counters agree with the load.

Two numbers per mode: throughput (closed loop, answered/s) and the hub's CPU per
message (µs, from ``/proc`` over the measured window). On a small machine the load
generator, not the hub, often limits the closed loop; the CPU per message is then the
number that shows the metrics' cost (``others``: the CPU other processes took meanwhile;
a high value means a disturbed run). Usage::

    .venv/bin/python bench/metrics.py [--duration 10] [--repeat 3] [--kind inquiry|mix]
                                      [--in-flight 64] [--links 2] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from billhub.simulator.demo_data import generate_accounts, write_bills_file
from harness import (  # bench/ is sys.path[0] when run as a script
    HubConfig,
    Procs,
    Workload,
    batch_biller,
    dev_certs,
    load_cmd,
    note,
    run_load,
    session,
    start_hub,
)

BATCH = "100002"
READY_TIMEOUT_S = 60.0
TARGET = 0.05  # the budget: metrics cost under 5 % of throughput


@dataclass
class Run:
    mode: str  # "off" | "on"
    repeat: int
    throughput: float
    p50_ms: float
    p99_ms: float
    answered: int
    codes: dict[str, int]
    hub_cores: float | None
    load_cores: float | None
    others_cores: float | None
    scrapes: int = 0
    scrape_ms: float | None = None
    counted: float | None = None  # requests counted by billhub_messages_received_total
    warnings: list[str] = field(default_factory=list)

    @property
    def hub_us_per_msg(self) -> float | None:
        if self.hub_cores is None or not self.throughput:
            return None
        return self.hub_cores / self.throughput * 1e6


def hub_config(workdir: Path, certs: Path, metrics: bool, inbox: Path, outbox: Path) -> HubConfig:
    return HubConfig(
        certs,
        workdir / "journal.db",
        [batch_biller(BATCH, "Rural Damascus (batch)", inbox, outbox)],
        admin_port=0,
        metrics=metrics,
        shutdown_grace_s=1.0,
        comment="Written by bench/metrics.py.",
    )


def metrics_load_cmd(args: argparse.Namespace, port: int, certs: Path, today: date) -> list[str]:
    workload = Workload(BATCH, args.accounts, args.seed, "02", today, args.payment_share)
    return load_cmd(
        port,
        certs,
        kind=args.kind,
        links=args.links,
        in_flight=args.in_flight,
        duration=args.duration,
        warmup=args.warmup,
        workload=workload,
    )


class Scraper(threading.Thread):
    """GET /metrics every ``every`` seconds, as Prometheus would, timing each scrape."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.every = every
        self.stop = threading.Event()
        self.times: list[float] = []

    def run(self) -> None:
        while not self.stop.wait(self.every):
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    r.read()
            except OSError:
                continue
            self.times.append(time.perf_counter() - t0)


def counted_requests(url: str) -> float:
    """Sum of billhub_messages_received_total for 02xx: what the hub counted."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "billhub_messages_received_total" and s.labels["mti"].startswith("02"):
                total += s.value
    return total


def measure(
    procs: Procs, args: argparse.Namespace, mode: str, repeat: int, certs: Path, base: Path
) -> Run:
    tag = f"{mode}{repeat + 1}"
    workdir = base / tag
    inbox, outbox = workdir / "inbox", workdir / "outbox"
    inbox.mkdir(parents=True)
    outbox.mkdir()
    today = datetime.now(UTC).date()
    write_bills_file(
        inbox, BATCH, generate_accounts("02", args.accounts, args.seed, today=today), day=today
    )
    config = hub_config(workdir, certs, mode == "on", inbox, outbox)
    hub = start_hub(procs, workdir, "hub", config, timeout=READY_TIMEOUT_S)
    scraper: Scraper | None = None
    try:
        metrics_url = f"http://127.0.0.1:{hub.admin_port}/metrics"
        cmd = metrics_load_cmd(args, hub.port, certs, today)
        if mode == "on" and args.scrape_every > 0:
            scraper = Scraper(metrics_url, args.scrape_every)
            scraper.start()
        try:
            ph = run_load(
                procs,
                workdir,
                tag,
                [cmd],
                {"hub": hub.pid},
                limit_s=args.warmup + args.duration + 120,
            )
        finally:
            if scraper is not None:
                scraper.stop.set()
                scraper.join(10)
        s: dict[str, Any] = ph.summary
        counted = counted_requests(metrics_url) if mode == "on" else None
    finally:
        procs.stop(hub.proc, signal.SIGTERM)
    run = Run(
        mode=mode,
        repeat=repeat,
        throughput=float(s["throughput_per_s"]),
        p50_ms=float(s["p50_ms"]),
        p99_ms=float(s["p99_ms"]),
        answered=int(s["answered"]),
        codes={str(k): int(v) for k, v in dict(s.get("codes", {})).items()},
        hub_cores=ph.cores("hub"),
        load_cores=ph.cores("load"),
        others_cores=ph.others,
        counted=counted,
    )
    if scraper is not None and scraper.times:
        run.scrapes = len(scraper.times)
        run.scrape_ms = statistics.median(scraper.times) * 1000
    if int(s.get("failed", 0)):
        run.warnings.append(f"[{tag}] {s['failed']} requests failed")
    if counted is not None and counted < run.answered:
        run.warnings.append(f"[{tag}] counted {counted:.0f} requests < {run.answered} answered")
    note(
        f"    {run.throughput:.0f} msg/s  p50 {run.p50_ms} ms  p99 {run.p99_ms} ms  "
        f"hub {_cores(run.hub_cores)}  load {_cores(run.load_cores)}  "
        f"hub {_us(run.hub_us_per_msg)} µs/msg  codes {run.codes}"
    )
    return run


def observer_cost(n: int = 10_000, repeat: int = 40) -> dict[str, float]:
    """The metrics path's own CPU per message, in process, free of the machine's noise.

    Replays an inquiry/payment mix through what the hub calls per message with metrics
    off (each link fact through the bus to the log; billers' health) and on (the same,
    with Metrics subscribed too; one journal commit per 4 messages), and returns µs per
    message.
    """
    import io
    import timeit

    from billhub.iso8583.message import Message
    from billhub.iso8583.spec import load_spec
    from billhub.link.facts import Exchanged, LinkInfo
    from billhub.observability.bus import LinkEventBus
    from billhub.observability.health import BillerHealth
    from billhub.observability.logs import LogObserver, configure
    from billhub.observability.metrics import FanoutPipelineObserver, Metrics
    from billhub.transport.tls import REFUSAL_REASONS

    class _Null(io.TextIOBase):
        def write(self, s: str) -> int:
            return len(s)

    configure("json", "info", stream=_Null())
    rules = load_spec(None).rules
    info = LinkInfo("L1", "127.0.0.1:40000", "CN=switch-1")
    base = {7: "1126120000", 11: "000001", 32: "600001", 37: "000000000001", 100: BATCH}
    inquiry = Message("0200", {**base, 3: "310000", 4: "0" * 12, 102: "0212345678"})
    payment = Message("0200", {**base, 3: "500000", 4: "000000010000", 102: "0212345678"})
    answers = (Message("0210", {39: "00"}), Message("0210", {39: "51"}))
    log, health = LogObserver(), BillerHealth([BATCH])
    mx = Metrics(
        billers=[BATCH], batch_billers=[BATCH], rules=rules, refusal_reasons=REFUSAL_REASONS
    )
    link_off = LinkEventBus(log)
    link_on, pipe_on = LinkEventBus(log, mx.link_event), FanoutPipelineObserver(health, mx)

    def off() -> None:
        for i in range(4):
            req = payment if i % 2 else inquiry
            health.biller_call(BATCH, "post_payment" if i % 2 else "open_bills", 0.0004, "ok")
            link_off(Exchanged(info, req, answers[i % 2], 0.012, "handled"))

    def on() -> None:
        for i in range(4):
            req = payment if i % 2 else inquiry
            pipe_on.biller_call(BATCH, "post_payment" if i % 2 else "open_bills", 0.0004, "ok")
            link_on(Exchanged(info, req, answers[i % 2], 0.012, "handled"))
        mx.journal_commit(4, 0.001)

    loops = max(1, n // 4)
    best_off = best_on = float("inf")
    for _ in range(repeat):  # interleaved, best of each: the machine's noise only adds
        best_off = min(best_off, timeit.timeit(off, number=loops))
        best_on = min(best_on, timeit.timeit(on, number=loops))
    t_off = best_off / (loops * 4) * 1e6
    t_on = best_on / (loops * 4) * 1e6
    return {"off_us": t_off, "on_us": t_on, "metrics_us": t_on - t_off}


def _cores(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f} %"


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _median(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def summarise(runs: list[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("off", "on"):
        rs = [r for r in runs if r.mode == mode]
        out[mode] = {
            "throughput_per_s": _median([r.throughput for r in rs]),
            "p50_ms": _median([r.p50_ms for r in rs]),
            "p99_ms": _median([r.p99_ms for r in rs]),
            "hub_us_per_msg": _median([r.hub_us_per_msg for r in rs]),
            "hub_cores": _median([r.hub_cores for r in rs]),
            "load_cores": _median([r.load_cores for r in rs]),
        }
    off, on = out["off"], out["on"]
    out["throughput_cost"] = (
        1 - on["throughput_per_s"] / off["throughput_per_s"] if off["throughput_per_s"] else None
    )
    out["cpu_cost"] = (
        on["hub_us_per_msg"] / off["hub_us_per_msg"] - 1
        if on["hub_us_per_msg"] and off["hub_us_per_msg"]
        else None
    )
    return out


def report(args: argparse.Namespace, runs: list[Run], summary: dict[str, Any]) -> str:
    lines = [
        f"bench/metrics.py  kind {args.kind}  {args.links} links x {args.in_flight} in flight"
        f"  {args.duration:g} s x {args.repeat} pairs  scrape every {args.scrape_every:g} s",
        "",
        f"{'run':<6} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'hub':>6} {'load':>6} "
        f"{'others':>6} {'µs/msg':>7}  scrapes",
    ]
    for r in runs:
        scr = f"{r.scrapes} x {r.scrape_ms:.1f} ms" if r.scrape_ms is not None else "-"
        lines.append(
            f"{r.mode + str(r.repeat + 1):<6} {r.throughput:>8.0f} {r.p50_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {_cores(r.hub_cores):>6} {_cores(r.load_cores):>6} "
            f"{_cores(r.others_cores):>6} "
            f"{_us(r.hub_us_per_msg):>7}  {scr}"
        )
    lines.append("")
    for mode in ("off", "on"):
        m = summary[mode]
        lines.append(
            f"metrics {mode:<3}  median {m['throughput_per_s']:.0f} msg/s,"
            f" p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms,"
            f" hub {_us(m['hub_us_per_msg'])} µs/msg"
            f" ({_cores(m['hub_cores'])} of a core; load generator {_cores(m['load_cores'])})"
        )
    oc = summary.get("observers")
    if oc is not None:
        hub_us = summary["off"]["hub_us_per_msg"]
        share = f" = {oc['metrics_us'] / hub_us * 100:.1f} % of the hub's" if hub_us else ""
        lines.append(
            f"metrics path in process: {oc['metrics_us']:.2f} µs per message"
            f" (observers {oc['off_us']:.2f} µs off, {oc['on_us']:.2f} µs on){share}"
            f" {_us(hub_us)} µs per message"
        )
    tc, cc = summary["throughput_cost"], summary["cpu_cost"]
    lines.append(
        f"end to end, metrics on vs off (medians): throughput {-tc * 100:+.1f} %,"
        " hub CPU per message " + (f"{cc * 100:+.1f} %" if cc is not None else "-")
    )
    others = _median([r.others_cores for r in runs])
    if others is not None and others > 0.25:
        lines.append(
            f"note: other processes took {others * 100:.0f} % of a core during the runs: the"
            " end-to-end differences are mostly their noise; the in-process number is not."
        )
    hub_us = summary["off"]["hub_us_per_msg"]
    if oc is not None and hub_us:
        share = oc["metrics_us"] / hub_us
        verdict = "met" if share < TARGET else "NOT met"
        lines.append(
            f"target (metrics under {TARGET * 100:.0f} %): {verdict} ({share * 100:.1f} %)"
        )
    bound = summary["off"]["load_cores"]
    if bound is not None and bound > 0.9:
        lines.append(
            "note: the load generator used a whole core: the closed loop is limited by it, so"
            " the throughput difference understates the cost; read the CPU per message."
        )
    for r in runs:
        lines += r.warnings
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3, help="off/on pairs")
    p.add_argument("--kind", choices=["inquiry", "mix"], default="inquiry")
    p.add_argument("--payment-share", type=float, default=0.5)
    p.add_argument("--links", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument(
        "--accounts", type=int, default=2000, help="demo subscribers of the batch biller"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--scrape-every", type=float, default=5.0, help="0: no scrape during the load")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the working folder and logs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs: list[Run] = []
    with session("metrics", keep=args.keep) as (procs, base):
        certs = dev_certs(base / "certs")
        for i in range(args.repeat):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            for mode in order:
                runs.append(measure(procs, args, mode, i, certs, base))
    summary = summarise(runs)
    summary["observers"] = observer_cost()
    if args.json:
        print(json.dumps({"runs": [asdict(r) for r in runs], "summary": summary}, indent=2))
    else:
        sys.stdout.write(report(args, runs, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
