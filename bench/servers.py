"""Bare mutual-TLS servers for ``bench/link.py``: the limits the hub is measured against.

Run as its own process (the benchmark starts it with :mod:`subprocess`)::

    python bench/servers.py --mode echo  --certs DIR [--host 127.0.0.1] [--port 0]
    python bench/servers.py --mode codec --certs DIR

Both use the hub's own TLS set-up: :func:`billhub.transport.tls.server_context`
(TLS 1.2+, client certificate required, chained to the switch CA) and, right after
the handshake and before any byte is read, :class:`billhub.transport.tls.AllowList`
(``switch-1``). Frames are split with billhub's :class:`~billhub.iso8583.framing.Framer`.

``echo``
    answers each frame with the same bytes, the MTI's third digit + 1 and the
    repeat digit cleared (0800 -> 0810): no decoding at all. The transport limit.
``codec``
    decodes each frame with the bundled spec (:meth:`Codec.decode`), builds the
    answer with :func:`make_response` (DE 39 ``00``) and encodes it
    (:meth:`Codec.frame`). The codec limit.

Like the hub's link, each ``data_received`` chunk is answered with one write.
Once listening it prints ``LISTENING <port>`` (flushed) on stdout, and the event loop
on stderr (``--event-loop``: ``auto``, uvloop where installed, as ``billhub serve``); it
runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from billhub.errors import DecodeError, FramingError, LocalProtocolError, TlsRefused
from billhub.iso8583.codec import Codec
from billhub.iso8583.framing import Framer
from billhub.iso8583.spec import load_spec
from billhub.link.responses import make_response
from billhub.transport.eventloop import EVENT_LOOPS, loop_name
from billhub.transport.eventloop import run as run_on_loop
from billhub.transport.tls import AllowList, server_context

Answer = Callable[[bytes], bytes | None]

_ZERO = ord("0")


def echo_answer(header: int) -> Answer:
    """Same bytes back, MTI third digit + 1, fourth digit 0 (0800 -> 0810); no decoding."""

    def answer(body: bytes) -> bytes | None:
        if len(body) < 4:
            return None
        out = body[:2] + bytes((body[2] + 1, _ZERO)) + body[4:]
        return len(out).to_bytes(header, "big") + out

    return answer


def codec_answer(codec: Codec) -> Answer:
    """Decode, answer ``00`` by the echo rules, encode with the length header."""
    rules = codec.spec.rules

    def answer(body: bytes) -> bytes | None:
        try:
            msg = codec.decode(body)
            return codec.frame(make_response(rules, msg, "00"))
        except (DecodeError, LocalProtocolError):
            return None

    return answer


class BareLink(asyncio.Protocol):
    """One TLS connection: allow-list check, then frames in, answers out."""

    def __init__(self, allow: AllowList, answer: Answer, max_len: int, header: int) -> None:
        self.allow = allow
        self.answer = answer
        self.framer = Framer(max_len, header)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        obj = transport.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        try:
            self.allow.check(der)
        except TlsRefused as refused:
            print(f"refused: {refused.reason}", file=sys.stderr, flush=True)
            transport.abort()
            return
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        t = self.transport
        if t is None:
            return
        framer = self.framer
        answer = self.answer
        out = bytearray()
        try:
            framer.receive_data(data)
            while (body := framer.next_frame()) is not None:
                reply = answer(body)
                if reply is not None:
                    out += reply
        except FramingError:
            t.abort()
            return
        if out:
            t.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(args: argparse.Namespace) -> None:
    certs = Path(args.certs)
    ctx = server_context(certs / "hub.crt", certs / "hub.key", certs / "switch-ca.crt")
    allow = AllowList(["switch-1"])
    spec = load_spec(args.spec)
    answer = echo_answer(spec.length_header) if args.mode == "echo" else codec_answer(Codec(spec))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: BareLink(allow, answer, spec.max_message_length, spec.length_header),
        args.host,
        args.port,
        ssl=ctx,
        ssl_handshake_timeout=10.0,
        reuse_address=True,
    )
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"LISTENING {port}", flush=True)
    print(f"event loop: {loop_name()}", file=sys.stderr, flush=True)
    await stop.wait()
    server.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--mode", choices=["echo", "codec"], required=True)
    p.add_argument("--certs", required=True, help="folder made by init_dev_certs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--spec", default=None, help="link spec file (default: bundled v1)")
    p.add_argument("--event-loop", choices=EVENT_LOOPS, default="auto", help="as billhub serve's")
    args = p.parse_args()
    run_on_loop(serve(args), args.event_loop, key="--event-loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
