"""The REST demo biller's own latency, asked directly (no hub): the baseline of bench/e2e.py.

Run as its own process::

    python bench/rest_direct.py --url http://127.0.0.1:PORT --token T --accounts N --seed S \\
        --prefix 01 --today YYYY-MM-DD --concurrency C --duration D [--payment-share 0.5]
        [--bill-offset K] [--account-offset K] [--warmup 1]

It makes the calls the hub's REST connector makes for the same switch requests, over
one pooled ``aiohttp`` session of ``--concurrency`` keep-alive connections: an inquiry
is ``GET /accounts/{account}/bills``, a payment ``PUT /payments/{id}`` of one open bill
(named by ``bill_id``, for its amount), in the same deterministic order and mix as
``billhub switch load --kind mix`` (inquiries over every account the biller knows,
payments over the open bills of active accounts, one per bill, from ``--bill-offset``).
Closed loop: ``--concurrency`` calls outstanding. Prints one JSON object: calls
answered in the window, throughput, p50/p99 per kind and overall, HTTP statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, date, datetime
from typing import Any

import aiohttp

from billhub.simulator.demo_data import generate_accounts


def pct(data: list[float], p: float) -> float:
    if not data:
        return 0.0
    data = sorted(data)
    k = max(0, min(len(data) - 1, round(p / 100 * len(data) + 0.5) - 1))
    return data[k]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    today = date.fromisoformat(args.today)
    accounts = generate_accounts(args.prefix, args.accounts, args.seed, today=today)
    asked = [a.account for a in accounts if a.status == "active" or a.bills]
    bills = [(a.account, b) for a in accounts if a.status == "active" for b in a.bills]
    settlement = today.isoformat()
    state = {"acc": 0.0, "bill": args.bill_offset, "account": args.account_offset, "n": 0}
    lat: dict[str, list[float]] = {"inquiry": [], "payment": []}
    statuses: dict[str, dict[int, int]] = {"inquiry": {}, "payment": {}}
    errors = 0
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=0)
    headers = {"Authorization": f"Bearer {args.token}", "Accept": "application/json"}
    base = args.url.rstrip("/")
    loop = asyncio.get_running_loop()
    start = loop.time() + args.warmup
    end = start + args.duration
    marks: dict[str, float] = {}

    def mark(which: str) -> None:
        marks[f"{which}_wall"], marks[f"{which}_cpu"] = time.time(), time.process_time()

    loop.call_at(start, mark, "start")
    loop.call_at(end, mark, "end")

    def next_call() -> tuple[str, str, str, bytes | None]:
        state["acc"] += args.payment_share
        state["n"] += 1
        if state["acc"] >= 1.0:
            state["acc"] -= 1.0
            account, bill = bills[int(state["bill"]) % len(bills)]
            state["bill"] += 1
            pid = f"D{args.tag:04d}{int(state['n']):010d}"
            body = {
                "account": account,
                "bill_id": bill.bill_id,
                "amount": bill.amount,
                "settlement_date": settlement,
                "acquirer": "600001",
                "rrn": f"{args.tag:04d}{int(state['n']):08d}",
                "channel": "6013",
                "paid_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            return "payment", "PUT", f"{base}/payments/{pid}", json.dumps(body).encode()
        account = asked[int(state["account"]) % len(asked)]
        state["account"] += 1
        return "inquiry", "GET", f"{base}/accounts/{account}/bills", None

    async with aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:

        async def worker() -> None:
            nonlocal errors
            while True:
                kind, method, url, body = next_call()
                t0 = loop.time()
                if t0 >= end:
                    return
                try:
                    async with session.request(
                        method,
                        url,
                        data=body,
                        headers={"Content-Type": "application/json"} if body else None,
                    ) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                t1 = loop.time()
                if t0 >= start and t1 <= end:
                    lat[kind].append(t1 - t0)
                    statuses[kind][status] = statuses[kind].get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    every = lat["inquiry"] + lat["payment"]
    out: dict[str, Any] = {
        "concurrency": args.concurrency,
        "seconds": args.duration,
        "answered": len(every),
        "errors": errors,
        "throughput_per_s": round(len(every) / args.duration, 1),
        "p50_ms": round(pct(every, 50) * 1000, 3),
        "p99_ms": round(pct(every, 99) * 1000, 3),
        "by_kind": {
            k: {
                "answered": len(v),
                "p50_ms": round(pct(v, 50) * 1000, 3),
                "p99_ms": round(pct(v, 99) * 1000, 3),
                "statuses": {str(s): n for s, n in statuses[k].items()},
            }
            for k, v in lat.items()
        },
        "window": {
            "epoch_start": marks.get("start_wall", 0.0),
            "epoch_end": marks.get("end_wall", 0.0),
            "cpu_s": round(marks.get("end_cpu", 0.0) - marks.get("start_cpu", 0.0), 4),
        },
        "next_bill": state["bill"],
        "next_account": state["account"],
    }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--accounts", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--prefix", default="01")
    p.add_argument("--today", required=True)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--payment-share", type=float, default=0.5)
    p.add_argument("--bill-offset", type=int, default=0)
    p.add_argument("--account-offset", type=int, default=0)
    p.add_argument("--tag", type=int, default=int(time.time()) % 10_000)
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
