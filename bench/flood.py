"""Issue 14's floods against a real hub: can a new switch link still get in?

The hub (``billhub serve``) runs in its own process, the flood in another, and this
process plays the switch: every 0.5 s a new link connects with the switch's
certificate, signs on and sends an inquiry, each try bounded at 3 s. Printed per flood:
tries, successes, time to sign on (p50, max), and the hub's log lines per second.

    .venv/bin/python bench/flood.py                      # this tree's hub
    .venv/bin/python bench/flood.py --hub-src /tmp/main/src --label before
    .venv/bin/python bench/flood.py --duration 30 --only raw8,unsigned16

``--hub-src`` runs another checkout's hub (e.g. ``git archive main src | tar -x -C
/tmp/main``) for a before/after in the same run conditions. The hub gets the issue's
limits: ``max_handshakes = 8``, ``handshake_timeout_s = 10``, ``max_links = 16``; every
other key at its default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

from billhub.iso8583.codec import Codec
from billhub.iso8583.spec import load_spec
from billhub.simulator import messages as m
from billhub.simulator.switch import SwitchLink
from billhub.transport.certs import DEV_FILES, init_dev_certs
from billhub.transport.tls import client_context
from harness import HubConfig, Procs, hub_cmd, session  # bench/ is sys.path[0]

FLOODS = {
    "none0": "no flood: the baseline, same hub, same probe",
    "raw8": "8 plain TCP connections, never TLS, reconnecting when closed",
    "raw66": "66 plain TCP connections, never TLS, reconnecting when closed",
    "stalled16": "16 connections sending half a ClientHello, then nothing",
    "trickle100": "100 connections sending one byte a second",
    "unsigned16": "16 mTLS links with the switch's certificate that never sign on",
}
BOUND_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hub_config(port: int, work: Path) -> HubConfig:
    return HubConfig(
        work.parent / "certs",
        work / "journal.db",
        port=port,
        link={"max_links": 16, "max_handshakes": 8, "handshake_timeout_s": 10},
        comment="Written by bench/flood.py.",
    )


def context(certs: dict[str, Path]) -> ssl.SSLContext:
    return client_context(certs["switch_cert"], certs["switch_key"], certs["hub_ca_cert"])


# -- the flood (its own process) ---------------------------------------------------------


async def _until_closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
        while await reader.read(4096):
            pass


def _hello(ctx: ssl.SSLContext) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def flood(kind: str, port: int, certs: dict[str, Path]) -> None:
    ctx = context(certs)
    hello = _hello(ctx)

    async def raw() -> None:
        while True:
            with contextlib.suppress(OSError):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                if kind.startswith("stalled"):
                    w.write(hello[: len(hello) // 2])
                await _until_closed(r)
                w.close()
            await asyncio.sleep(0)

    async def trickle() -> None:
        while True:
            with contextlib.suppress(OSError):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                closed = asyncio.create_task(_until_closed(r))
                for b in hello:
                    if closed.done():
                        break
                    w.write(bytes([b]))
                    await asyncio.sleep(1.0)
                await closed
                w.close()

    async def unsigned() -> None:
        while True:
            with contextlib.suppress(OSError, ssl.SSLError):
                r, w = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
                )
                await _until_closed(r)
                w.close()
            await asyncio.sleep(0.05)

    n = int("".join(c for c in kind if c.isdigit()))
    if n == 0:
        await asyncio.Event().wait()
    worker = {"raw": raw, "stalled": raw, "trickle": trickle, "unsigned": unsigned}[
        kind.rstrip("0123456789")
    ]
    await asyncio.gather(*(worker() for _ in range(n)))


# -- the switch (this process) -----------------------------------------------------------


async def one_try(port: int, ctx: ssl.SSLContext, codec: Codec, rrn: str) -> float | None:
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(BOUND_S):
            link = await SwitchLink.connect("127.0.0.1", port, ctx, codec)
            try:
                if (await link.sign_on()).fields.get(39) != "00":
                    return None
                answer = await link.request(m.inquiry("100001", "0100123456", rrn))
                if answer.mti != "0210":
                    return None
            finally:
                await link.close()
    except Exception:  # any failure (time-out, reset, refused) is a try that failed
        return None
    return time.monotonic() - t0


async def probe(port: int, certs: dict[str, Path], duration: float) -> list[float | None]:
    ctx = context(certs)
    codec = Codec(load_spec())
    results: list[float | None] = []
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        i += 1
        results.append(await one_try(port, ctx, codec, f"BENCH{i:07d}"))
        await asyncio.sleep(0.5)
    return results


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the hub exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit("the hub did not listen within 30 s")


def run_one(
    procs: Procs, kind: str, args: argparse.Namespace, certs: dict[str, Path], work: Path
) -> str:
    port = free_port()
    cfg = work / f"{kind}.toml"
    cfg.write_text(hub_config(port, work / kind).toml())
    (work / kind).mkdir(exist_ok=True)
    log = work / f"{kind}.log"
    env = dict(os.environ)
    if args.hub_src:
        env["PYTHONPATH"] = str(Path(args.hub_src).resolve())
    hub = procs.start_logged(hub_cmd(cfg), log, log.with_suffix(".err"), env=env)
    try:
        wait_listening(port, hub)
        lines0 = log.read_bytes().count(b"\n")
        flooder = procs.start(
            [
                sys.executable,
                __file__,
                "--worker",
                kind,
                "--port",
                str(port),
                "--certs",
                args.certs,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)  # the flood fills the slots first
            t0 = time.monotonic()
            results = asyncio.run(probe(port, certs, args.duration))
            elapsed = time.monotonic() - t0
        finally:
            procs.stop(flooder)
        lines = log.read_bytes().count(b"\n") - lines0
    finally:
        procs.stop(hub)
    ok = [r for r in results if r is not None]
    p50 = f"{statistics.median(ok):.2f}" if ok else "-"
    top = f"{max(ok):.2f}" if ok else "-"
    return (
        f"{args.label:<7} {kind:<11} tries {len(results):>3}  signed on {len(ok):>3}  "
        f"p50 {p50:>5} s  max {top:>5} s  log {lines / elapsed:>7.1f} lines/s"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of probing per flood")
    ap.add_argument("--only", default=",".join(FLOODS), help="comma-separated floods")
    ap.add_argument("--hub-src", default=None, help="run the hub from this src/ directory")
    ap.add_argument("--label", default="after")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (hub logs)")
    ap.add_argument("--certs", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        certs = {k: Path(args.certs) / name for k, name in DEV_FILES.items()}
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(flood(args.worker, args.port, certs))
        return 0
    with session("flood", keep=args.keep) as (procs, work):
        certs = init_dev_certs(work / "certs")
        args.certs = str(work / "certs")
        print(f"# {' '.join(sys.argv)}  (cpus {os.cpu_count()}, work {work})", flush=True)
        for kind in args.only.split(","):
            print(f"#   {kind}: {FLOODS[kind]}", flush=True)
            print(run_one(procs, kind, args, certs, work), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
