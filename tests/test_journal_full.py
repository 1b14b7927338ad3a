"""The journal's disk fills up mid-traffic, then space comes back: nothing is left posted.

Everything real: ``billhub serve`` and the REST demo biller are separate processes,
the journal lives on a small tmpfs mounted for this test, and the disk is filled
with a file written until the kernel says ``ENOSPC``. Payments flow at 16 in flight
throughout, each for a bill of its own. The biller answers 40 ms late, so that when
the disk fills some payments are posted at the biller with their outcome still to
be recorded: the case that used to stay posted until a restart.

Without restarting the hub, once space is back and the resolver's quiet period has
passed, from the biller's own ledger and the journal:

- every payment answered `00` is held by the biller exactly once;
- no payment answered anything else is held;
- the payments whose outcome could not be recorded are in the journal as answered
  (`96`) and were cancelled at the biller by the resolver;
- a repeat (0201) of a payment answered `96` gets `96` again, and a new payment for
  the same bill is approved;
- ``/readyz`` and the metrics said the journal was failing while it was, and ok
  after; the log has the error event, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import fill_disk as _fill
from tests.hubharness import base_config
from tests.test_crash import _ledger, _start, hub_process
from tests.txharness import TODAY, mmdd

from billhub.errors import BillhubError
from billhub.iso8583.codec import Codec
from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec
from billhub.simulator import messages as m
from billhub.simulator.demo_data import generate_accounts
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context

TOKEN = "crash-test-token"  # the one tests.test_crash._ledger sends
BILLER = "100001"
DISK_MB = 32


@pytest.fixture
def small_disk(tmpfs: Any) -> Path:
    return tmpfs(DISK_MB)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def _journal(db: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT rrn, payment_id, state, response_code, resolution FROM payments"
        ).fetchall()
    finally:
        conn.close()
    return {
        r[0]: {"payment_id": r[1], "state": r[2], "code": r[3], "resolution": r[4]} for r in rows
    }


class Traffic:
    """Payments at a fixed number in flight on one signed-on link, answers kept by RRN."""

    def __init__(self, link: SwitchLink, requests: list[Message], in_flight: int) -> None:
        self.link = link
        self.requests = requests
        self.in_flight = in_flight
        self.answers: dict[str, str] = {}
        self.sent = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async def worker() -> None:
            while not self.stop.is_set() and self.sent < len(self.requests):
                req = self.requests[self.sent]
                self.sent += 1
                try:
                    resp = await self.link.request(req, timeout=15)
                except BillhubError:
                    continue
                self.answers[req.fields[37]] = resp.fields[39]

        await asyncio.gather(*(worker() for _ in range(self.in_flight)))


async def test_disk_full_mid_traffic_leaves_nothing_posted_that_was_declined(
    tmp_path: Path, small_disk: Path, pki: Any
) -> None:
    accounts = generate_accounts("01", 900, 7, today=TODAY)
    bills = [(a, b) for a in accounts if a.status == "active" for b in a.bills]
    biller, line = _start(
        [
            sys.executable,
            "-m",
            "billhub.simulator.rest_biller",
            "--port",
            "0",
            "--token",
            TOKEN,
            "--seed",
            "7",
            "--accounts",
            "900",
            "--prefix",
            "01",
            "--today",
            TODAY.isoformat(),
            "--latency-ms",
            "40",
        ],
        "listening",
    )
    biller_port = int(line.strip().rsplit(":", 1)[1])
    db = small_disk / "journal.db"
    cfg = tmp_path / "billhub.toml"
    cfg.write_text(
        base_config(pki, db, admin=True)
        + f"""
[resolver]
quiet_period_s = 1.0
backoff_base_s = 0.05
backoff_max_s = 0.5
poll_interval_s = 0.1
[[billers]]
code = "{BILLER}"
name = "Damascus"
kind = "rest"
budget_s = 5
rest = {{ base_url = "http://127.0.0.1:{biller_port}", token = "{TOKEN}" }}
""",
        "utf-8",
    )
    log = tmp_path / "hub.log"
    hub, listening = hub_process(cfg, log)
    admin = f"http://127.0.0.1:{listening['admin_port']}"
    codec = Codec(load_spec())
    # The last 200 bills are kept back for the "pay the same bill again" check.
    requests = [
        m.payment(BILLER, a.account, f"{i:012d}", b.amount, mmdd(), bill_id=b.bill_id)
        for i, (a, b) in enumerate(bills[:-200], start=1)
    ]
    by_rrn = {r.fields[37]: (r, b) for r, (_, b) in zip(requests, bills, strict=False)}
    filler = small_disk / "filler"
    link: SwitchLink | None = None
    try:
        ctx = client_context(pki.switch_cert, pki.switch_key, pki.hub_ca_cert)
        link = await SwitchLink.connect("127.0.0.1", listening["port"], ctx, codec)
        assert (await link.sign_on()).fields[39] == "00"
        traffic = Traffic(link, requests, in_flight=16)
        running = asyncio.ensure_future(traffic.run())
        while len(traffic.answers) < 150:
            await asyncio.sleep(0.01)

        await asyncio.to_thread(_fill, filler)  # the disk is full from here
        answered_before_full = len(traffic.answers)
        failing_seen = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not failing_seen:
            await asyncio.sleep(0.1)
            status, body = await asyncio.to_thread(_get, admin + "/readyz")
            failing_seen = status == 503 and json.loads(body)["journal"] == "failing"
        assert failing_seen, "/readyz says the journal is failing while the disk is full"
        ready = json.loads(body)
        assert ready["journal_writes"]["reason"] == "disk_full"
        _, metrics = await asyncio.to_thread(_get, admin + "/metrics")
        assert _metric(metrics, "billhub_journal_writable") == 0
        assert _metric(metrics, 'billhub_journal_write_failures_total{reason="disk_full"}') > 0
        await asyncio.sleep(1.0)  # payments keep arriving on a full disk
        full_answers = len(traffic.answers) - answered_before_full
        assert full_answers > 0

        filler.unlink()  # space comes back; the hub is not restarted
        await asyncio.sleep(1.5)
        traffic.stop.set()
        await running

        # Within the quiet period (1 s) and the resolver's back-off, all is settled.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, body = await asyncio.to_thread(_get, admin + "/readyz")
            if status == 200 and json.loads(body)["journal"] == "ok":
                _, st = await asyncio.to_thread(_get, admin + "/status")
                if json.loads(st)["resolver"].get("backlog") == 0:
                    break
            await asyncio.sleep(0.2)
        assert status == 200, body
        _, metrics = await asyncio.to_thread(_get, admin + "/metrics")
        assert _metric(metrics, "billhub_journal_writable") == 1

        answers = traffic.answers
        journal = _journal(db)
        ledger = {e["payment_id"]: e for e in _ledger(biller_port)}
        codes = {code for code in answers.values()}
        assert "00" in codes and "96" in codes, codes
        unrecorded_posted = 0
        for rrn, code in answers.items():
            row = journal.get(rrn)
            entry = ledger.get(row["payment_id"]) if row else None
            if code == "00":
                assert row is not None and row["state"] == "approved"
                assert entry is not None and entry["status"] == "posted"
                assert entry["post_count"] == 1, "posted exactly once"
            else:
                assert entry is None or entry["status"] == "cancelled", (
                    f"a payment answered {code} is held by the biller"
                )
                if code == "96":
                    # Recorded as answered, once the journal took writes again.
                    assert row is not None and row["code"] == "96", (rrn, row)
                if entry is not None:
                    unrecorded_posted += 1
                    assert row is not None and row["state"] == "uncertain"
                    assert row["resolution"] == "cancelled"
        assert unrecorded_posted > 0, "some payment reached the biller before the disk filled"
        held = [e for e in ledger.values() if e["status"] == "posted"]
        assert len(held) == sum(1 for c in answers.values() if c == "00")

        # The answer given stands for repeats; the citizen can pay the bill afresh.
        declined = [rrn for rrn, code in answers.items() if code == "96"][:20]
        for n, rrn in enumerate(declined):
            original, bill = by_rrn[rrn]
            again = await link.request(m.repeat(original, "0201"), timeout=10)
            assert again.fields[39] == "96", "a repeat gets the original answer"
            account = original.fields[102]
            fresh = m.payment(
                BILLER, account, f"9{n:011d}", bill.amount, mmdd(), bill_id=bill.bill_id
            )
            assert (await link.request(fresh, timeout=10)).fields[39] == "00"

        events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        failed = [e for e in events if e.get("event") == "journal_write_failed"]
        assert failed and all(e["level"] == "error" for e in failed)
        assert failed[0]["reason"] == "disk_full"
        assert len(failed) <= 5, "failures are logged a few times, not once per payment"
        assert any(e.get("event") == "journal_writes_recovered" for e in events)
        assert _size(Path(f"{db}-wal")) <= DISK_MB * 1024 * 1024 // 4, "the WAL stays bounded"
        print(
            f"\nanswered {len(answers)} ({sum(c == '00' for c in answers.values())} approved, "
            f"{sum(c == '96' for c in answers.values())} answered 96), "
            f"{unrecorded_posted} posted at the biller before their outcome could be recorded,"
            f" all cancelled without a restart"
        )
    finally:
        with contextlib.suppress(OSError):
            filler.unlink()
        if link is not None:
            with contextlib.suppress(Exception):
                await link.close()
        for proc in (hub, biller):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
