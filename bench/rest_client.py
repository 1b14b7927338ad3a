"""The REST connector's own CPU per call, against the demo biller in another process.

    .venv/bin/python bench/rest_client.py [--calls 3000] [--concurrency 16]

Starts ``python -m billhub.simulator.rest_biller`` (its own process), warms the
connector's pool, then makes ``--calls`` inquiries (``open_bills``, answer parsed
and checked) from ``--concurrency`` tasks and prints this process's CPU per call
(``time.process_time``: user + system, this process only) and the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime

from billhub.config import RestSettings
from billhub.connectors.rest import RestConnector
from billhub.simulator.demo_data import generate_accounts


async def measure(port: int, accounts: list[str], calls: int, concurrency: int) -> str:
    settings = RestSettings(base_url=f"http://127.0.0.1:{port}", token="bench")
    rc = RestConnector("100001", settings, max_concurrency=32, call_timeout=5)

    async def worker(i: int, n: int) -> None:
        for k in range(n):
            await rc.open_bills(accounts[(i * 977 + k) % len(accounts)])

    try:
        await asyncio.gather(*(worker(i, 50) for i in range(concurrency)))
        c0, t0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(worker(i, calls // concurrency) for i in range(concurrency)))
        c1, t1 = time.process_time(), time.monotonic()
    finally:
        await rc.close()
    n = calls // concurrency * concurrency
    return f"{n} inquiries: {(c1 - c0) / n * 1e6:.0f} CPU µs per call, {n / (t1 - t0):.0f}/s"


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/rest_client.py")
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    today = datetime.now(UTC).date()
    cmd = [sys.executable, "-m", "billhub.simulator.rest_biller", "--port", "0", "--token"]
    cmd += ["bench", "--seed", "7", "--accounts", "2000", "--prefix", "01"]
    cmd += ["--today", today.isoformat()]
    biller = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert biller.stdout is not None
        line = biller.stdout.readline()
        while line and "listening" not in line:
            line = biller.stdout.readline()
        port = int(line.strip().rsplit(":", 1)[1])
        accounts = [
            a.account for a in generate_accounts("01", 2000, 7, today=today) if a.status == "active"
        ]
        print(asyncio.run(measure(port, accounts, args.calls, args.concurrency)))
    finally:
        biller.kill()
        biller.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
