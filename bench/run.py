"""One benchmark command: the issue's table (issue 10, item 6) in one run.

Every row is measured in this run, on this machine, the hub, the billers and the
load each in its own process (see ``bench/README.md``):

* the codec limit: ``bench/servers.py --mode codec`` (mutual TLS, framing, decode,
  encode; nothing else) answering echo tests, and answering the same mix as the hub;
* the batch mix at its maximum (closed loop, the best in-flight of ``--sweep``), and
  open loop at 80 % of that rate (p50/p99);
* the REST mix through the hub and the REST biller asked directly (aiohttp);
* the hub's CPU µs per message in each, and its VmRSS before the first load and
  after the last;
* a hub per core, when PostgreSQL answers: one hub on SQLite, one hub on PostgreSQL,
  two hubs sharing one link port (``[link] reuse_port``) and one PostgreSQL journal.

Throughput ratios are against the codec limit with the same mix, measured minutes
before in the same run. Usage::

    .venv/bin/python bench/run.py --quick     # smoke: 1-3 minutes (ten processes start)
    .venv/bin/python bench/run.py             # full: about 10 minutes
    .venv/bin/python bench/run.py --million   # + 1,000,000 messages for the RSS after
    .venv/bin/python bench/run.py --json      # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import e2e  # bench/ is sys.path[0] when run as a script
import instances
from harness import DEFAULT_PG, Phase, Procs, cpus, exit_code, pg_reachable, rss_kb, session

#: (quick, full) settings of each part.
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "duration": 2.0,
        "warmup": 0.3,
        "sweep": "128",
        "batch_accounts": 5_000,
        "rest_accounts": 8_000,  # the three REST phases must not run out of bills
        "core_accounts": 2_000,
    },
    "full": {
        "duration": 10.0,
        "warmup": 1.0,
        "sweep": "64,256",
        "batch_accounts": 200_000,
        "rest_accounts": 100_000,
        "core_accounts": 10_000,
    },
}


def e2e_args(args: argparse.Namespace, mode: dict[str, Any]) -> argparse.Namespace:
    argv = [
        "--duration", str(args.duration or mode["duration"]), "--warmup", str(mode["warmup"]),
        "--sweep", args.sweep or mode["sweep"],
        "--batch-accounts", str(mode["batch_accounts"]),
        "--rest-accounts", str(mode["rest_accounts"]),
        "--no-profile",
    ]  # fmt: skip
    if args.million:
        argv.append("--million")
    return e2e.parse_args(argv)


def core_args(args: argparse.Namespace, mode: dict[str, Any]) -> argparse.Namespace:
    return instances.parse_args(
        [
            "--duration", str(args.duration or mode["duration"]), "--warmup", str(mode["warmup"]),
            "--links", str(args.core_links), "--in-flight", str(args.core_in_flight),
            "--batch-accounts", str(mode["core_accounts"]), "--pg", args.pg,
            "--phases", "sqlite,pg-1,pg-2-shared", "--rounds", "1",
        ]
    )  # fmt: skip


def row(label: str, ph: Phase | None, codec: float, *, who: str = "hub") -> dict[str, Any]:
    if ph is None:
        return {"row": label}
    s = ph.summary
    return {
        "row": label,
        "msg_s": ph.throughput,
        "x_codec": ph.throughput / codec if codec else None,
        "p50_ms": s.get("p50_ms"),
        "p99_ms": s.get("p99_ms"),
        "cpu_us_per_msg": ph.us_per_msg(who),
        "cpu_cores": ph.cores(who),
        "load_us_per_msg": ph.us_per_msg("load"),
        "others_cores": ph.others,
    }


def measure(args: argparse.Namespace, procs: Procs, work: Path) -> dict[str, Any]:
    mode = MODES["quick" if args.quick else "full"]
    ea = e2e_args(args, mode)
    bench = e2e.Bench(ea, procs, work / "e2e")
    bench.workdir.mkdir()
    bench.setup()
    assert bench.hub is not None
    rss_before = bench.rss_start
    sweep = bench.batch_sweep()
    best = max(sweep, key=lambda p: p.throughput)
    best_inf = int(best.summary["in_flight"])
    echo, cmix = bench.codec_limit(best_inf)
    lat = bench.batch_latency(best.throughput)
    hub1, direct, hub2 = bench.rest()
    mil = bench.million(best_inf) if ea.million else None
    rss_after = rss_kb(bench.hub.pid)
    bench.stop_hub()
    codec = cmix.throughput
    rest_best = max((hub1, hub2), key=lambda p: p.throughput)
    rows = [
        row("codec limit, echo tests", echo, codec, who="server"),
        row("codec limit, the same mix", cmix, codec, who="server"),
        row(f"batch mix max ({best_inf} in flight)", best, codec),
        row(f"REST mix via hub ({ea.rest_concurrency} in flight)", rest_best, codec),
        {
            "row": f"REST biller direct ({ea.rest_concurrency} in flight)",
            "msg_s": direct["throughput_per_s"],
            "x_codec": direct["throughput_per_s"] / codec if codec else None,
            "p50_ms": direct["p50_ms"],
            "p99_ms": direct["p99_ms"],
            "cpu_us_per_msg": None,
            "biller_cores": (direct.get("_cpu") or {}).get("biller"),
        },
        row(
            f"batch mix open loop at {ea.latency_fraction:.0%} ({lat.summary.get('rate')}/s)",
            lat,
            codec,
        ),
    ]
    if mil is not None:
        rows.append(row("batch mix, 1,000,000 messages", mil["phase"], codec))
    phases = [*sweep, echo, cmix, lat, hub1, hub2, *([mil["phase"]] if mil else [])]
    data: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "cpus": cpus(),
        "rows": rows,
        "rss_kb": {"before": rss_before, "after": rss_after},
        "hub_start_s": bench.timings.get("hub_start_s"),
        "load_example": shlex.join(best.command[3:]),
        "warnings": [w for ph in phases for w in ph.warnings()],
    }
    if args.no_pg or not pg_reachable(args.pg):
        data["per_core"] = None
        data["per_core_why"] = "--no-pg" if args.no_pg else f"no PostgreSQL at {args.pg}"
        return data
    ca = core_args(args, mode)
    core_work = work / "cores"
    core_work.mkdir()
    results = instances.Bench(ca, core_work, procs).run()
    data["per_core"] = {
        "settings": f"batch mix, {ca.links} links x {ca.in_flight} in flight per load, "
        f"one load per hub, {ca.batch_accounts} accounts",
        "results": [asdict(r) for r in results],
    }
    data["warnings"] += [f"[{r.phase}] payments lost or doubled" for r in results if not r.exact]
    return data


def _f(x: Any, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def render(data: dict[str, Any], argv: list[str]) -> str:
    o = [
        f"command: {shlex.join(argv)}",
        f"mode {data['mode']}   cpus {data['cpus']}   load: {data['load_example']}",
        "",
        "| row | msg/s | × codec limit (same mix) | p50 ms | p99 ms | hub CPU µs/msg"
        " | one core ≈ msg/s | × codec by CPU | load CPU µs/msg | others (cores) |",
        "| --- " + "| ---: " * 9 + "|",
    ]
    codec_us = data["rows"][1].get("cpu_us_per_msg")  # the codec server, the same mix
    for r in data["rows"]:
        us = r.get("cpu_us_per_msg")
        o.append(
            f"| {r['row']} | {_f(r.get('msg_s'), '.0f')} | {_f(r.get('x_codec'), '.2f')} | "
            f"{_f(r.get('p50_ms'), '.2f')} | {_f(r.get('p99_ms'), '.2f')} | {_f(us, '.0f')} | "
            f"{_f(1e6 / us if us else None, '.0f')} | "
            f"{_f(codec_us / us if us and codec_us else None, '.2f')} | "
            f"{_f(r.get('load_us_per_msg'), '.0f')} | {_f(r.get('others_cores'), '.2f')} |"
        )
    before, after = data["rss_kb"]["before"], data["rss_kb"]["after"]
    o.append(
        f"| hub VmRSS before the first load / after the last | {before.get('VmRSS', 0) / 1024:.0f}"
        f" MiB → {after.get('VmRSS', 0) / 1024:.0f} MiB (peak {after.get('VmHWM', 0) / 1024:.0f}"
        f" MiB) |" + " |" * 8
    )
    o.append("")
    o.append(
        "codec limit rows: CPU is the codec server's; REST biller direct: the biller's CPU is"
        " not the hub's (n/a). 'one core ≈': 10^6 / µs per message, what the process would"
        " answer with a core of its own; '× codec by CPU': the codec server's µs per message"
        " over the row's, the throughput ratio free of the load generator and of other"
        " processes' share of the machine"
    )
    core = data.get("per_core")
    if core is None:
        o.append(f"hub per core: not measured ({data.get('per_core_why')})")
    else:
        res = core["results"]
        pg1 = next((r["throughput"] for r in res if r["phase"].startswith("pg-1")), None)
        o += [
            "",
            f"hub per core ({core['settings']}):",
            "",
            "| journal, hubs | msg/s | × pg-1 | p50 ms | p99 ms | hub CPU (cores) | hub µs/msg"
            " | PostgreSQL (cores) | PostgreSQL µs/msg | load (cores) | others (cores)"
            " | links per hub | approved loads / journal |",
            "| --- " + "| ---: " * 10 + "| --- | --- |",
        ]
        for r in res:
            o.append(
                f"| {r['phase']} | {r['throughput']:.0f} | "
                f"{_f(r['throughput'] / pg1 if pg1 else None, '.2f')} | {r['p50_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['hub_cores']:.2f} | {_f(r['hub_us_per_msg'], '.0f')} | "
                f"{_f(r['pg_cores'], '.2f')} | {_f(r['pg_us_per_msg'], '.0f')} | "
                f"{_f(r['load_cores'], '.2f')} | {_f(r['others_cores'], '.2f')} | "
                f"{' + '.join(map(str, r['links_per_hub']))} | "
                f"{r['approved_by_loads']} / {r['approved_in_journal']} |"
            )
    if data["warnings"]:
        o.append("")
        o += [f"warning: {w}" for w in data["warnings"]]
    return "\n".join(o)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke: short phases, small billers")
    p.add_argument("--duration", type=float, default=0.0, help="seconds per phase (mode's)")
    p.add_argument("--sweep", default="", help="in-flight values for the batch maximum")
    p.add_argument("--million", action="store_true", help="RSS after 1,000,000 messages")
    p.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL for the hub-per-core rows")
    p.add_argument("--no-pg", action="store_true", help="leave the hub-per-core rows out")
    p.add_argument("--core-links", type=int, default=4, help="links per load, per-core rows")
    p.add_argument("--core-in-flight", type=int, default=64, help="per load, per-core rows")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    shown = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *raw]
    with session("run", keep=args.keep) as (procs, work):
        try:
            data = measure(args, procs, work)
        except (KeyboardInterrupt, RuntimeError) as exc:
            return exit_code("run", exc)
    print(json.dumps(data, default=str) if args.json else render(data, shown))
    return 1 if data["warnings"] else 0


if __name__ == "__main__":
    sys.exit(main())
