"""The citizen pages and the desk in a real headless Chromium (Playwright), with JavaScript
off, in Arabic right to left on a phone-sized viewport, against ``billhub web`` run as its
own process (the real CLI) beside a demo REST biller.

A citizen looks up a bill, files an installment request by ticking bills, the company's
clerk logs in and approves it with a plan, and the citizen sees the plan on the tracking
page. Each page is checked for right-to-left text and no sideways scrolling on the phone,
and a screenshot is kept under ``build/web-*.png`` for CI (and for a person to look at).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import Pki
from tests.test_report_browser import BUILD, CHROMIUM, CHROMIUM_ARGS, _require_browser
from tests.webharness import ACCOUNTS_A, COMPANY_A, CONFIG, TOKEN, open_account

from billhub.money import Amount
from billhub.simulator.rest_biller import RestBiller

PHONE_VIEWPORT = {"width": 390, "height": 844}
PHONE = "0944123456"


class BillerThread:
    """The demo REST biller on its own event loop in a thread (the web service is a process)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.biller = RestBiller(ACCOUNTS_A, TOKEN)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RestBiller:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.biller.start(), self.loop).result(10)
        return self.biller

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.biller.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def billhub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billhub.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[dict[str, Any]]:
    _require_browser()
    tmp = tmp_path_factory.mktemp("webui")
    with BillerThread() as biller:
        text = CONFIG.format(
            certs=pki.directory,
            journal=f'path = "{tmp}/journal.db"',
            a=COMPANY_A,
            b="100003",
            batch="100002",
            url_a=biller.url,
            url_b=biller.url,
            token=TOKEN,
            client_limit=1000,
            account_limit=1000,
        )
        cfg = tmp / "billhub.toml"
        cfg.write_text(text + '\n[log]\nformat = "json"\n', "utf-8")
        added = billhub(
            "web",
            "--config",
            str(cfg),
            "users",
            "add",
            "clerk-a",
            "--role",
            "clerk",
            "--company",
            COMPANY_A,
        )
        assert added.returncode == 0, added.stderr
        password = re.search(r"password: (\S+)", added.stdout).group(1)  # type: ignore[union-attr]
        bad = billhub(
            "web", "--config", str(cfg), "users", "add", "x", "--role", "clerk", "--company", "999"
        )
        assert (
            bad.returncode == 1
            and bad.stderr.startswith("billhub: error: ")
            and "Traceback" not in bad.stderr
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "billhub.cli", "web", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            port = None
            for line in proc.stdout:
                if '"web_listening"' in line:
                    port = json.loads(line)["port"]
                    break
            assert port, "billhub web did not start"
            yield {
                "url": f"http://127.0.0.1:{port}",
                "password": password,
                "biller": biller,
                "codes": tmp / "codes.log",
            }
        finally:
            proc.terminate()
            assert proc.wait(15) == 0
        # Its log: the filed request is there, with the account and the phone masked.
        logged = proc.stdout.read() if proc.stdout else ""
        filed = [json.loads(x) for x in logged.splitlines() if '"request_filed"' in x]
        assert filed and all(e["phone"] == "09****3456" and "*" in e["account"] for e in filed)
        assert PHONE not in logged and open_account(ACCOUNTS_A).account not in logged
        assert "Traceback" not in logged


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
def phone(browser: Any, site: dict[str, Any]) -> Iterator[Any]:
    """A phone-sized page with JavaScript off; any request off the site is refused."""
    context = browser.new_context(
        viewport=PHONE_VIEWPORT,
        locale="ar-SY",
        java_script_enabled=False,
        is_mobile=True,
        device_scale_factor=2,
    )
    page = context.new_page()
    page.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith(site["url"]) else route.abort()
        ),
    )
    try:
        yield page
    finally:
        context.close()


def check_page(page: Any, name: str) -> None:
    """Right to left, nothing wider than the phone, and a screenshot to look at."""
    BUILD.mkdir(exist_ok=True)
    assert page.evaluate("document.documentElement.dir") == "rtl"
    assert page.evaluate("getComputedStyle(document.querySelector('main')).direction") == "rtl"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE_VIEWPORT["width"], (
        f"{name}: {width}px wide on a {PHONE_VIEWPORT['width']}px phone"
    )
    page.screenshot(path=str(BUILD / f"web-{name}.png"), full_page=True)


def test_inquiry_installment_decision_and_tracking_in_arabic_on_a_phone(
    phone: Any, browser: Any, site: dict[str, Any]
) -> None:
    url = site["url"]
    acc = open_account(ACCOUNTS_A)
    phone.goto(url + "/")
    check_page(phone, "home")

    phone.goto(url + "/inquiry")
    phone.select_option("#company", COMPANY_A)
    phone.fill("#account", acc.account)
    phone.click("button[type=submit]")
    assert phone.inner_text("#total").strip() == Amount(acc.total_due).format()
    shown = phone.inner_text("#customer")
    assert shown == f"{acc.customer_name.split()[0]} {shown.split()[1]}" and shown.endswith(".")
    check_page(phone, "inquiry")

    phone.goto(url + "/installment")
    phone.select_option("#company", COMPANY_A)
    phone.fill("#account", acc.account)
    phone.click("button[type=submit]")
    boxes = phone.locator("input[name=bill_ids]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    phone.fill("#phone", PHONE)
    phone.fill("#installments", "4")
    phone.fill("#reason", "دخل محدود هذا الشتاء")
    check_page(phone, "installment-form")
    phone.click("button[type=submit]")
    ticket = phone.inner_text("#ticket").strip()
    assert re.fullmatch(r"BH-[A-Z0-9]{4}-[A-Z0-9]{4}", ticket)
    assert phone.inner_text("#status").strip() == "مستلم"
    check_page(phone, "filed")

    # The clerk, on the same phone-sized screen.
    phone.goto(url + "/desk/login")
    phone.fill("#username", "clerk-a")
    phone.fill("#password", site["password"])
    phone.click("button[type=submit]")
    assert ticket in phone.inner_text("#queue")
    check_page(phone, "desk-queue")
    phone.click(f"a[href='/desk/requests/{ticket}']")
    phone.select_option("#outcome", "approved")
    phone.fill("#count", "4")
    phone.fill("#first_due", "2027-01-31")
    phone.fill("#note", "تمت الموافقة على التقسيط")
    phone.click("form[action$='/decide'] button[type=submit]")
    assert "موافق عليه" in phone.inner_text("#status")
    check_page(phone, "desk-request")

    phone.goto(url + "/track")
    phone.fill("#ticket", ticket)
    phone.fill("#phone", PHONE)
    phone.click("main form button[type=submit]")
    assert phone.inner_text("#status").strip() == "موافق عليه"
    rows = phone.locator("#plan tbody tr")
    assert rows.count() == 4
    minors = [
        int(x)
        for x in phone.eval_on_selector_all(
            "#plan [data-minor]", "els => els.map(e => e.dataset.minor)"
        )
    ]
    assert sum(minors) == acc.bills[0].amount + acc.bills[1].amount
    check_page(phone, "track")

    # Recent payments: a one-time code sent to the phone given with the request.
    phone.goto(url + f"/inquiry?company={COMPANY_A}&account={acc.account}")
    phone.fill("#phone", PHONE)
    phone.click("form[action='/inquiry/code'] button[type=submit]")
    assert "أرسلنا إليه رمزاً" in phone.inner_text("main")
    code = re.findall(r"billhub: (\d{6})", site["codes"].read_text("utf-8"))[-1]
    phone.fill("#code", code)
    phone.click("button[type=submit] >> nth=-1")
    assert "لا توجد دفعات مسجلة" in phone.inner_text("main")
    check_page(phone, "payments")

    # English, left to right, on the same page.
    phone.goto(url + "/track")
    phone.click("header nav a[lang=en]")
    assert phone.evaluate("document.documentElement.dir") == "ltr"
    assert "Track a request" in phone.inner_text("h1")
    assert phone.evaluate("getComputedStyle(document.querySelector('main')).direction") == "ltr"
    phone.screenshot(path=str(BUILD / "web-track-en.png"), full_page=True)


def test_biller_down_page_in_a_browser(phone: Any, site: dict[str, Any]) -> None:
    biller: RestBiller = site["biller"]
    biller.set_faults(type(biller.faults)(fail_status=503))
    try:
        phone.goto(
            site["url"] + f"/inquiry?company={COMPANY_A}&account={open_account(ACCOUNTS_A).account}"
        )
        assert phone.inner_text("#message").startswith("نظام الفوترة لدى الشركة لا يستجيب")
        assert phone.get_attribute("#message", "data-code") == "biller_unavailable"
        check_page(phone, "biller-down")
    finally:
        biller.set_faults(type(biller.faults)())
