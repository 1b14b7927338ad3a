"""What grows in the hub's heap over a long run: tracemalloc snapshots, diffed.

tracemalloc starts at the first snapshot (after the warm-up), so start-up runs at
full speed and the last snapshot holds only what was allocated since and is still
alive.

The hub (``billhub serve``, as ``bench/e2e.py`` configures it: a REST and a batch
biller, a durable SQLite journal) runs in its own process with tracemalloc on; the
load (``billhub switch load --kind mix`` against the batch biller) runs in chunks in
other processes. After each chunk the hub is sent SIGUSR1 and writes a snapshot;
the diff of the last against the first (after warm-up) is printed, largest growth
first, with VmRSS at each point. Usage::

    .venv/bin/python bench/memsnap.py [--batch-accounts 20000] [--chunks 4]
                                      [--chunk 50000] [--frames 8] [--top 25]

tracemalloc slows the hub several times: the rates here are not the hub's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def hub_main(config_path: str, snapdir: str, frames: int) -> int:
    """The hub under tracemalloc: SIGUSR1 writes ``snap-<n>.trace`` into ``snapdir``."""
    from billhub.app.hub import serve
    from billhub.config import load_config
    from billhub.observability.logs import configure

    taken = [0]

    def snap(_signum: int, _frame: Any) -> None:
        if not tracemalloc.is_tracing():
            # Traced from the first snapshot on: what start-up loaded is not traced (it
            # would take minutes under tracemalloc), and whatever is traced in a later
            # snapshot was allocated after the first and is still alive: the growth.
            tracemalloc.start(frames)
        taken[0] += 1
        path = Path(snapdir) / f"snap-{taken[0]}.trace"
        tracemalloc.take_snapshot().dump(str(path))
        path.with_suffix(".done").write_text("", "utf-8")

    signal.signal(signal.SIGUSR1, snap)
    config = load_config(Path(config_path))
    configure(config.log.format, config.log.level)
    asyncio.run(serve(config))
    return 0


def _wait_file(path: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {path.name} after {limit:g} s")
        time.sleep(0.2)


def driver(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from billhub.simulator.demo_data import generate_accounts, write_bills_file
    from billhub.transport.certs import init_dev_certs
    from e2e import Bench, note, rss_kb, wait_for_line  # bench/ is sys.path[0]
    from e2e import parse_args as e2e_args
    from link import Procs

    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="billhub-memsnap-"))
    snapdir = workdir / "snaps"
    snapdir.mkdir()
    eargs = e2e_args(["--batch-accounts", str(args.batch_accounts)])
    bench = Bench(eargs, procs, workdir)
    try:
        init_dev_certs(bench.certs)
        inbox, outbox = workdir / "inbox", workdir / "outbox"
        inbox.mkdir()
        outbox.mkdir()
        batch = generate_accounts("02", args.batch_accounts, eargs.seed, today=bench.today)
        write_bills_file(inbox, "100002", batch, day=bench.today)
        bench.start_biller()
        config = workdir / "billhub.toml"
        config.write_text(bench.hub_config(inbox, outbox), "utf-8")
        log, err = workdir / "hub.log", workdir / "hub.err"
        cmd = [sys.executable, __file__, "--hub", str(config), str(snapdir), str(args.frames)]
        with log.open("wb") as out, err.open("wb") as errf:
            bench.hub = procs.start(cmd, stdout=out, stderr=errf)
        line = wait_for_line(bench.hub, log, err, '"hub_listening"', 600)
        bench.hub_port = int(json.loads(line)["port"])
        note(f"hub listening on {bench.hub_port}")
        rows: list[tuple[int, int]] = []

        def snapshot(answered: int) -> None:
            assert bench.hub is not None
            n = len(rows) + 1
            os.kill(bench.hub.pid, signal.SIGUSR1)
            _wait_file(snapdir / f"snap-{n}.done", 300)
            rows.append((answered, rss_kb(bench.hub.pid).get("VmRSS", 0)))
            note(f"snapshot {n} after {answered} answers: VmRSS {rows[-1][1] / 1024:.1f} MiB")

        answered = 0
        for i in range(args.chunks + 1):
            count = args.warmup if i == 0 else args.chunk
            cmd = bench.load_cmd(bench.hub_port, "mix", in_flight=64, duration=3600, count=count)
            ph = bench.run(f"chunk{i}", cmd, bench.hub_watch(), limit_s=3900)
            bench.advance("100002", ph.summary)
            answered += int(ph.summary.get("total_answered") or count)
            snapshot(answered)
        first = tracemalloc.Snapshot.load(str(snapdir / "snap-1.trace"))
        last = tracemalloc.Snapshot.load(str(snapdir / f"snap-{len(rows)}.trace"))
        flt = [tracemalloc.Filter(False, tracemalloc.__file__)]
        first, last = first.filter_traces(flt), last.filter_traces(flt)
        print(f"VmRSS (answers, MiB): {[(a, round(k / 1024, 1)) for a, k in rows]}")
        for key in ("lineno", "traceback"):
            stats = last.compare_to(first, key)
            grown = sum(s.size_diff for s in stats)
            print(f"\n== by {key}: {grown / 2**20:+.1f} MiB traced between snapshot 1 and last")
            for s in stats[: args.top]:
                print(f"{s.size_diff / 1024:+10.1f} KiB {s.count_diff:+9d} blocks")
                frames = s.traceback.format() if key == "traceback" else [str(s.traceback)]
                for fr in frames[-(args.frames * 2) :]:
                    print("      " + fr.strip())
        return 0
    finally:
        procs.kill_all()
        if args.keep:
            note(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--hub":
        return hub_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    p = argparse.ArgumentParser(prog="bench/memsnap.py", description=__doc__.splitlines()[0])
    p.add_argument("--batch-accounts", type=int, default=20_000)
    p.add_argument("--warmup", type=int, default=20_000, help="answers before snapshot 1")
    p.add_argument("--chunk", type=int, default=50_000, help="answers between snapshots")
    p.add_argument("--chunks", type=int, default=3)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--keep", action="store_true")
    return driver(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
