"""``billhub switch``: the simulated switch from the command line.

Each command connects over mutual TLS, signs on, does its exchange and prints
one line per answer; ``load`` prints throughput and latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from billhub.errors import BillhubError, LinkClosed, RequestTimeout, TlsRefused
from billhub.iso8583 import codes as rc
from billhub.iso8583.codec import Codec
from billhub.iso8583.codes import MEANINGS
from billhub.iso8583.mask import mask_account
from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec
from billhub.settlement.calendar import parse_day, parse_settlement_mmdd
from billhub.simulator import messages as m
from billhub.simulator.demo_data import generate_accounts
from billhub.simulator.load import make_workload, run_fast_load, run_load
from billhub.simulator.switch import SwitchLink
from billhub.transport.eventloop import EVENT_LOOPS, loop_name
from billhub.transport.eventloop import run as run_on_loop
from billhub.transport.tls import client_context


def _sub(sub: Any, name: str, about: str, *examples: str) -> argparse.ArgumentParser:
    """A switch sub-command whose page starts with its description and ends with examples."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=about,
        description=f"{about[0].upper()}{about[1:]}.",
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _settlement_date(text: str) -> str:
    """``--date`` of the switch: YYYY-MM-DD, or MMDD as DE 15 carries it."""
    try:
        return parse_settlement_mmdd(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _day(text: str) -> date:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_switch_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    p = sub.add_parser(
        "switch",
        help="play the national switch against a hub",
        description="Play the national switch against a hub: connect over mutual TLS, sign "
        "on, send the requests of one command and print one line per answer (code=00 is "
        "approved; every code is in specs/response-codes.md). The exit status is 0 "
        "whenever the hub answered, whatever the code.",
        epilog="examples:\n"
        "  billhub switch --certs certs echo\n"
        "  billhub switch --certs certs inquiry --biller 0010 --account 0184056064\n"
        "  billhub switch --certs certs pay --biller 0010 --account 0184056064 --amount 1253900\n"
        "  billhub switch --certs certs load --links 2 --in-flight 64 --duration 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="the hub's address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8583, help="the hub's link port (default 8583)")
    p.add_argument(
        "--certs", default="certs", help="folder made by `billhub certs init` (default certs)"
    )
    p.add_argument("--cert", help="client certificate (default: CERTS/switch.crt)")
    p.add_argument("--key", help="client key (default: CERTS/switch.key)")
    p.add_argument("--ca", help="CA of the hub's certificate (default: CERTS/hub-ca.crt)")
    p.add_argument("--spec", help="link spec file (default: the bundled link-v1.toml)")
    p.add_argument(
        "--acquirer",
        default="600001",
        help="acquiring institution id sent in DE 32 (default 600001)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="auto (uvloop if installed; the default), uvloop or asyncio",
    )
    sub2 = p.add_subparsers(dest="switch_command", required=True, metavar="COMMAND")
    _sub(sub2, "signon", "sign on, then sign off", "billhub switch signon")
    _sub(sub2, "echo", "sign on and send an echo test", "billhub switch echo")
    q = _sub(
        sub2,
        "inquiry",
        "bill inquiry: the open bills and the amount due of an account",
        "billhub switch inquiry --biller 0010 --account 0184056064",
    )
    q.add_argument("--biller", required=True, help="biller code (DE 100), as configured")
    q.add_argument("--account", required=True, help="subscriber account (DE 102)")
    q.add_argument(
        "--rrn", default=None, help="retrieval reference number (default: from the clock)"
    )
    for name, about in (
        ("pay", "bill payment"),
        ("repeat", "bill payment, then its 0201 repeat (the same answer comes back)"),
        ("reverse", "bill payment, then its 0420 reversal"),
    ):
        x = _sub(
            sub2,
            name,
            about,
            f"billhub switch {name} --biller 0010 --account 0184056064 --amount 1253900",
        )
        x.add_argument("--biller", required=True, help="biller code (DE 100), as configured")
        x.add_argument("--account", required=True, help="subscriber account (DE 102)")
        x.add_argument(
            "--amount", type=int, required=True, help="amount in minor units (125000 = 1,250.00)"
        )
        x.add_argument(
            "--date",
            type=_settlement_date,
            default=None,
            help="settlement date, YYYY-MM-DD or MMDD (default: today, UTC)",
        )
        x.add_argument("--bill", default=None, help="the one bill id to pay (DE 48 BI)")
        x.add_argument(
            "--rrn", default=None, help="retrieval reference number (default: from the clock)"
        )
    c = _sub(
        sub2,
        "cutover",
        "cutover: close the settlement dates before a new one",
        "billhub switch cutover --date 2026-11-25",
    )
    c.add_argument(
        "--date",
        type=_settlement_date,
        required=True,
        help="the new settlement date, YYYY-MM-DD or MMDD",
    )
    r = _sub(
        sub2,
        "reconcile",
        "0500 reconciliation: the switch's totals of one biller and closed date",
        "billhub switch reconcile --biller 0010 --date 2026-11-24 --count 1 --total 1253900",
    )
    r.add_argument("--biller", required=True, help="biller code (DE 100)")
    r.add_argument(
        "--date", type=_settlement_date, required=True, help="settlement date, YYYY-MM-DD or MMDD"
    )
    r.add_argument("--count", type=int, default=0, help="approved payments (DE 74; default 0)")
    r.add_argument(
        "--total", type=int, default=0, help="their sum in minor units (DE 86; default 0)"
    )
    r.add_argument("--reversal-count", type=int, default=0, help="reversals (DE 75; default 0)")
    r.add_argument(
        "--reversal-total",
        type=int,
        default=0,
        help="their sum in minor units (DE 87; default 0)",
    )
    ld = _sub(
        sub2,
        "load",
        "N requests in flight over L links for T seconds; prints throughput and latency",
        "billhub switch load --links 2 --in-flight 64 --duration 5",
        "billhub switch load --kind mix --accounts 1000 --biller 0010 --today 2026-11-24",
    )
    ld.add_argument("--links", type=int, default=2, help="links to open (default 2)")
    ld.add_argument(
        "--in-flight", type=int, default=64, help="requests in flight per link (default 64)"
    )
    ld.add_argument(
        "--duration", type=float, default=5.0, help="seconds to run, after warm-up (default 5)"
    )
    ld.add_argument(
        "--warmup", type=float, default=0.5, help="seconds not counted at the start (default 0.5)"
    )
    ld.add_argument(
        "--kind",
        choices=["echo", "inquiry", "payment", "mix"],
        default="echo",
        help="what to send (default echo)",
    )
    ld.add_argument("--biller", default="100001", help="biller code (DE 100; default 100001)")
    ld.add_argument("--account", default="0100123456", help="the account of --kind inquiry")
    ld.add_argument("--no-sign-on", action="store_true", help="do not sign on first (expect 91s)")
    ld.add_argument(
        "--engine",
        choices=["fast", "link"],
        default="fast",
        help="fast: request templates and a minimal answer parser (default); "
        "link: every message through the switch link and the codec (echo and inquiry only)",
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
        "inquiries and payments over the demo biller's own subscribers: give the same "
        "--accounts, --seed, --prefix and --today as the demo biller (or the bills file) got",
    )
    demo.add_argument("--accounts", type=int, default=0, help="how many demo subscribers")
    demo.add_argument("--seed", type=int, default=1, help="the demo biller's --seed (default 1)")
    demo.add_argument("--prefix", default="01", help="2-digit account prefix (default 01)")
    demo.add_argument("--today", type=_day, default=None, help="YYYY-MM-DD (default: today, UTC)")
    demo.add_argument(
        "--payment-share", type=float, default=0.5, help="share of payments in --kind mix"
    )
    demo.add_argument(
        "--settlement-date",
        type=_settlement_date,
        default=None,
        help="DE 15 of payments, YYYY-MM-DD or MMDD (default: today, UTC)",
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


class SwitchError(BillhubError):
    """The simulated switch could not do its exchange; the message is the one line shown."""


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
    files = (
        ("--cert", Path(args.cert) if args.cert else certs / "switch.crt"),
        ("--key", Path(args.key) if args.key else certs / "switch.key"),
        ("--ca", Path(args.ca) if args.ca else certs / "hub-ca.crt"),
    )
    for option, path in files:
        if not path.is_file():
            hint = "" if getattr(args, option[2:]) else f" (make it: billhub certs init {certs})"
            raise SwitchError(f"switch {option}: no such file: {path}{hint}")
    try:
        return client_context(*(path for _, path in files))
    except BillhubError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise SwitchError(f"switch: the certificates in {certs} do not load: {reason}") from None


def _why(exc: OSError) -> str:
    """An OSError as a reason a person reads ("connection refused"), not its repr."""
    return os.strerror(exc.errno).lower() if exc.errno else str(exc.strerror or exc)


async def _session(args: argparse.Namespace) -> list[Message]:
    codec = Codec(load_spec(args.spec))
    ctx = _context(args)
    cmd = args.switch_command
    if cmd == "load":
        return await _load(args, codec, ctx)
    try:
        link = await SwitchLink.connect(args.host, args.port, ctx, codec)
    except TimeoutError:
        raise SwitchError(
            f"cannot connect to the hub at {args.host}:{args.port}: no answer in time"
        ) from None
    except OSError as exc:
        raise SwitchError(
            f"cannot connect to the hub at {args.host}:{args.port}: {_why(exc)}"
        ) from None
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
        today = args.today if args.today is not None else datetime.now(UTC).date()
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
        raise SwitchError(f"switch load: {exc}") from None
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
    summary["event_loop"] = loop_name()
    print(json.dumps(summary) if args.json else result.line())
    return []


async def _load_link(args: argparse.Namespace, codec: Codec, ctx: Any) -> list[Message]:
    """The original engine: every message through SwitchLink, Link and the codec."""
    if args.kind not in ("echo", "inquiry") or args.rate or args.count or args.accounts:
        raise SwitchError(
            "switch load: --engine link does only --kind echo or inquiry, closed loop, by duration"
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
    summary["event_loop"] = loop_name()
    print(json.dumps(summary) if args.json else result.line())
    return []


def run_switch(args: argparse.Namespace) -> int:
    try:
        answers = run_on_loop(_session(args), args.event_loop, key="--event-loop")
    except SwitchError:
        raise
    except TlsRefused as exc:
        raise SwitchError(f"the hub at {args.host}:{args.port} refused the link: {exc}") from None
    except LinkClosed:
        raise SwitchError(f"the hub at {args.host}:{args.port} closed the link") from None
    except RequestTimeout:
        raise SwitchError(f"the hub at {args.host}:{args.port} did not answer in time") from None
    except BillhubError as exc:
        raise SwitchError(f"switch: {exc}") from None
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else f" {args.host}:{args.port}"
        raise SwitchError(f"switch:{where}: {_why(exc)}") from None
    for a in answers:
        d = describe(a)
        if args.json:
            print(json.dumps(d, ensure_ascii=False))
        else:
            code = d.get("code")
            meaning = f" ({MEANINGS[code]})" if code in MEANINGS and code != rc.APPROVED else ""
            print("  ".join(f"{k}={v}" for k, v in d.items()) + meaning)
    return 0
