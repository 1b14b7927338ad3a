"""What one link fact costs, in process: from the shell's call to the last subscriber.

Each fact is built and handed to the hub's bus exactly as the transport does, with the
hub's two subscribers (the log, into a null stream at ``info``, and the metrics). The
baseline, timed in the same run and interleaved with it, is those two subscribers
given a fact built beforehand, one after the other: the difference is what the
vocabulary itself (building the fact, the bus's loop) costs per fact. CPU time of
this thread, best of ``--repeat``, so that other processes on the machine add little::

    .venv/bin/python bench/link_facts.py [--number 5000] [--repeat 40]
"""

from __future__ import annotations

import argparse
import io
import time
import timeit
from collections.abc import Callable

from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec
from billhub.link.facts import EchoRoundTrip, Exchanged, LinkEvent, LinkInfo, LinkStateChanged
from billhub.observability.bus import LinkEventBus
from billhub.observability.logs import LogObserver, configure
from billhub.observability.metrics import Metrics
from billhub.transport.tls import REFUSAL_REASONS

BILLER = "100002"


class _Null(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def cases() -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """Fact name -> (through the bus, the subscribers alone)."""
    configure("json", "info", stream=_Null())
    info = LinkInfo("L1", "127.0.0.1:40000", "CN=switch-1")
    base = {7: "1126120000", 11: "000001", 32: "600001", 37: "000000000001", 100: BILLER}
    inquiry = Message("0200", {**base, 3: "310000", 4: "0" * 12, 102: "0212345678"})
    answer = Message("0210", {39: "00"})
    echo = Message("0800", {7: "1126120000", 11: "000002", 70: "301"})
    echo_answer = Message("0810", {7: "1126120000", 11: "000002", 70: "301", 39: "00"})
    log = LogObserver()
    mx = Metrics(
        billers=[BILLER],
        rules=load_spec(None).rules,
        refusal_reasons=REFUSAL_REASONS,
        process_metrics=False,
    )
    bus = LinkEventBus(log, mx.link_event)
    out: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {}

    def pair(name: str, build: Callable[[], LinkEvent]) -> None:
        built = build()

        def through_bus() -> None:
            bus(build())  # as the transport: built, then handed over

        def alone() -> None:
            log(built)
            mx.link_event(built)

        out[name] = (through_bus, alone)

    pair("message (0200 at info)", lambda: Exchanged(info, inquiry, answer, 0.012, "handled"))
    pair("echo exchange (0800)", lambda: Exchanged(info, echo, echo_answer, 0.0, "echo"))
    pair("echo round trip", lambda: EchoRoundTrip(info, 0.001))
    pair("state change", lambda: LinkStateChanged(info, "connected", "signed_on"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--number", type=int, default=5000, help="facts per timing")
    p.add_argument("--repeat", type=int, default=40, help="timings per case; the best counts")
    args = p.parse_args(argv)
    print(f"bench/link_facts.py  --number {args.number} --repeat {args.repeat}")
    print(f"{'fact':<24} {'bus µs':>8} {'alone µs':>9} {'overhead µs':>12}")
    for name, (bus, alone) in cases().items():
        best_bus = best_alone = float("inf")
        for _ in range(args.repeat):  # interleaved: drift hits both alike
            best_bus = min(best_bus, timeit.Timer(bus, timer=time.thread_time).timeit(args.number))
            t = timeit.Timer(alone, timer=time.thread_time).timeit(args.number)
            best_alone = min(best_alone, t)
        b, a = best_bus / args.number * 1e6, best_alone / args.number * 1e6
        print(f"{name:<24} {b:>8.2f} {a:>9.2f} {b - a:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
