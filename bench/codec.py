"""In-process codec benchmark: what the codec limit server does per message, two ways.

Per message: ``decode`` a request body, ``make_response(rules, msg, "00")``, ``frame``
the answer, as ``bench/servers.py --mode codec`` does. Measured for the pyiso8583-based
:class:`~billhub.iso8583.reference.ReferenceCodec` and the compiled
:class:`~billhub.iso8583.codec.Codec`, interleaved (reference, compiled, reference, ...)
so that a noisy neighbour disturbs both alike, best of ``--repeat`` rounds::

    .venv/bin/python bench/codec.py                 # echo test, inquiry, payment
    .venv/bin/python bench/codec.py --repeat 9 --count 20000

Prints CPU µs per message (process time) for each codec and message kind, and the
ratio. Both codecs must answer with the same bytes; the script stops if they do not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from billhub.iso8583.codec import Codec
from billhub.iso8583.de48 import build_tlv
from billhub.iso8583.message import Message
from billhub.iso8583.reference import ReferenceCodec
from billhub.iso8583.spec import load_spec
from billhub.link.responses import make_response

REQUESTS = {
    "echo 0800": Message("0800", {7: "1124094512", 11: "000001", 70: "301"}),
    "inquiry 0200": Message(
        "0200",
        {
            3: "310000",
            4: "000000000000",
            7: "1124094512",
            11: "000123",
            12: "124512",
            13: "1124",
            18: "6013",
            32: "600001",
            33: "700001",
            37: "000000000123",
            49: "760",
            100: "100001",
            102: "0100123456",
        },
    ),
    "payment 0200 + DE 48": Message(
        "0200",
        {
            3: "500000",
            4: "000000012345",
            7: "1124094512",
            11: "000124",
            12: "124512",
            13: "1124",
            15: "1124",
            18: "6013",
            32: "600001",
            33: "700001",
            37: "000000000124",
            48: build_tlv([("BI", "B-2024-01"), ("CN", "محمد العلي")]),
            49: "760",
            100: "100001",
            102: "0100123456",
        },
    ),
}


def answerer(codec: Codec | ReferenceCodec) -> Callable[[bytes], bytes]:
    rules = codec.spec.rules

    def answer(body: bytes) -> bytes:
        return codec.frame(make_response(rules, codec.decode(body), "00"))

    return answer


def per_message_us(answer: Callable[[bytes], bytes], body: bytes, count: int) -> float:
    """CPU µs per message: process time, so that waiting for a busy machine's cores
    does not count (wall time would)."""
    start = time.process_time()
    for _ in range(count):
        answer(body)
    return (time.process_time() - start) / count * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=10_000, help="messages per round")
    p.add_argument("--repeat", type=int, default=5, help="rounds; the best is reported")
    args = p.parse_args()
    spec = load_spec()
    ref, fast = ReferenceCodec(spec), Codec(spec)
    ans_ref, ans_fast = answerer(ref), answerer(fast)
    print(f"{sys.executable} bench/codec.py --count {args.count} --repeat {args.repeat}")
    print(f"{'message':<22} {'pyiso8583 µs':>13} {'compiled µs':>12} {'ratio':>7}")
    for name, msg in REQUESTS.items():
        body = ref.encode(msg)
        if ans_ref(body) != ans_fast(body):
            print(f"{name}: the codecs answer differently", file=sys.stderr)
            return 1
        best_ref = best_fast = float("inf")
        for _ in range(args.repeat):
            best_ref = min(best_ref, per_message_us(ans_ref, body, args.count))
            best_fast = min(best_fast, per_message_us(ans_fast, body, args.count))
        print(f"{name:<22} {best_ref:>13.2f} {best_fast:>12.2f} {best_ref / best_fast:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
