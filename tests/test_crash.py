"""The hub killed with SIGKILL in the middle of 1,000 payments, then restarted.

Separate processes for everything that could lose state: the hub (``billhub
serve``) and the REST demo biller (``python -m billhub.simulator.rest_biller``).
After the restart the switch re-sends every request it got no answer to, as a
real switch does. Then, from the biller's own ledger and the journal file:

- every payment answered `00` is in the journal and posted at the biller once;
- no payment answered anything else is held by the biller;
- every uncertain payment is resolved.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.hubharness import base_config
from tests.txharness import TODAY, mmdd

from billhub.errors import BillhubError
from billhub.iso8583.codec import Codec
from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec
from billhub.simulator import messages as m
from billhub.simulator.demo_data import generate_accounts
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context

TOKEN = "crash-test-token"
BILLER = "100001"
N = 1000


def _start(
    args: list[str], ready: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if ready in line:
            return proc, line
    proc.kill()
    raise AssertionError(f"{args[2:4]} did not start: {proc.stderr.read() if proc.stderr else ''}")


def _hub(cfg: Path, log: Path) -> tuple[subprocess.Popen[str], int]:
    """Start ``billhub serve``; its log goes to a file (a full pipe would stall it)."""
    proc, listening = hub_process(cfg, log)
    return proc, int(listening["port"])


def hub_process(cfg: Path, log: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``billhub serve`` logging to ``log``; returns it and its ``hub_listening`` event
    (``port``, ``admin_port``)."""
    start = log.stat().st_size if log.exists() else 0
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "billhub.cli", "serve", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with log.open() as f:
            f.seek(start)
            for line in f:
                if '"hub_listening"' in line:
                    return proc, dict(json.loads(line))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"hub did not start: {log.read_text()[-2000:]}")


def _ledger(port: int) -> list[dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/_admin/ledger", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.load(r)
    return body["payments"] if isinstance(body, dict) else body


def _payments(db: Path) -> dict[str, tuple[str, str, str | None, str | None]]:
    """rrn → (payment_id, state, response_code, resolution), read from the journal file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT rrn, payment_id, state, response_code, resolution FROM payments"
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}
    finally:
        conn.close()


def _open_tasks(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM tasks WHERE done_at IS NULL").fetchone()[0])
    finally:
        conn.close()


async def _send_all(
    port: int,
    pki: Any,
    codec: Codec,
    requests: list[Message],
    answers: dict[str, str],
    in_flight: int = 32,
) -> None:
    """Send every request not answered yet; record answers by RRN until the link dies."""
    ctx = client_context(pki.switch_cert, pki.switch_key, pki.hub_ca_cert)
    link = await SwitchLink.connect("127.0.0.1", port, ctx, codec)
    await link.sign_on()
    queue = [r for r in requests if r.fields[37] not in answers]
    sem = asyncio.Semaphore(in_flight)

    async def one(req: Message) -> None:
        async with sem:
            if link.is_closed:
                return
            msg = m.repeat(req, "0200") if req.fields.get(7) else req
            try:
                resp = await link.request(msg, timeout=15)
            except BillhubError:
                return
            answers[req.fields[37]] = resp.fields[39]
            req.fields[7] = resp.fields[7]  # sent at least once: later sends are repeats

    await asyncio.gather(*(one(r) for r in queue))
    await link.close()


async def test_sigkill_mid_flight_loses_and_doubles_nothing(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    accounts = generate_accounts("01", 400, 5, today=TODAY)
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
            "5",
            "--accounts",
            "400",
            "--prefix",
            "01",
            "--today",
            TODAY.isoformat(),
            "--latency-ms",
            "5",
        ],
        "listening",
    )
    biller_port = int(line.strip().rsplit(":", 1)[1])
    db = tmp_path / "journal.db"
    cfg = tmp_path / "billhub.toml"
    cfg.write_text(
        base_config(pki, db, admin=False)
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
    codec = Codec(load_spec())
    # One payment per open bill, each naming its bill: 1,000 distinct payments.
    bills = [(a, b) for a in accounts if a.status == "active" for b in a.bills]
    assert len(bills) >= N
    requests = [
        m.payment(BILLER, a.account, f"{i:012d}", b.amount, mmdd(), bill_id=b.bill_id)
        for i, (a, b) in enumerate(bills[:N], start=1)
    ]
    answers: dict[str, str] = {}
    hub, port = _hub(cfg, tmp_path / "hub.log")
    try:
        sender = asyncio.ensure_future(_send_all(port, pki, codec, requests, answers))
        while len(answers) < N // 3:
            await asyncio.sleep(0.01)
        os.kill(hub.pid, signal.SIGKILL)
        hub.wait(timeout=10)
        await sender
        before_kill = dict(answers)
        assert 0 < len(before_kill) < N, "the kill landed mid-flight"

        hub, port = _hub(cfg, tmp_path / "hub.log")  # restart on the same journal
        await _send_all(port, pki, codec, requests, answers)
        assert len(answers) == N, "every payment got a final answer after the restart"
        for rrn, code in before_kill.items():
            assert answers[rrn] == code, "an answer given before the crash never changes"
        deadline = time.monotonic() + 30
        while _open_tasks(db) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _open_tasks(db) == 0, "every uncertain payment is resolved"
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=20)

        journal = _payments(db)
        ledger = {e["payment_id"]: e for e in _ledger(biller_port)}
        approved = {rrn for rrn, code in answers.items() if code == "00"}
        assert approved, "most payments are approved"
        for rrn, code in answers.items():
            payment_id, state, response, resolution = journal[rrn]
            entry = ledger.get(payment_id)
            if code == "00":
                assert state == "approved" and response == "00"
                assert entry is not None and entry["status"] == "posted"
                assert entry["post_count"] == 1, "posted exactly once"
            else:
                assert entry is None or entry["status"] == "cancelled", (
                    f"payment answered {code} is held by the biller"
                )
                if state == "uncertain":
                    assert resolution in ("cancelled", "never_posted")
        held = [e for e in ledger.values() if e["status"] == "posted"]
        assert len(held) == len(approved), "the biller holds exactly the approved payments"
        uncertain = [r for r in journal.values() if r[1] == "uncertain"]
        print(
            f"\nanswered before kill {len(before_kill)}, approved {len(approved)}, "
            f"uncertain after restart {len(uncertain)}"
        )
    finally:
        for proc in (hub, biller):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
