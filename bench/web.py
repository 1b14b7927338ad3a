"""Bill-inquiry throughput and p99 through the citizen web service, beside the biller's own.

    python bench/web.py [--duration 5] [--concurrency 16] [--accounts 1000]

Three processes: the REST demo biller (``python -m billhub.simulator.rest_biller``),
``billhub web`` (the real CLI, on SQLite, rate limits set out of the way), and this
one, the load: a closed loop of ``--concurrency`` keep-alive connections asking for
random accounts' bills. Measured in the same run:

1. the biller directly, ``GET /accounts/{account}/bills`` (the baseline);
2. the web service's ``GET /api/v1/bills`` for the same REST biller;
3. the web service's ``GET /api/v1/bills`` for a batch biller, answered from the
   journal's bills store (a bills file loaded first, as the hub would).

Prints one JSON object: requests per second and p50/p99 for each, and the web
service's throughput as a share of the biller's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from billhub.config import load_config
from billhub.connectors.batch import BatchConnector
from billhub.journal.factory import build_journal
from billhub.simulator.demo_data import generate_accounts, write_bills_file
from billhub.transport.certs import init_dev_certs

TOKEN = "bench-web-token"
REST, BATCH = "100001", "100002"

CONFIG = """\
[link]
port = 0
[tls]
cert_file = "certs/hub.crt"
key_file = "certs/hub.key"
client_ca_file = "certs/switch-ca.crt"
allowed_subjects = ["switch-1"]
[log]
level = "info"
[journal]
path = "journal.db"
[web]
port = 0
admin_port = 0
client_per_minute = 100000000
account_per_minute = 100000000
[[billers]]
code = "{rest}"
name = "REST biller"
kind = "rest"
budget_s = 5.0
max_concurrency = 64
rest = {{ base_url = "http://127.0.0.1:{port}", token = "{token}" }}
[[billers]]
code = "{batch}"
name = "Batch biller"
kind = "batch"
batch = {{ inbox = "inbox", outbox = "outbox" }}
"""


def pct(data: list[float], p: float) -> float:
    if not data:
        return 0.0
    s = sorted(data)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def wait_line(proc: subprocess.Popen[str], match: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        if match in line:
            return line
    raise RuntimeError(f"no {match!r} from {proc.args}")


async def load(
    urls: list[str], headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    rng = random.Random(7)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
        warm_end = time.perf_counter() + 1.0
        end = warm_end + duration

        async def worker() -> None:
            while True:
                now = time.perf_counter()
                if now >= end:
                    return
                t0 = time.perf_counter()
                async with session.get(rng.choice(urls)) as r:
                    await r.read()
                t1 = time.perf_counter()
                if t0 >= warm_end:
                    latencies.append(t1 - t0)
                    statuses[r.status] = statuses.get(r.status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / duration, 1),
        "p50_ms": round(pct(latencies, 50) * 1000, 2),
        "p99_ms": round(pct(latencies, 99) * 1000, 2),
        "statuses": statuses,
    }


async def load_batch_bills(workdir: Path, accounts: list[Any]) -> None:
    """What the hub does with a bills file: load it into the journal's bills store."""
    config = load_config(workdir / "billhub.toml")
    b = config.biller(BATCH)
    assert b is not None and b.batch is not None
    b.batch.inbox.mkdir(parents=True, exist_ok=True)
    write_bills_file(b.batch.inbox, BATCH, accounts, day=datetime.now(UTC).date())
    js = build_journal(config.journal)
    await js.open()
    try:
        conn = BatchConnector(BATCH, b.batch, js.bills, today=lambda: datetime.now(UTC).date())
        await conn.start(js.journal)
        await conn.poll()
        await conn.close()
    finally:
        await js.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    today = datetime.now(UTC).date()
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        workdir = Path(tmp)
        init_dev_certs(workdir / "certs")
        try:
            biller = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "billhub.simulator.rest_biller",
                    "--port",
                    "0",
                    "--token",
                    TOKEN,
                    "--seed",
                    str(args.seed),
                    "--accounts",
                    str(args.accounts),
                    "--prefix",
                    "01",
                    "--today",
                    today.isoformat(),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            procs.append(biller)
            port = int(wait_line(biller, "listening").strip().rsplit(":", 1)[1])
            (workdir / "billhub.toml").write_text(
                CONFIG.format(rest=REST, batch=BATCH, port=port, token=TOKEN), "utf-8"
            )
            rest_accounts = [
                a.account for a in generate_accounts("01", args.accounts, args.seed, today=today)
            ]
            batch_accounts = generate_accounts("02", args.accounts, args.seed, today=today)
            asyncio.run(load_batch_bills(workdir, batch_accounts))
            web = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "billhub.cli",
                    "web",
                    "--config",
                    str(workdir / "billhub.toml"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            procs.append(web)
            web_port = json.loads(wait_line(web, '"web_listening"'))["port"]
            base = f"http://127.0.0.1:{web_port}/api/v1/bills"
            out: dict[str, Any] = {"concurrency": args.concurrency, "duration_s": args.duration}
            out["biller_direct"] = asyncio.run(
                load(
                    [f"http://127.0.0.1:{port}/accounts/{a}/bills" for a in rest_accounts],
                    {"Authorization": f"Bearer {TOKEN}"},
                    args.concurrency,
                    args.duration,
                )
            )
            out["web_rest"] = asyncio.run(
                load(
                    [f"{base}?company={REST}&account={a}" for a in rest_accounts],
                    {},
                    args.concurrency,
                    args.duration,
                )
            )
            out["web_batch"] = asyncio.run(
                load(
                    [f"{base}?company={BATCH}&account={a.account}" for a in batch_accounts],
                    {},
                    args.concurrency,
                    args.duration,
                )
            )
            direct = out["biller_direct"]["per_s"] or 1.0
            out["web_rest_share_of_biller"] = round(out["web_rest"]["per_s"] / direct, 3)
            print(json.dumps(out, indent=2))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
