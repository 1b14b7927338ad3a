"""Load: N requests in flight over L links for T seconds, with latency percentiles.

Each link keeps its share of the in-flight requests busy: as soon as an answer
arrives the next request goes out (a closed loop), so throughput is what the
hub sustains at that concurrency and latency is measured per request from
send to matched answer.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from billhub.errors import BillhubError
from billhub.iso8583.codec import Codec
from billhub.iso8583.message import Message
from billhub.simulator.switch import SwitchLink

RequestFactory = Callable[[int], Message]


@dataclass
class LoadResult:
    links: int
    in_flight: int
    seconds: float
    sent: int = 0
    answered: int = 0
    failed: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency in seconds at percentile ``p`` (0-100), nearest-rank."""
        if not self.latencies:
            return 0.0
        data = sorted(self.latencies)
        k = max(0, min(len(data) - 1, round(p / 100 * len(data) + 0.5) - 1))
        return data[k]

    def summary(self) -> dict[str, object]:
        return {
            "links": self.links,
            "in_flight": self.in_flight,
            "seconds": round(self.seconds, 3),
            "answered": self.answered,
            "failed": self.failed,
            "throughput_per_s": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50) * 1000, 3),
            "p99_ms": round(self.percentile(99) * 1000, 3),
            "p999_ms": round(self.percentile(99.9) * 1000, 3),
            "codes": dict(self.codes),
        }

    def line(self) -> str:
        s = self.summary()
        return (
            f"{s['answered']} answered in {s['seconds']} s over {self.links} link(s), "
            f"{self.in_flight} in flight: {s['throughput_per_s']}/s, p50 {s['p50_ms']} ms, "
            f"p99 {s['p99_ms']} ms, p99.9 {s['p999_ms']} ms, failed {self.failed}, "
            f"codes {json.dumps(s['codes'], sort_keys=True)}"
        )


async def run_load(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    codec: Codec,
    make_request: RequestFactory,
    *,
    links: int = 2,
    in_flight: int = 64,
    duration: float = 5.0,
    warmup: float = 0.5,
    sign_on: bool = True,
    timeout: float = 30.0,
) -> LoadResult:
    """Drive the hub; counts only what completes after ``warmup`` and before the end."""
    loop = asyncio.get_running_loop()
    conns = [await SwitchLink.connect(host, port, ssl_context, codec) for _ in range(links)]
    if sign_on:
        for c in conns:
            await c.sign_on()
    result = LoadResult(links, in_flight, duration)
    start = loop.time() + warmup
    end = start + duration
    seq = 0

    async def worker(conn: SwitchLink) -> None:
        nonlocal seq
        while True:
            seq += 1
            msg = make_request(seq)
            t0 = loop.time()
            if t0 >= end:
                return
            try:
                resp = await conn.request(msg, timeout)
            except BillhubError:
                if t0 >= start:
                    result.failed += 1
                if conn.is_closed:
                    return
                continue
            t1 = loop.time()
            if t0 >= start and t1 <= end:
                result.answered += 1
                result.latencies.append(t1 - t0)
                result.codes[resp.fields.get(39, "--")] += 1

    workers = [worker(conns[i % links]) for i in range(in_flight)]
    await asyncio.gather(*workers)
    result.sent = seq
    for c in conns:
        await c.close()
    return result
