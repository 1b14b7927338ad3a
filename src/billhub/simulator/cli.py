"""``billhub switch``: the simulated switch from the command line.

Each command connects over mutual TLS, signs on, does its exchange and prints
one line per answer; ``load`` prints throughput and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from billhub.errors import BillhubError, ConfigError
from billhub.iso8583.codec import Codec
from billhub.iso8583.mask import mask_account
from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec
from billhub.simulator import messages as m
from billhub.simulator.demo_data import generate_accounts
from billhub.simulator.load import make_workload, run_fast_load, run_load
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context


def add_switch_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    p = sub.add_parser("switch", help="play the national switch against a hub")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8583)
    p.add_argument("--certs", default="certs", help="folder made by `billhub certs init`")
    p.add_argument("--cert", help="client certificate (default: CERTS/switch.crt)")
    p.add_argument("--key", help="client key (default: CERTS/switch.key)")
    p.add_argument("--ca", help="CA of the hub's certificate (default: CERTS/hub-ca.crt)")
    p.add_argument("--spec", help="link spec file (default: the bundled link-v1.toml)")
    p.add_argument("--acquirer", default="600001")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub2 = p.add_subparsers(dest="switch_command", required=True)
    sub2.add_parser("signon", help="sign on and sign off")
    sub2.add_parser("echo", help="sign on and send an echo test")
    q = sub2.add_parser("inquiry", help="bill inquiry")
    q.add_argument("--biller", required=True)
    q.add_argument("--account", required=True)
    q.add_argument("--rrn", default=None)
    for name, helptext in (
        ("pay", "bill payment"),
        ("repeat", "payment, then its 0201 repeat"),
        ("reverse", "payment, then its 0420 reversal"),
    ):
        x = sub2.add_parser(name, help=helptext)
        x.add_argument("--biller", required=True)
        x.add_argument("--account", required=True)
        x.add_argument("--amount", type=int, required=True, help="minor units")
        x.add_argument("--date", default=None, help="settlement date MMDD (default: today)")
        x.add_argument("--bill", default=None, help="bill id (DE 48 BI)")
        x.add_argument("--rrn", default=None)
    c = sub2.add_parser("cutover", help="cutover to a new settlement date")
    c.add_argument("--date", required=True, help="MMDD")
    r = sub2.add_parser("reconcile", help="0500 reconciliation totals for one biller and date")
    r.add_argument("--biller", required=True)
    r.add_argument("--date", required=True)
    r.add_argument("--count", type=int, default=0)
    r.add_argument("--total", type=int, default=0)
    r.add_argument("--reversal-count", type=int, default=0)
    r.add_argument("--reversal-total", type=int, default=0)
    ld = sub2.add_parser("load", help="N requests in flight over L links for T seconds")
    ld.add_argument("--links", type=int, default=2)
    ld.add_argument("--in-flight", type=int, default=64)
    ld.add_argument("--duration", type=float, default=5.0)
    ld.add_argument("--warmup", type=float, default=0.5)
    ld.add_argument("--kind", choices=["echo", "inquiry", "payment", "mix"], default="echo")
    ld.add_argument("--biller", default="100001")
    ld.add_argument("--account", default="0100123456", help="the account of --kind inquiry")
    ld.add_argument("--no-sign-on", action="store_true")
    ld.add_argument(
        "--engine",
        choices=["fast", "link"],
        default="fast",
        help="fast: request templates and a minimal answer parser (default); "
        "link: every message through SwitchLink and the codec (echo and inquiry only)",
    )
    ld.add_argument(
        "--rate", type=float, default=0.0, help="open loop: requests per second (0: closed loop)"
    )
    ld.add_argument(
        "--count", type=int, default=0, help="stop after N requests (after warm-up) are answered"
    )
    ld.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    demo = ld.add_argument_group(
        "demo subscribers",
        "inquiries and payments over generate_accounts(PREFIX, ACCOUNTS, SEED, today=TODAY), "
        "the same arguments as the biller's (rest_biller, or the batch biller's bills file)",
    )
    demo.add_argument("--accounts", type=int, default=0, help="how many demo subscribers")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--prefix", default="01", help="2-digit account prefix")
    demo.add_argument("--today", default=None, help="YYYY-MM-DD (default: today, UTC)")
    demo.add_argument(
        "--payment-share", type=float, default=0.5, help="share of payments in --kind mix"
    )
    demo.add_argument(
        "--settlement-date", default=None, help="DE 15 of payments, MMDD (default: today, UTC)"
    )
    demo.add_argument(
        "--rrn-tag",
        type=int,
        default=None,
        help="first 4 RRN digits, unique per run against one journal (default: from the clock)",
    )
    demo.add_argument("--bill-offset", type=int, default=0, help="bills paid by earlier runs")
    demo.add_argument("--account-offset", type=int, default=0, help="first account asked about")
    demo.add_argument("--expect", default=None, help="expect this DE 39 for every answer")
    p.set_defaults(func=func)


def _today_mmdd() -> str:
    return datetime.now(UTC).strftime("%m%d")


def _rrn() -> str:
    return datetime.now(UTC).strftime("%H%M%S%f")[:12]


def describe(msg: Message) -> dict[str, Any]:
    """What the simulator prints of an answer (the account masked like the hub's logs)."""
    out: dict[str, Any] = {"mti": msg.mti, "code": msg.fields.get(39)}
    for key, n in (("stan", 11), ("rrn", 37), ("amount", 4), ("approval", 38), ("network", 70)):
        if n in msg.fields:
            out[key] = msg.fields[n]
    if 102 in msg.fields:
        out["account"] = mask_account(msg.fields[102])
    if 48 in msg.fields:
        out["de48"] = msg.fields[48]
    return out


def _context(args: argparse.Namespace) -> Any:
    certs = Path(args.certs)
    return client_context(
        args.cert or certs / "switch.crt",
        args.key or certs / "switch.key",
        args.ca or certs / "hub-ca.crt",
    )


async def _session(args: argparse.Namespace) -> list[Message]:
    codec = Codec(load_spec(args.spec))
    ctx = _context(args)
    cmd = args.switch_command
    if cmd == "load":
        return await _load(args, codec, ctx)
    try:
        link = await SwitchLink.connect(args.host, args.port, ctx, codec)
    except (OSError, TimeoutError) as exc:
        raise ConfigError("switch", f"cannot connect to {args.host}:{args.port}: {exc}") from None
    out = [await link.sign_on()]
    acq = m.Acquirer(acquirer=args.acquirer)
    if cmd == "echo":
        out.append(await link.echo())
    elif cmd == "inquiry":
        out.append(
            await link.request(m.inquiry(args.biller, args.account, args.rrn or _rrn(), acq))
        )
    elif cmd in ("pay", "repeat", "reverse"):
        pay = m.payment(
            args.biller,
            args.account,
            args.rrn or _rrn(),
            args.amount,
            args.date or _today_mmdd(),
            bill_id=args.bill,
            acq=acq,
        )
        out.append(await link.request(pay))
        if cmd == "repeat":
            out.append(await link.request(m.repeat(pay)))
        elif cmd == "reverse":
            out.append(await link.request(m.reversal(pay)))
    elif cmd == "cutover":
        out.append(await link.cutover(args.date))
    elif cmd == "reconcile":
        out.append(
            await link.request(
                m.reconciliation(
                    args.biller,
                    args.date,
                    count=args.count,
                    total=args.total,
                    reversal_count=args.reversal_count,
                    reversal_total=args.reversal_total,
                )
            )
        )
    if cmd == "signon":
        out.append(await link.sign_off())
    await link.close()
    return out


async def _load(args: argparse.Namespace, codec: Codec, ctx: Any) -> list[Message]:
    if args.engine == "link":
        return await _load_link(args, codec, ctx)
    accounts = None
    if args.accounts > 0:
        today = date.fromisoformat(args.today) if args.today else datetime.now(UTC).date()
        accounts = generate_accounts(args.prefix, args.accounts, args.seed, today=today)
    rrn_tag = args.rrn_tag if args.rrn_tag is not None else int(time.time()) % 10_000
    try:
        workload = make_workload(
            codec,
            args.kind,
            biller=args.biller,
            account=args.account,
            accounts=accounts,
            payment_share=args.payment_share,
            settlement_date=args.settlement_date or _today_mmdd(),
            rrn_tag=rrn_tag,
            acq=m.Acquirer(acquirer=args.acquirer),
            bill_offset=args.bill_offset,
            account_offset=args.account_offset,
            expect=args.expect,
        )
    except ValueError as exc:
        raise ConfigError("switch load", str(exc)) from None
    result = await run_fast_load(
        args.host,
        args.port,
        ctx,
        codec,
        workload,
        links=args.links,
        in_flight=args.in_flight,
        duration=args.duration,
        warmup=args.warmup,
        sign_on=not args.no_sign_on,
        timeout=args.timeout,
        rate=args.rate,
        count=args.count,
    )
    summary = result.summary()
    summary["rrn_tag"] = rrn_tag
    print(json.dumps(summary) if args.json else result.line())
    return []


async def _load_link(args: argparse.Namespace, codec: Codec, ctx: Any) -> list[Message]:
    """The original engine: every message through SwitchLink, Link and the codec."""
    if args.kind not in ("echo", "inquiry") or args.rate or args.count or args.accounts:
        raise ConfigError(
            "switch load", "--engine link does only --kind echo|inquiry, closed loop, by duration"
        )
    if args.kind == "echo":

        def make(i: int) -> Message:
            return Message("0800", {70: "301"})
    else:

        def make(i: int) -> Message:
            return m.inquiry(args.biller, args.account, f"{i:012d}")

    result = await run_load(
        args.host,
        args.port,
        ctx,
        codec,
        make,
        links=args.links,
        in_flight=args.in_flight,
        duration=args.duration,
        warmup=args.warmup,
        sign_on=not args.no_sign_on,
        timeout=args.timeout,
    )
    summary = result.summary()
    summary["engine"] = "link"
    print(json.dumps(summary) if args.json else result.line())
    return []


def run_switch(args: argparse.Namespace) -> int:
    try:
        answers = asyncio.run(_session(args))
    except (BillhubError, OSError) as exc:
        raise ConfigError("switch", str(exc)) from None
    for a in answers:
        d = describe(a)
        if args.json:
            print(json.dumps(d, ensure_ascii=False))
        else:
            print("  ".join(f"{k}={v}" for k, v in d.items()))
    return 0
