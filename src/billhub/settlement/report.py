"""The settlement report of one settlement date: figures for machines (CSV) and people (HTML).

Pure: plain records in, :class:`DayReport` out, then CSV texts and one HTML page
out; the caller reads the journal and writes the files. Every figure is
integer minor units, summed once here from the same filtered records, so the
summary per biller, the breakdowns per acquirer and per channel, and the grand
total agree to the last minor unit by construction (and :func:`build_report`
checks it anyway). Amounts become text (``1,234,567.89 SYP``) only when the HTML
is rendered.

What counts for a date (LINK-SPEC 6.5): payments *approved* for it, later
reversed or not (DE 74/86), and reversals answered ``00`` for it (DE 75/87);
the net (DE 97) is what the company is owed. A reversal that arrived after its
date's 0500 was answered (LINK-SPEC 6.4) is in those totals *and* listed as a
post-reconciliation adjustment.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

import jinja2

from billhub.iso8583 import codes as rc
from billhub.iso8583.mask import mask_account
from billhub.money import Amount
from billhub.pipeline.model import PaymentRecord, PaymentState, ReversalRecord
from billhub.settlement.model import (
    UNKNOWN_CHANNEL,
    DayGroup,
    Finding,
    FindingKind,
    Reconciliation,
    Totals,
)

CHANNELS = {  # DE 18
    "6010": "Bank branch",
    "6011": "ATM",
    "6012": "Internet banking",
    "6013": "Mobile wallet",
    "6014": "Post office",
}

CURRENCY_LABEL = "SYP"

# Order of the exceptions, in the CSV and on the page.
EXCEPTION_KINDS = (
    FindingKind.RECONCILIATION.value,
    FindingKind.SWITCH_ONLY.value,
    FindingKind.HUB_ONLY.value,
    FindingKind.AMOUNT_DIFFERS.value,
    FindingKind.REVERSED_ONE_SIDE.value,
    "adjustment",  # a reversal applied after its date's 0500 was answered
    "uncertain",  # a payment answered 91 whose posting is still being resolved
)

TOTALS_COLUMNS = (
    "payments_count",
    "payments_amount",
    "reversals_count",
    "reversals_amount",
    "net",
)
EXCEPTION_COLUMNS = ("kind", "biller", "acquirer", "rrn", "hub", "switch", "detail", "source")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a summary or breakdown: a biller, an acquirer or a channel."""

    code: str
    name: str
    totals: Totals


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A reversal of the date applied after the date's 0500 was answered."""

    biller: str
    acquirer: str
    rrn: str
    amount: int
    received_at: datetime
    reconciled_at: datetime | None  # when the biller's first 0510 of the date went out
    booked_on: date | None


@dataclass(frozen=True, slots=True)
class OpenUncertain:
    """A payment answered ``91`` whose posting at the biller is not resolved yet."""

    payment_id: str
    biller: str
    acquirer: str
    rrn: str
    account_masked: str  # never the whole account
    amount: int
    settlement_date: date
    received_at: datetime
    age: timedelta


@dataclass(frozen=True, slots=True)
class ExceptionRow:
    """One exception as the CSV and the page list it; ``hub``/``switch`` are text."""

    kind: str
    biller: str
    acquirer: str
    rrn: str
    hub: str
    switch: str
    detail: str
    source: str


@dataclass(frozen=True, slots=True)
class DayReport:
    """Everything the reports of one settlement date show, as integers and plain text."""

    settlement_date: date
    generated_at: datetime
    billers: tuple[Row, ...]  # by code; every configured biller, active or not
    acquirers: tuple[Row, ...]  # by code; those with activity
    channels: tuple[Row, ...]  # by code; every DE 18 channel, then unknown ones
    total: Totals
    reconciliations: Mapping[str, Reconciliation]  # the latest 0510 per biller
    findings: tuple[Finding, ...]  # reconciliation and settlement-file findings
    adjustments: tuple[Adjustment, ...]
    uncertain: tuple[OpenUncertain, ...]
    exceptions: tuple[ExceptionRow, ...]  # all of the above three, in EXCEPTION_KINDS order


class _Acc:
    """A mutable Totals while summing."""

    __slots__ = ("amount", "count", "rev_amount", "rev_count")

    def __init__(self) -> None:
        self.count = self.amount = self.rev_count = self.rev_amount = 0

    def freeze(self) -> Totals:
        return Totals(self.count, self.amount, self.rev_count, self.rev_amount)


def group_records(
    settlement_date: date,
    payments: Iterable[PaymentRecord],
    reversals: Iterable[ReversalRecord],
) -> list[DayGroup]:
    """The :class:`DayGroup` sums of ``settlement_date`` from records, as the journal's
    ``day_groups`` computes them in SQL (tests hold the two to the same figures).

    ``payments`` and ``reversals`` may hold more than the date's counting records:
    only approved payments and ``00`` reversals of ``settlement_date`` count.
    ``payments`` must hold the originals of those reversals (they have the same
    settlement date) for the channel; a reversal whose original is missing is
    put under channel ``unknown`` so that totals still agree.
    """
    sums: dict[tuple[str, str, str], _Acc] = {}
    channel_of: dict[str, str] = {}

    def acc(key: tuple[str, str, str]) -> _Acc:
        a = sums.get(key)
        if a is None:
            a = sums[key] = _Acc()
        return a

    for p in payments:
        if p.settlement_date != settlement_date:
            continue
        channel_of[p.payment_id] = p.channel
        if p.state is not PaymentState.APPROVED:
            continue
        a = acc((p.biller, p.key.acquirer, p.channel))
        a.count += 1
        a.amount += p.amount
    for r in reversals:
        if r.response_code != rc.APPROVED or r.settlement_date != settlement_date:
            continue
        channel = UNKNOWN_CHANNEL
        if r.payment_id is not None:
            channel = channel_of.get(r.payment_id, UNKNOWN_CHANNEL)
        a = acc((r.biller, r.key.acquirer, channel))
        a.rev_count += 1
        a.rev_amount += r.amount
    return [DayGroup(b, q, ch, a.freeze()) for (b, q, ch), a in sorted(sums.items())]


def build_report(
    settlement_date: date,
    *,
    billers: Mapping[str, str],
    groups: Iterable[DayGroup],
    reconciliations: Iterable[Reconciliation],
    findings: Iterable[Finding],
    uncertain_open: Iterable[PaymentRecord],
    adjustments: Iterable[ReversalRecord],
    generated_at: datetime,
    acquirers: Mapping[str, str] | None = None,
) -> DayReport:
    """The report of ``settlement_date`` from the date's sums and the journal's
    exceptions, computed once.

    Every argument but the date is keyword-only: four of them are lists of
    records, and a swapped pair would still type-check.

    ``groups`` are the date's sums per biller, acquirer and channel (the journal's
    ``day_groups``, or :func:`group_records`). ``reconciliations`` and
    ``findings`` of other dates are ignored; ``adjustments`` (reversals of the
    date applied after its 0500 was answered) and ``uncertain_open`` are shown as
    given. A biller not in ``billers`` that has activity still gets its row, with
    an empty name.
    """
    acquirer_names = acquirers or {}
    by_biller: dict[str, _Acc] = {code: _Acc() for code in billers}
    by_acquirer: dict[str, _Acc] = {}
    by_channel: dict[str, _Acc] = {code: _Acc() for code in CHANNELS}
    grand = _Acc()

    def acc(table: dict[str, _Acc], code: str) -> _Acc:
        a = table.get(code)
        if a is None:
            a = table[code] = _Acc()
        return a

    for g in groups:
        t = g.totals
        for a in (
            acc(by_biller, g.biller),
            acc(by_acquirer, g.acquirer),
            acc(by_channel, g.channel),
            grand,
        ):
            a.count += t.count
            a.amount += t.amount
            a.rev_count += t.reversal_count
            a.rev_amount += t.reversal_amount

    def rows(table: dict[str, _Acc], names: Callable[[str], str]) -> tuple[Row, ...]:
        return tuple(Row(code, names(code), table[code].freeze()) for code in sorted(table))

    biller_rows = rows(by_biller, lambda c: billers.get(c, ""))
    acquirer_rows = rows(by_acquirer, lambda c: acquirer_names.get(c, ""))
    channel_rows = rows(
        by_channel, lambda c: CHANNELS.get(c, "Unknown" if c == UNKNOWN_CHANNEL else "")
    )
    total = grand.freeze()
    for label, part in (("billers", biller_rows), ("acquirers", acquirer_rows)):
        _check_sum(label, part, total)
    _check_sum("channels", channel_rows, total)

    latest: dict[str, Reconciliation] = {}  # what the summary shows: the last 0510
    first_answered: dict[str, datetime] = {}  # where adjustments start: the first 0510
    for rec in reconciliations:
        if rec.settlement_date != settlement_date:
            continue
        prev = latest.get(rec.biller)
        if prev is None or rec.answered_at >= prev.answered_at:
            latest[rec.biller] = rec
        first = first_answered.get(rec.biller)
        if first is None or rec.answered_at < first:
            first_answered[rec.biller] = rec.answered_at

    kind_rank = {k: i for i, k in enumerate(EXCEPTION_KINDS)}
    day_findings = tuple(
        sorted(
            (f for f in findings if f.settlement_date == settlement_date),
            key=lambda f: (kind_rank.get(f.kind, 99), f.biller, f.acquirer or "", f.rrn or ""),
        )
    )
    adj = tuple(
        sorted(
            (
                Adjustment(
                    biller=r.biller,
                    acquirer=r.key.acquirer,
                    rrn=r.key.rrn.rstrip(),
                    amount=r.amount,
                    received_at=r.received_at,
                    reconciled_at=first_answered.get(r.biller),
                    booked_on=r.booked_on,
                )
                for r in adjustments
            ),
            key=lambda a: (a.biller, a.received_at, a.acquirer, a.rrn),
        )
    )
    unc = tuple(
        sorted(
            (
                OpenUncertain(
                    payment_id=p.payment_id,
                    biller=p.biller,
                    acquirer=p.key.acquirer,
                    rrn=p.key.rrn.rstrip(),
                    account_masked=mask_account(p.account) or "",
                    amount=p.amount,
                    settlement_date=p.settlement_date,
                    received_at=p.received_at,
                    age=max(generated_at - p.received_at, timedelta(0)),
                )
                for p in uncertain_open
            ),
            key=lambda u: (u.received_at, u.payment_id),
        )
    )
    exceptions = (
        tuple(
            ExceptionRow(
                kind=f.kind.value,
                biller=f.biller,
                acquirer=f.acquirer or "",
                rrn=f.rrn or "",
                hub=f.hub,
                switch=f.switch,
                detail=f.detail,
                source=f.source,
            )
            for f in day_findings
        )
        + tuple(
            ExceptionRow(
                kind="adjustment",
                biller=a.biller,
                acquirer=a.acquirer,
                rrn=a.rrn,
                hub=_syp(a.amount),
                switch="",
                detail=_adjustment_detail(a),
                source="reversal",
            )
            for a in adj
        )
        + tuple(
            ExceptionRow(
                kind="uncertain",
                biller=u.biller,
                acquirer=u.acquirer,
                rrn=u.rrn,
                hub=_syp(u.amount),
                switch="",
                detail=(
                    f"answered 91, posting not resolved; account {u.account_masked}, "
                    f"settlement date {u.settlement_date.isoformat()}, open for {_age(u.age)}"
                ),
                source=f"payment:{u.payment_id}",
            )
            for u in unc
        )
    )
    return DayReport(
        settlement_date=settlement_date,
        generated_at=generated_at,
        billers=biller_rows,
        acquirers=acquirer_rows,
        channels=channel_rows,
        total=total,
        reconciliations=latest,
        findings=day_findings,
        adjustments=adj,
        uncertain=unc,
        exceptions=exceptions,
    )


def _check_sum(label: str, part: tuple[Row, ...], total: Totals) -> None:
    summed = Totals(
        sum(r.totals.count for r in part),
        sum(r.totals.amount for r in part),
        sum(r.totals.reversal_count for r in part),
        sum(r.totals.reversal_amount for r in part),
    )
    if summed != total:  # pragma: no cover - every record is added to each table once
        raise AssertionError(f"settlement report: {label} do not add up to the grand total")


def _syp(minor: int) -> str:
    return f"{Amount(minor).format()} {CURRENCY_LABEL}"


def _adjustment_detail(a: Adjustment) -> str:
    when = _utc(a.received_at)
    if a.reconciled_at is not None:
        return f"reversal applied {when}, after the 0500 was answered {_utc(a.reconciled_at)}"
    return f"reversal applied {when}, after the 0500 was answered"


def _utc(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _age(age: timedelta) -> str:
    minutes = int(age.total_seconds()) // 60
    days, rem = divmod(minutes, 24 * 60)
    hours, mins = divmod(rem, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


# -- CSV ---------------------------------------------------------------------------------


def render_csv(report: DayReport) -> dict[str, str]:
    """File name → CSV text: summary, acquirers, channels and exceptions of the date.

    Amounts are integer minor units; the three totals files end with a
    ``TOTAL`` row. The exceptions' ``hub``/``switch`` columns are the findings'
    figures as text for people (``1,234.00 SYP``, or a count), as recorded.
    Line ends are ``\\n``; the texts are UTF-8 when written.
    """
    day = report.settlement_date.isoformat()

    def totals_csv(first: str, rows: tuple[Row, ...]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow((first, "name", *TOTALS_COLUMNS))
        for r in rows:
            w.writerow((r.code, r.name, *_totals_cells(r.totals)))
        w.writerow(("TOTAL", "", *_totals_cells(report.total)))
        return buf.getvalue()

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXCEPTION_COLUMNS)
    for e in report.exceptions:
        w.writerow((e.kind, e.biller, e.acquirer, e.rrn, e.hub, e.switch, e.detail, e.source))
    return {
        f"summary-{day}.csv": totals_csv("biller", report.billers),
        f"acquirers-{day}.csv": totals_csv("acquirer", report.acquirers),
        f"channels-{day}.csv": totals_csv("channel", report.channels),
        f"exceptions-{day}.csv": buf.getvalue(),
    }


def _totals_cells(t: Totals) -> tuple[int, int, int, int, int]:
    return (t.count, t.amount, t.reversal_count, t.reversal_amount, t.net)


# -- HTML --------------------------------------------------------------------------------

_RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")  # Hebrew, Arabic, Syriac...

BAR_WIDTH = 320  # SVG user units of a full bar


def render_html(report: DayReport) -> str:
    """The one self-contained page of the date: the day at a glance, then the detail.

    No external resource (inline CSS, inline SVG, no script); every value is
    escaped by Jinja2's autoescape. Each key figure carries
    ``data-figure="<name>"`` and its integer in ``data-minor`` (minor units for
    amounts, the number for counts), for tests and scrapers:

    ``total-collected``, ``total-payments-count``, ``total-reversals-count``,
    ``total-reversals-amount``, ``total-net``, ``exceptions-count``; per biller
    ``payments-count-<code>``, ``payments-amount-<code>``,
    ``reversals-count-<code>``, ``reversals-amount-<code>``, ``net-<code>``
    (and ``card-net-<code>`` on its card at the top); the same five per acquirer
    and per channel prefixed ``acquirer-`` / ``channel-``; and
    ``exceptions-count-<kind>``.
    """
    return _template().render(**_html_context(report))


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("billhub.settlement", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["count"] = _count
    env.filters["textdir"] = _textdir
    return env.get_template("report.html.j2")


def _money(minor: int) -> str:
    return Amount(minor).format()


def _count(n: int) -> str:
    return f"{n:,}"


def _textdir(text: str) -> str:
    """``rtl`` for a name with Arabic (or other right-to-left) letters, else ``auto``."""
    return "rtl" if _RTL.search(text) else "auto"


def _bars(rows: tuple[Row, ...]) -> list[dict[str, Any]]:
    """Bar lengths in SVG units, integer arithmetic, relative to the largest payments sum."""
    top = max((r.totals.amount for r in rows), default=0)
    out = []
    for r in rows:
        pay = r.totals.amount * BAR_WIDTH // top if top else 0
        rev = min(r.totals.reversal_amount, r.totals.amount) * BAR_WIDTH // top if top else 0
        out.append({"row": r, "pay": max(pay, 1 if r.totals.amount else 0), "rev": rev})
    return out


def _html_context(report: DayReport) -> dict[str, Any]:
    counts = {k: 0 for k in EXCEPTION_KINDS}
    for e in report.exceptions:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    file_kinds = set(EXCEPTION_KINDS[1:5])
    names = {r.code: r.name for r in report.billers}
    recon_status = {}
    for r in report.billers:
        rec = report.reconciliations.get(r.code)
        if rec is None:
            recon_status[r.code] = ("none", "not reconciled")
        elif rec.response_code == rc.APPROVED:
            recon_status[r.code] = ("ok", "agreed (00)")
        elif rec.response_code == rc.RECONCILE_ERROR:
            recon_status[r.code] = ("bad", "disagreed (95)")
        else:
            recon_status[r.code] = ("bad", f"answered {rec.response_code}")
    return {
        "r": report,
        "day": report.settlement_date.isoformat(),
        "day_long": report.settlement_date.strftime("%A %d %B %Y"),
        "generated": _utc(report.generated_at),
        "currency": CURRENCY_LABEL,
        "names": names,
        "recon": recon_status,
        "biller_bars": _bars(report.billers),
        "channel_bars": _bars(report.channels),
        "bar_width": BAR_WIDTH,
        "exception_counts": counts,
        "exceptions_total": len(report.exceptions),
        "recon_findings": [e for e in report.exceptions if e.kind == "reconciliation"],
        "file_findings": [e for e in report.exceptions if e.kind in file_kinds],
        "kind_labels": {
            "reconciliation": "Reconciliation (0500) disagrees",
            "switch_only": "On the switch only",
            "hub_only": "On the hub only",
            "amount_differs": "Amounts differ",
            "reversed_one_side": "Reversed on one side only",
            "adjustment": "Post-reconciliation adjustment",
            "uncertain": "Uncertain payment still open",
        },
        "age": _age,
        "utc": _utc,
    }
