"""The settlement report of one date: every figure against an independent sum of the inputs.

``synthetic_day()`` is a whole business day as the journal would hand it over:
several companies (Arabic names, one with nothing that day), acquirers, all five
channels, declined and uncertain payments, payments of the next date, reversals
(one refused ``25``, one late: a post-reconciliation adjustment), a 0500 that
agreed and one that did not, a settlement-file finding. The expected figures are
summed here straight from the records, not through the report code.
``tests/test_report_browser.py`` reads the same day off a real browser.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from billhub.pipeline.model import PaymentKey, PaymentRecord, PaymentState, ReversalRecord
from billhub.settlement.model import Finding, FindingKind, Reconciliation, Totals
from billhub.settlement.report import (
    CHANNELS,
    DayReport,
    build_report,
    group_records,
    render_csv,
    render_html,
)

SDATE = date(2025, 3, 14)
NEXT = SDATE + timedelta(days=1)
T0 = datetime(2025, 3, 14, 7, 0, tzinfo=UTC)
RECONCILED_AT = datetime(2025, 3, 15, 5, 10, tzinfo=UTC)
GENERATED_AT = datetime(2025, 3, 15, 6, 30, tzinfo=UTC)

BILLERS = {
    "100001": "كهرباء دمشق",
    "100002": "شركة كهرباء حلب",
    "100003": "Homs Electricity",
    "100004": "كهرباء اللاذقية",  # no activity on the date
}
ACQUIRERS = {
    "600001": "Commercial Bank of Syria",
    "600002": "Syriatel Cash",
    "600003": "Syrian Post",
}
UNCERTAIN_ACCOUNT = "0100987654"


@dataclass
class Day:
    payments: list[PaymentRecord] = field(default_factory=list)
    reversals: list[ReversalRecord] = field(default_factory=list)
    reconciliations: list[Reconciliation] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    uncertain_open: list[PaymentRecord] = field(default_factory=list)
    adjustments: list[ReversalRecord] = field(default_factory=list)


def payment(
    n: int,
    biller: str,
    acquirer: str,
    channel: str,
    amount: int,
    *,
    state: PaymentState = PaymentState.APPROVED,
    code: str | None = "00",
    sdate: date = SDATE,
    account: str | None = None,
) -> PaymentRecord:
    return PaymentRecord(
        payment_id=f"P{n:06d}",
        key=PaymentKey(acquirer, f"{n:012d}", sdate.strftime("%m%d")),
        settlement_date=sdate,
        biller=biller,
        account=account or f"01{n:08d}",
        bill_id=None,
        amount=amount,
        currency="760",
        channel=channel,
        forwarder="700001",
        content="",
        received_at=T0 + timedelta(minutes=n),
        state=state,
        response_code=code,
    )


def reversal_of(
    p: PaymentRecord, *, code: str = "00", at: datetime | None = None, amount: int | None = None
) -> ReversalRecord:
    if code == "00":
        p.reversed = True
    return ReversalRecord(
        key=p.key,
        settlement_date=p.settlement_date,
        biller=p.biller,
        amount=p.amount if amount is None else amount,
        received_at=at or p.received_at + timedelta(minutes=3),
        response_code=code,
        payment_id=p.payment_id if code == "00" else None,
        booked_on=(at or p.received_at).date(),
    )


def synthetic_day() -> Day:
    day = Day()
    billers = ["100001", "100002", "100003"]
    acquirers = list(ACQUIRERS)
    channels = list(CHANNELS)
    for i in range(60):
        n = i + 1
        amount = 150_000 + (i * 7_919_33) % 9_000_000 + (i % 3)  # odd minor units too
        if i % 17 == 0:
            amount += 123_456_789  # a few big ones: millions of pounds
        day.payments.append(
            payment(n, billers[i % 3], acquirers[i % 4 % 3], channels[i % 5], amount)
        )
    # Declined, in flight and uncertain payments never count.
    day.payments.append(
        payment(101, "100001", "600001", "6011", 500_000, state=PaymentState.DECLINED, code="13")
    )
    day.payments.append(
        payment(102, "100002", "600002", "6013", 700_000, state=PaymentState.POSTING, code=None)
    )
    unc = payment(
        103,
        "100002",
        "600003",
        "6014",
        2_500_050,
        state=PaymentState.UNCERTAIN,
        code="91",
        account=UNCERTAIN_ACCOUNT,
    )
    day.payments.append(unc)
    day.uncertain_open.append(unc)
    # Approved payments of the next settlement date never count for this one.
    day.payments.append(payment(201, "100001", "600001", "6010", 9_999_900, sdate=NEXT))
    day.payments.append(payment(202, "100003", "600002", "6012", 1_000_000, sdate=NEXT))
    # Reversals: three accepted, one refused 25 (a declined original), one late.
    approved = [
        p for p in day.payments if p.state is PaymentState.APPROVED and p.settlement_date == SDATE
    ]
    for p in (approved[4], approved[10], approved[23]):
        day.reversals.append(reversal_of(p))
    day.reversals.append(reversal_of(day.payments[60], code="25"))
    late = reversal_of(approved[31], at=RECONCILED_AT + timedelta(minutes=40))
    day.reversals.append(late)
    day.adjustments.append(late)
    nxt = reversal_of(day.payments[-1])  # a reversal of the next date
    day.reversals.append(nxt)

    def totals(biller: str, *, late_in: bool) -> Totals:
        ps = [p for p in approved if p.biller == biller]
        rs = [
            r
            for r in day.reversals
            if r.biller == biller
            and r.response_code == "00"
            and r.settlement_date == SDATE
            and (late_in or r is not late)
        ]
        return Totals(len(ps), sum(p.amount for p in ps), len(rs), sum(r.amount for r in rs))

    for b in billers:
        hub = totals(b, late_in=False)
        switch = (
            hub
            if b != "100002"
            else Totals(
                hub.count + 1, hub.amount + 2_500_050, hub.reversal_count, hub.reversal_amount
            )
        )
        code = "00" if switch == hub else "95"
        day.reconciliations.append(Reconciliation(b, SDATE, switch, hub, code, RECONCILED_AT))
        if code == "95":  # one finding per figure that differs, as the 0500 handler records
            for label, ours, theirs in (
                ("DE 74 payments count", str(hub.count), str(switch.count)),
                ("DE 86 payments amount", syp(hub.amount), syp(switch.amount)),
                ("DE 97 net", syp(hub.net), syp(switch.net)),
            ):
                day.findings.append(
                    Finding(
                        FindingKind.RECONCILIATION,
                        SDATE,
                        b,
                        f"{label} differs",
                        hub=ours,
                        switch=theirs,
                        source="0500",
                    )
                )
    # An earlier 0500 of the same biller, answered before: the latest one counts.
    day.reconciliations.append(
        Reconciliation(
            "100001", SDATE, Totals(), Totals(), "95", RECONCILED_AT - timedelta(minutes=5)
        )
    )
    day.findings.append(
        Finding(
            FindingKind.SWITCH_ONLY,
            SDATE,
            "100002",
            "payment settled by the switch; the hub has it uncertain (91)",
            hub="",
            switch="25,000.50 SYP",
            acquirer="600003",
            rrn=unc.key.rrn,
            source="file:settle-20250314.csv#2",
        )
    )
    day.findings.append(  # another date's: not in this report
        Finding(
            FindingKind.HUB_ONLY, NEXT, "100001", "not this date", hub="1.00", source="file:x#3"
        )
    )
    return day


def build(day: Day) -> DayReport:
    return build_report(
        SDATE,
        billers=BILLERS,
        groups=group_records(SDATE, day.payments, day.reversals),
        reconciliations=day.reconciliations,
        findings=day.findings,
        uncertain_open=day.uncertain_open,
        adjustments=day.adjustments,
        acquirers=ACQUIRERS,
        generated_at=GENERATED_AT,
    )


def quiet_report(**given: Any) -> DayReport:
    """A report of SDATE from only what is given; every other input empty."""
    payments, reversals = given.pop("payments", []), given.pop("reversals", [])
    inputs: dict[str, Any] = {
        "billers": {},
        "groups": group_records(SDATE, payments, reversals),
        "reconciliations": [],
        "findings": [],
        "uncertain_open": [],
        "adjustments": [],
        "generated_at": GENERATED_AT,
    }
    return build_report(SDATE, **(inputs | given))


def expected_figures(day: Day) -> dict[str, dict[str, tuple[int, int, int, int, int]]]:
    """Per table, per code: (payments_count, payments_amount, reversals_count, reversals_amount, net).

    Summed straight from the records: what LINK-SPEC 6.5 says counts for the date.
    """
    pays = [p for p in day.payments if p.state == "approved" and p.settlement_date == SDATE]
    revs = [r for r in day.reversals if r.response_code == "00" and r.settlement_date == SDATE]
    channel_of = {p.payment_id: p.channel for p in day.payments}

    def fig(ps: list[PaymentRecord], rs: list[ReversalRecord]) -> tuple[int, int, int, int, int]:
        a, ra = sum(p.amount for p in ps), sum(r.amount for r in rs)
        return (len(ps), a, len(rs), ra, a - ra)

    return {
        "billers": {
            b: fig([p for p in pays if p.biller == b], [r for r in revs if r.biller == b])
            for b in BILLERS
        },
        "acquirers": {
            a: fig(
                [p for p in pays if p.key.acquirer == a], [r for r in revs if r.key.acquirer == a]
            )
            for a in ACQUIRERS
        },
        "channels": {
            c: fig(
                [p for p in pays if p.channel == c],
                [r for r in revs if channel_of[r.payment_id or ""] == c],
            )
            for c in CHANNELS
        },
        "total": {"TOTAL": fig(pays, revs)},
    }


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# -- CSV ---------------------------------------------------------------------------------


def test_csv_figures_agree_with_an_independent_sum() -> None:
    day = synthetic_day()
    files = render_csv(build(day))
    want = expected_figures(day)
    assert set(files) == {
        "summary-2025-03-14.csv",
        "acquirers-2025-03-14.csv",
        "channels-2025-03-14.csv",
        "exceptions-2025-03-14.csv",
    }
    columns = ["payments_count", "payments_amount", "reversals_count", "reversals_amount", "net"]
    for name, first, table in (
        ("summary", "biller", "billers"),
        ("acquirers", "acquirer", "acquirers"),
        ("channels", "channel", "channels"),
    ):
        text = files[f"{name}-2025-03-14.csv"]
        assert text.splitlines()[0] == f"{first},name,{','.join(columns)}"
        rows = read_csv(text)
        assert rows[-1][first] == "TOTAL"
        got = {r[first]: tuple(int(r[c]) for c in columns) for r in rows[:-1]}
        assert got == want[table], name
        assert tuple(int(rows[-1][c]) for c in columns) == want["total"]["TOTAL"], name
        # The TOTAL row is the sum of the rows above it, to the last minor unit.
        for i, c in enumerate(columns):
            assert sum(v[i] for v in got.values()) == int(rows[-1][c])


def test_summary_names_every_configured_biller_even_idle_ones() -> None:
    rows = read_csv(render_csv(build(synthetic_day()))["summary-2025-03-14.csv"])
    assert [(r["biller"], r["name"]) for r in rows[:-1]] == list(BILLERS.items())
    assert rows[3] == {
        "biller": "100004",
        "name": "كهرباء اللاذقية",
        "payments_count": "0",
        "payments_amount": "0",
        "reversals_count": "0",
        "reversals_amount": "0",
        "net": "0",
    }


def test_the_day_has_what_the_test_means() -> None:
    """Guards the synthetic day itself: every case it should hold, it holds."""
    day = synthetic_day()
    want = expected_figures(day)
    assert want["total"]["TOTAL"][2] == 4  # 3 reversals + the late one
    assert all(v[0] > 0 for v in want["channels"].values())
    assert all(v[0] > 0 for v in want["acquirers"].values())
    assert want["total"]["TOTAL"][1] > 1_000_000_00  # more than a million pounds


def test_exceptions_csv_lists_findings_adjustments_and_uncertain_payments() -> None:
    day = synthetic_day()
    text = render_csv(build(day))["exceptions-2025-03-14.csv"]
    assert text.splitlines()[0] == "kind,biller,acquirer,rrn,hub,switch,detail,source"
    rows = read_csv(text)
    assert [r["kind"] for r in rows] == [
        *["reconciliation"] * 3,
        "switch_only",
        "adjustment",
        "uncertain",
    ]
    *recon, switch_only, adj, unc = rows
    assert [(r["biller"], r["detail"], r["source"]) for r in recon] == [
        ("100002", "DE 74 payments count differs", "0500"),
        ("100002", "DE 86 payments amount differs", "0500"),
        ("100002", "DE 97 net differs", "0500"),
    ]
    hub_amount = expected_figures(day)["billers"]["100002"][1]
    assert (recon[1]["hub"], recon[1]["switch"]) == (syp(hub_amount), syp(hub_amount + 2_500_050))
    assert switch_only["source"] == "file:settle-20250314.csv#2"
    late = day.adjustments[0]
    assert (adj["biller"], adj["acquirer"], adj["rrn"]) == (
        late.biller,
        late.key.acquirer,
        late.key.rrn,
    )
    assert adj["hub"] == syp(late.amount)
    assert "after the 0500 was answered 2025-03-15 05:10 UTC" in adj["detail"]
    u = day.uncertain_open[0]
    assert (unc["biller"], unc["acquirer"], unc["rrn"], unc["hub"]) == (
        "100002",
        "600003",
        u.key.rrn,
        "25,000.50 SYP",
    )
    assert "01****7654" in unc["detail"]
    assert unc["source"] == "payment:P000103"
    # Open since 07:00 + 103 min on the 14th, report at 06:30 on the 15th.
    assert "open for 21 h 47 min" in unc["detail"]


def test_no_report_carries_a_whole_account_number() -> None:
    day = synthetic_day()
    report = build(day)
    texts = [*render_csv(report).values(), render_html(report)]
    for p in day.payments:
        for t in texts:
            assert p.account not in t


def test_latest_0500_of_a_biller_is_the_one_shown() -> None:
    report = build(synthetic_day())
    assert report.reconciliations["100001"].response_code == "00"
    assert report.reconciliations["100002"].response_code == "95"
    assert "100004" not in report.reconciliations


def test_reversal_without_its_original_goes_to_channel_unknown_and_totals_agree() -> None:
    p = payment(1, "100001", "600001", "6010", 10_000)
    r = reversal_of(p)
    report = quiet_report(billers={"100001": "x"}, reversals=[r])
    rows = {row.code: row.totals for row in report.channels}
    assert rows["unknown"] == Totals(0, 0, 1, 10_000)
    assert report.total == Totals(0, 0, 1, 10_000)
    assert report.total.net == -10_000
    channels = read_csv(render_csv(report)["channels-2025-03-14.csv"])
    assert channels[-2]["channel"] == "unknown" and channels[-1]["net"] == "-10000"
    assert "-100.00 SYP" in re.sub(r"<[^>]+>", "", render_html(report))


def test_activity_of_an_unconfigured_biller_and_acquirer_still_adds_up() -> None:
    p = payment(1, "199999", "699999", "6099", 12_345)
    report = quiet_report(payments=[p])
    assert [(r.code, r.name, r.totals.amount) for r in report.billers] == [("199999", "", 12_345)]
    assert [(r.code, r.totals.amount) for r in report.acquirers] == [("699999", 12_345)]
    assert report.channels[-1].code == "6099"
    assert report.total.amount == 12_345


# -- HTML --------------------------------------------------------------------------------


class Figures(HTMLParser):
    """data-figure → (data-minor, visible text); dir of the elements holding names."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, tuple[int, str]] = {}
        self.dirs: dict[str, set[str]] = {}  # text → dir values of its element
        self._open: list[tuple[str, str | None, str | None, list[str]]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        self._open.append((tag, a.get("data-figure"), a.get("dir"), []))
        if a.get("data-figure") is not None:
            assert a["data-figure"] not in self.figures, f"duplicate data-figure {a['data-figure']}"
            self.figures[a["data-figure"] or ""] = (int(a["data-minor"] or "x"), "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        for entry in self._open:
            entry[3].append(data)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            t, fig, d, text = self._open.pop()
            joined = "".join(text)
            if fig is not None:
                self.figures[fig] = (self.figures[fig][0], " ".join(joined.split()))
            if d is not None:
                self.dirs.setdefault(joined.strip(), set()).add(d)
            if self._open:
                pass
            if t == tag:
                break


def parse_html(html: str) -> Figures:
    f = Figures()
    f.feed(html)
    f.close()
    return f


def syp(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 100)
    return f"{sign}{units:,}.{cents:02d} SYP"


def expected_html_figures(day: Day) -> dict[str, int]:
    """The page's data-figure names and the independent sums they must hold."""
    want = expected_figures(day)
    out: dict[str, int] = {}
    for table, prefix in (("billers", ""), ("acquirers", "acquirer-"), ("channels", "channel-")):
        for code, (pc, pa, rc, ra, net) in want[table].items():
            out[f"{prefix}payments-count-{code}"] = pc
            out[f"{prefix}payments-amount-{code}"] = pa
            out[f"{prefix}reversals-count-{code}"] = rc
            out[f"{prefix}reversals-amount-{code}"] = ra
            out[f"{prefix}net-{code}"] = net
    for code, v in want["billers"].items():
        out[f"card-net-{code}"] = v[4]
    pc, pa, rc, ra, net = want["total"]["TOTAL"]
    out |= {
        "total-collected": pa,
        "total-payments-count": pc,
        "total-reversals-count": rc,
        "total-reversals-amount": ra,
        "total-net": net,
        "exceptions-count": 6,  # 3 reconciliation findings, 1 file finding, 1 adjustment, 1 uncertain
    }
    return out


def test_html_figures_agree_with_an_independent_sum() -> None:
    day = synthetic_day()
    page = parse_html(render_html(build(day)))
    want = expected_html_figures(day)
    for name, minor in want.items():
        assert name in page.figures, name
        got_minor, text = page.figures[name]
        assert got_minor == minor, name
        if "count" in name:
            assert text == f"{minor:,}", name
        else:
            assert text == syp(minor), name
    assert page.figures["exceptions-count-reconciliation"][0] == 3
    assert page.figures["exceptions-count-switch_only"][0] == 1
    assert page.figures["exceptions-count-hub_only"][0] == 0
    assert page.figures["exceptions-count-adjustment"][0] == 1
    assert page.figures["exceptions-count-uncertain"][0] == 1


def test_html_shows_amounts_with_thousands_separators() -> None:
    day = synthetic_day()
    html = render_html(build(day))
    total = expected_figures(day)["total"]["TOTAL"][1]
    assert total > 1_000_000_00
    assert syp(total) in re.sub(r"<[^>]+>", "", html)
    assert re.search(r"\d{1,3}(,\d{3}){2,}\.\d\d SYP", re.sub(r"<[^>]+>", "", html))


def test_html_marks_arabic_names_right_to_left() -> None:
    page = parse_html(render_html(build(synthetic_day())))
    for name in ("كهرباء دمشق", "شركة كهرباء حلب", "كهرباء اللاذقية"):
        assert page.dirs.get(name) == {"rtl"}, name
    assert page.dirs.get("Homs Electricity") == {"auto"}
    html_tag = next(a for t, a in page.tags if t == "html")
    assert html_tag.get("dir") == "ltr"
    assert any(a.get("lang") == "ar" for _, a in page.tags)


def test_html_is_self_contained() -> None:
    html = render_html(build(synthetic_day()))
    lowered = html.lower()
    for needle in (
        "http:",
        "https:",
        "src=",
        "<link",
        "<script",
        "url(",
        "@import",
        "<iframe",
        "<object",
    ):
        assert needle not in lowered, needle
    assert lowered.count("<svg") >= 2 and "<style>" in lowered
    assert "@media print" in html and "size: A4" in html


def test_html_escapes_names() -> None:
    evil = '<script>alert("x")</script> & "كهرباء"'
    p = payment(1, "100001", "600001", "6010", 10_000)
    report = quiet_report(
        billers={"100001": evil},
        payments=[p],
        findings=[Finding(FindingKind.HUB_ONLY, SDATE, "100001", "<b>detail</b>", hub="<i>1</i>")],
        acquirers={"600001": "<img src=x onerror=alert(1)>"},
    )
    html = render_html(report)
    assert "<script" not in html and "<img" not in html and "<b>" not in html and "<i>1" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;كهرباء&#34;" in html
    assert "&lt;b&gt;detail&lt;/b&gt;" in html


def test_html_of_a_quiet_day() -> None:
    report = quiet_report(billers=BILLERS)
    page = parse_html(render_html(report))
    assert page.figures["total-collected"] == (0, "0.00 SYP")
    assert page.figures["exceptions-count"] == (0, "0")
    assert page.figures["net-100004"] == (0, "0.00 SYP")
