"""The HTML settlement report in a real headless browser: Debian's chromium, driven by Playwright.

The page of ``tests.test_report.synthetic_day()`` is opened from a file with every
network request refused; its figures are read off the page twice (the
``data-figure``/``data-minor`` attributes, and the visible text of the tables) and
compared with the independent sums; the Arabic names' computed direction must be
``rtl``; the print layout must fit A4. A full-page screenshot is saved as
``build/report-2025-03-14.png`` (with the page itself next to it) for CI to keep.

Without chromium or Playwright the tests skip, saying what is missing, except when
``CI`` is set: there a missing browser is a failure, not a silent skip. Playwright
is never asked to download a browser; it drives ``/usr/bin/chromium``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.test_report import (
    ACQUIRERS,
    BILLERS,
    SDATE,
    build,
    expected_figures,
    expected_html_figures,
    synthetic_day,
    syp,
)

from billhub.settlement.report import CHANNELS, render_html

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BUILD = Path(__file__).resolve().parent.parent / "build"
A4_CONTENT_PX = 703  # 210 mm - 2 x 12 mm margins, at 96 px per inch


def _require_browser() -> Any:
    """The Playwright sync API module, or a skip (a failure under CI) naming what is missing."""
    missing = []
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append("Playwright for Python (pip install -e '.[dev]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so this is a failure, not a skip")
        pytest.skip(message)
    return sync_api


@pytest.fixture(scope="module")
def report_file() -> Path:
    BUILD.mkdir(exist_ok=True)
    path = BUILD / f"report-{SDATE.isoformat()}.html"
    path.write_text(render_html(build(synthetic_day())), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = _require_browser()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def external_requests() -> list[str]:
    return []


@pytest.fixture
def page(browser: Any, report_file: Path, external_requests: list[str]) -> Iterator[Any]:
    """The report opened from its file, any request beyond that file refused and recorded."""
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-GB")
    pg = context.new_page()
    requests = external_requests

    def refuse(route: Any) -> None:
        if route.request.url != report_file.as_uri():
            requests.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    pg.route("**/*", refuse)
    pg.goto(report_file.as_uri(), wait_until="load")
    try:
        yield pg
    finally:
        context.close()


def minor_of(text: str) -> int:
    """``1,234,567.89 SYP`` → 123456789, from the visible text, without float."""
    m = re.fullmatch(r"(-?)([0-9]{1,3}(?:,[0-9]{3})*)\.([0-9]{2}) SYP", " ".join(text.split()))
    assert m, f"not an amount in SYP: {text!r}"
    value = int(m.group(2).replace(",", "")) * 100 + int(m.group(3))
    return -value if m.group(1) else value


def count_of(text: str) -> int:
    assert re.fullmatch(r"[0-9]{1,3}(?:,[0-9]{3})*", text.strip()), text
    return int(text.strip().replace(",", ""))


def test_figures_via_data_attributes(page: Any) -> None:
    found = page.eval_on_selector_all(
        "[data-figure]", "els => els.map(e => [e.dataset.figure, e.dataset.minor, e.innerText])"
    )
    figures = {name: (int(minor), text) for name, minor, text in found}
    assert len(figures) == len(found), "data-figure names must be unique"
    want = expected_html_figures(synthetic_day())
    for name, value in want.items():
        minor, text = figures[name]
        assert minor == value, name
        if "count" in name:
            assert count_of(text) == value, name
        else:
            assert minor_of(text) == value and " ".join(text.split()) == syp(value), name


def test_figures_via_visible_text_of_the_tables(page: Any) -> None:
    want = expected_figures(synthetic_day())
    for table_id, table in (
        ("billers", "billers"),
        ("acquirers", "acquirers"),
        ("channels", "channels"),
    ):
        rows = page.eval_on_selector_all(
            f"#{table_id} tbody tr, #{table_id} tfoot tr",
            "rows => rows.map(r => Array.from(r.cells, c => c.innerText))",
        )
        got = {}
        for cells in rows:
            code = cells[0].strip()
            got[code] = (
                count_of(cells[2]),
                minor_of(cells[3]),
                count_of(cells[4]),
                minor_of(cells[5]),
                minor_of(cells[6]),
            )
        total = got.pop("TOTAL")
        assert got == want[table], table_id
        assert total == want["total"]["TOTAL"], table_id
    kpi = page.inner_text(".kpi.main").lower().split("\n")
    assert kpi[:2] == ["total collected", syp(want["total"]["TOTAL"][1]).lower()]
    cards = page.eval_on_selector_all(".card", "els => els.map(e => e.innerText)")
    assert len(cards) == len(BILLERS)
    for card, (code, name) in zip(cards, BILLERS.items(), strict=True):
        lines = card.split("\n")
        assert lines[:3] == [name, code, "NET OWED"]
        assert minor_of(lines[3]) == want["billers"][code][4]


def test_names_are_shown_and_arabic_ones_run_right_to_left(page: Any) -> None:
    directions = page.eval_on_selector_all(
        "#billers tbody td:nth-child(2) > span, #acquirers tbody td:nth-child(2) > span",
        "els => els.map(e => [e.textContent, getComputedStyle(e).direction])",
    )
    seen = dict(directions)
    for code, name in BILLERS.items():
        arabic = name != "Homs Electricity"
        assert seen[name] == ("rtl" if arabic else "ltr"), (code, name)
    for name in ACQUIRERS.values():
        assert seen[name] == "ltr"
    assert page.eval_on_selector("html", "e => getComputedStyle(e).direction") == "ltr"
    # The cards at the top show the same names, right to left too.
    cards = page.eval_on_selector_all(
        ".card .head .name", "els => els.map(e => [e.textContent, getComputedStyle(e).direction])"
    )
    assert dict(cards)["كهرباء دمشق"] == "rtl"
    channel_labels = page.inner_text("#channels")
    for label in CHANNELS.values():
        assert label in channel_labels


def test_page_is_self_contained_and_draws_its_charts(
    page: Any, external_requests: list[str]
) -> None:
    assert external_requests == []
    bars = page.eval_on_selector_all(
        "figure.chart svg.bar", "els => els.map(e => e.getBoundingClientRect().width)"
    )
    assert len(bars) == len(BILLERS) + len(CHANNELS)
    assert min(bars) > 100
    widths = page.eval_on_selector_all(
        "#chart-billers svg.bar rect.pay", "els => els.map(e => e.width.baseVal.value)"
    )
    want = expected_figures(synthetic_day())["billers"]
    active = [v[1] for v in want.values() if v[1]]
    assert len(widths) == len(active)
    # The longest bar is the company that collected most.
    assert widths.index(max(widths)) == active.index(max(active))


def test_prints_on_a4_without_overflow(page: Any) -> None:
    page.set_viewport_size({"width": A4_CONTENT_PX, "height": 1000})
    page.emulate_media(media="print")
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= A4_CONTENT_PX, (
        f"print layout is {overflow}px wide, A4 leaves {A4_CONTENT_PX}"
    )
    backgrounds = page.eval_on_selector_all(
        ".kpi, .card, body", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    assert set(backgrounds) <= {"rgba(0, 0, 0, 0)", "transparent"}
    pdf = page.pdf(format="A4", print_background=False)
    assert pdf.startswith(b"%PDF")
    page.emulate_media(media="screen")


def test_screenshot_is_saved_for_ci(page: Any) -> None:
    path = BUILD / f"report-{SDATE.isoformat()}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    assert path.read_bytes().startswith(b"\x89PNG")


def test_skip_message_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a browser: a skip naming it, or under CI a failure."""
    monkeypatch.setattr(f"{__name__}.CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/chromium"):
        _require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        _require_browser()
