"""Operators' commands: ``billhub status`` and ``billhub journal show``.

``status`` reads a running hub's admin port (``/status``) and prints links, billers,
the resolver's backlog and the business day's totals as a table (``--json``: the
API's JSON as is). ``journal show --rrn`` prints one transaction's whole story from
the journal: the request, the answer, the posting at the biller, the resolver's
work and the reversal, with the account masked.

The journal is opened read-only through its factory (SQLite: ``mode=ro``): the
command is safe next to a running hub (WAL readers never block its writer) and
never creates or migrates anything. Every failure is one line on stderr and a
non-zero exit (the ``cli`` main turns :class:`OpsError` into that line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billhub.config import JournalConfig, load_config
from billhub.errors import BillhubError, JournalError
from billhub.iso8583.mask import mask_account
from billhub.journal.factory import build_journal, describe
from billhub.money import Amount
from billhub.pipeline.model import PaymentRecord, ReversalRecord, TaskRecord
from billhub.pipeline.ports import JournalReader
from billhub.settlement.calendar import parse_settlement_mmdd

DEFAULT_ADMIN_URL = "http://127.0.0.1:9100"


class OpsError(BillhubError):
    """An operator command could not do its job; the message is the one line shown."""


def add_ops_parsers(sub: Any) -> None:
    """Register ``status`` and ``journal show`` on the ``billhub`` sub-parsers."""
    about = "links, billers, resolver backlog and today's totals of a running hub"
    st = sub.add_parser(
        "status",
        help=about,
        description=about + ", read from its admin port.",
        epilog="examples:\n  billhub status\n  billhub status --url http://10.0.0.5:9100 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument(
        "--url",
        default=DEFAULT_ADMIN_URL,
        help=f"the hub's admin port (default {DEFAULT_ADMIN_URL})",
    )
    st.add_argument("--json", action="store_true", help="print the status API's JSON")
    st.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the hub (default 5)"
    )
    st.set_defaults(func=cmd_status)

    j = sub.add_parser(
        "journal", help="read the journal", description="Read the hub's journal (read-only)."
    )
    jsub = j.add_subparsers(dest="journal_command", required=True, metavar="COMMAND")
    about = "one transaction's whole story, by RRN"
    show = jsub.add_parser(
        "show",
        help=about,
        description=about + ": request, answer, posting, resolver work, reversal. "
        "Read-only, safe beside a running hub; the billers' tokens are not needed.",
        epilog="examples:\n  billhub journal show --rrn 000000000042 --config billhub.toml\n"
        "  billhub journal show --rrn 000000000042 --date 2026-11-24 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("--rrn", required=True, help="retrieval reference number (DE 37)")
    show.add_argument(
        "--config", default="billhub.toml", help="the hub's configuration (default billhub.toml)"
    )
    show.add_argument("--journal", default=None, help="SQLite journal file (instead of --config)")
    show.add_argument("--acquirer", default=None, help="DE 32, when the RRN is not unique")
    show.add_argument(
        "--date", default=None, help="settlement date, YYYY-MM-DD (or MMDD as in DE 15)"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_journal_show)


# -- billhub status -----------------------------------------------------------------------


def fetch_status(url: str, timeout: float) -> dict[str, Any]:
    """GET ``URL/status``; raises :class:`OpsError` with one line on any failure."""
    base = url.rstrip("/")
    if not base.endswith("/status"):
        base += "/status"
    if not base.startswith(("http://", "https://")):
        raise OpsError(f"--url must start with http:// or https://, not {url!r}")
    try:
        with urllib.request.urlopen(base, timeout=timeout) as resp:  # noqa: S310 (checked above)
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise OpsError(f"{base}: not found (is this a billhub admin port?)") from None
        raise OpsError(f"{base}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise OpsError(f"cannot reach the hub's admin port at {url}: {why}") from None
    except TimeoutError:
        raise OpsError(f"cannot reach the hub's admin port at {url}: no answer in time") from None
    except OSError as exc:
        raise OpsError(
            f"cannot reach the hub's admin port at {url}: {exc.strerror or exc}"
        ) from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise OpsError(f"{base}: the answer is not JSON (is this a billhub admin port?)") from None
    if not isinstance(data, dict) or "links" not in data:
        raise OpsError(f"{base}: the answer is not a billhub status")
    return data


def cmd_status(args: argparse.Namespace) -> int:
    data = fetch_status(args.url, args.timeout)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_status(data, args.url))
    return 0


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(out).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _money(minor: Any, currency: Any) -> str:
    if not isinstance(minor, int):
        return "-"
    return Amount(minor, str(currency or "760")).format()


def render_status(data: dict[str, Any], url: str) -> str:
    """The status JSON as a terminal table."""
    lines: list[str] = []
    state = "READY" if data.get("ready") else "NOT READY"
    lines.append(
        f"billhub at {url}: {state}  (up {_duration(float(data.get('uptime_s', 0)))}, "
        f"business day {data.get('business_day', '-')})"
    )
    for p in data.get("problems", []):
        lines.append(f"  problem: {p}")
    for w in data.get("warnings", []):
        lines.append(f"  warning: {w}")

    links = data.get("links", [])
    signed = sum(1 for link in links if link.get("state") == "signed_on")
    lines += ["", f"LINKS  {len(links)} connected, {signed} signed on"]
    if links:
        rows = [
            [
                str(link.get("link", "")),
                str(link.get("peer", "")),
                str(link.get("subject", "")),
                str(link.get("state", "")),
                str(link.get("in_flight", "")),
            ]
            for link in links
        ]
        lines += _table(["LINK", "PEER", "SUBJECT", "STATE", "IN FLIGHT"], rows, {4})

    billers = data.get("billers", [])
    lines += ["", "BILLERS"]
    if billers:
        rows = []
        for b in billers:
            today = b.get("today") or {}
            cur = today.get("currency")
            err = b.get("recent_error_rate")
            rows.append(
                [
                    str(b.get("code", "")),
                    str(b.get("name", "")),
                    str(b.get("kind", "")),
                    str(b.get("state", "")),
                    f"{err * 100:.1f} %" if isinstance(err, int | float) else "-",
                    str(b.get("recent_calls", "-")),
                    str(today.get("approved_count", "-")),
                    _money(today.get("approved_amount"), cur),
                    str(today.get("reversal_count", "-")),
                    _money(today.get("reversal_amount"), cur),
                ]
            )
        headers = [
            "CODE",
            "NAME",
            "KIND",
            "STATE",
            "ERRORS",
            "CALLS",
            "APPROVED",
            "AMOUNT",
            "REVERSED",
            "AMOUNT",
        ]
        lines += _table(headers, rows, {4, 5, 6, 7, 8, 9})
        for b in billers:
            if b.get("last_failure"):
                ago = b.get("last_failure_s_ago")
                when = f" ({_duration(float(ago))} ago)" if isinstance(ago, int | float) else ""
                lines.append(f"  {b.get('code')}: last failure {b['last_failure']}{when}")
            err = (b.get("today") or {}).get("error")
            if err:
                lines.append(f"  {b.get('code')}: today's totals unavailable: {err}")
    else:
        lines.append("  (none configured)")

    res = data.get("resolver") or {}
    lines.append("")
    if "error" in res:
        lines.append(f"RESOLVER  unavailable: {res['error']}")
    elif res:
        oldest = ""
        if res.get("backlog"):
            oldest = f", oldest {_duration(float(res.get('oldest_age_s') or 0))} old"
        lines.append(f"RESOLVER  backlog {res.get('backlog', 0)}{oldest}")
    else:
        lines.append("RESOLVER  (none)")
    return "\n".join(lines) + "\n"


# -- billhub journal show -------------------------------------------------------------------


@dataclass
class Story:
    """One transaction in the journal: its payment, reversal and resolver tasks."""

    payment: PaymentRecord | None
    reversal: ReversalRecord | None
    tasks: list[TaskRecord] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        rec = self.payment or self.reversal
        assert rec is not None
        return rec.key.acquirer, rec.key.rrn, rec.key.settlement_mmdd


def _journal_config(args: argparse.Namespace) -> JournalConfig:
    if args.journal:
        return JournalConfig(kind="sqlite", path=Path(args.journal))
    return load_config(Path(args.config), biller_secrets=False).journal


async def read_stories(
    config: JournalConfig, rrn: str, *, acquirer: str | None = None, mmdd: str | None = None
) -> list[Story]:
    """Every payment and reversal with this RRN (and acquirer, date), read-only."""
    if config.path is not None and not config.path.is_file():
        raise OpsError(f"no journal at {config.path}")
    stores = build_journal(config, read_only=True)
    try:
        await stores.open()
    except JournalError as exc:
        raise OpsError(f"cannot read the journal: {exc}") from None
    try:
        return await _read(stores.reader, rrn.strip(), acquirer, mmdd)
    except JournalError as exc:
        raise OpsError(f"cannot read the journal {stores.where}: {exc}") from None
    finally:
        await stores.close()


async def _read(
    reader: JournalReader, rrn: str, acquirer: str | None, mmdd: str | None
) -> list[Story]:
    payments = await reader.payments_by_rrn(rrn, acquirer=acquirer, mmdd=mmdd)
    reversals = await reader.reversals_by_rrn(rrn, acquirer=acquirer, mmdd=mmdd)
    stories: dict[tuple[str, str, str], Story] = {}
    for p in payments:
        stories[(p.key.acquirer, p.key.rrn, p.key.settlement_mmdd)] = Story(p, None)
    for rv in reversals:
        k = (rv.key.acquirer, rv.key.rrn, rv.key.settlement_mmdd)
        if k in stories:
            stories[k].reversal = rv
        else:
            stories[k] = Story(None, rv)
    for story in stories.values():
        pid = story.payment.payment_id if story.payment else None
        pid = pid or (story.reversal.payment_id if story.reversal else None)
        if pid is not None:
            story.tasks = await reader.task_history(pid)
    return list(stories.values())


def _ts(value: datetime | None) -> str | None:
    """A time as the journal writes it (UTC, microseconds, ``Z``)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def story_json(s: Story) -> dict[str, Any]:
    """A story as JSON, the account masked and DE 48 left out (names, bill data)."""
    out: dict[str, Any] = {
        "acquirer": s.key[0],
        "rrn": s.key[1].rstrip(),
        "settlement_mmdd": s.key[2],
        "payment": None,
        "reversal": None,
        "tasks": [],
    }
    if (p := s.payment) is not None:
        out["payment"] = {
            "request": {
                "received_at": _ts(p.received_at),
                "biller": p.biller,
                "account": mask_account(p.account),
                "bill_id": p.bill_id,
                "amount": p.amount,
                "currency": p.currency,
                "channel": p.channel,
                "forwarder": p.forwarder,
                "settlement_date": p.settlement_date.isoformat(),
            },
            "answer": {
                "response_code": p.response_code,
                "state": p.state.value,
                "answered_at": _ts(p.answered_at),
                "approval_code": p.approval_code,
            },
            "posting": {
                "payment_id": p.payment_id,
                "receipt": p.receipt,
                "reversed": p.reversed,
                "resolution": p.resolution.value if p.resolution else None,
            },
        }
    if (r := s.reversal) is not None:
        out["reversal"] = {
            "received_at": _ts(r.received_at),
            "amount": r.amount,
            "response_code": r.response_code,
            "payment_id": r.payment_id,
            "booked_on": r.booked_on.isoformat() if r.booked_on else None,
            "cancel_state": r.cancel_state,
        }
    for tr in s.tasks:
        t = tr.task
        out["tasks"].append(
            {
                "task_id": t.task_id,
                "kind": t.kind.value,
                "attempts": t.attempts,
                "created_at": _ts(t.created_at),
                "next_at": _ts(t.next_at),
                "done_at": _ts(tr.done_at),
                "outcome": tr.outcome,
                "detail": t.detail,
            }
        )
    return out


def render_story(s: Story) -> str:
    d = story_json(s)
    lines = [f"RRN {d['rrn']}  acquirer {d['acquirer']}  settlement {d['settlement_mmdd']}"]
    p = d["payment"]
    if p is None:
        lines.append("  payment   none in the journal (the original was never seen)")
    else:
        rq, an, po = p["request"], p["answer"], p["posting"]
        money = _money(rq["amount"], rq["currency"])
        lines += [
            f"  request   {rq['received_at']}  biller {rq['biller']}  account {rq['account']}"
            f"  bill {rq['bill_id'] or '-'}",
            f"            amount {money} ({rq['currency']})  channel {rq['channel']}"
            f"  forwarder {rq['forwarder']}  settlement date {rq['settlement_date']}",
            f"  answer    {an['response_code'] or '-'} ({an['state']})"
            f"  at {an['answered_at'] or '-'}  approval {an['approval_code'] or '-'}",
            f"  posting   payment id {po['payment_id']}  receipt {po['receipt'] or '-'}"
            f"  reversed {'yes' if po['reversed'] else 'no'}"
            f"  resolution {po['resolution'] or '-'}",
        ]
    for t in d["tasks"]:
        state = f"done {t['done_at']}: {t['outcome']}" if t["done_at"] else "open"
        detail = "  " + json.dumps(t["detail"], sort_keys=True) if t["detail"] else ""
        lines.append(
            f"  resolver  task {t['task_id']} {t['kind']}  attempts {t['attempts']}"
            f"  created {t['created_at']}  {state}{detail}"
        )
    r = d["reversal"]
    if r is None:
        lines.append("  reversal  none")
    else:
        lines.append(
            f"  reversal  {r['received_at']}  amount {_money(r['amount'], None)}"
            f"  answer {r['response_code']}  booked on {r['booked_on'] or '-'}"
            f"  cancel {r['cancel_state']}"
        )
    return "\n".join(lines) + "\n"


def cmd_journal_show(args: argparse.Namespace) -> int:
    try:
        mmdd = parse_settlement_mmdd(args.date) if args.date is not None else None
    except ValueError as exc:
        raise OpsError(f"--date: {exc}") from None
    config = _journal_config(args)
    stories = asyncio.run(read_stories(config, args.rrn, acquirer=args.acquirer, mmdd=mmdd))
    if not stories:
        raise OpsError(
            f"no payment or reversal with RRN {args.rrn.strip()} in {describe(config)} "
            "(inquiries are not journaled)"
        )
    if args.json:
        print(json.dumps([story_json(s) for s in stories], indent=2, sort_keys=True))
    else:
        sys.stdout.write("\n".join(render_story(s) for s in stories))
    return 0
