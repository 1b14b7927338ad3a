"""SIGKILL in the middle of 1,000 payments to a batch biller, then restart and cutover.

For a batch biller "at the biller" means "in its payments file". After the
restart the switch re-sends what got no answer; then a cutover writes the file.
It must hold every payment answered `00` exactly once and nothing else, and
the hub's own store must show exactly those bills as paid.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

from tests.hubharness import base_config
from tests.test_crash import _hub, _open_tasks, _send_all
from tests.txharness import TODAY, mmdd

from billhub.iso8583.codec import Codec
from billhub.iso8583.de48 import parse_bills, parse_tlv
from billhub.iso8583.spec import load_spec
from billhub.simulator import messages as m
from billhub.simulator.demo_data import generate_accounts, write_bills_file
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context

BILLER = "100002"
N = 1000


async def test_sigkill_with_a_batch_biller_keeps_the_payments_file_exact(
    tmp_path: Path, pki
) -> None:  # type: ignore[no-untyped-def]
    accounts = generate_accounts("02", 500, 9, today=TODAY)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    write_bills_file(inbox, BILLER, accounts, day=TODAY)
    db = tmp_path / "journal.db"
    cfg = tmp_path / "billhub.toml"
    cfg.write_text(
        base_config(pki, db, admin=False)
        + f"""
[[billers]]
code = "{BILLER}"
name = "Rural Damascus"
kind = "batch"
batch = {{ inbox = "{inbox}", outbox = "{outbox}" }}
""",
        "utf-8",
    )
    codec = Codec(load_spec())
    bills = [(a, b) for a in accounts if a.status == "active" for b in a.bills]
    assert len(bills) >= N
    by_rrn = {}
    requests = []
    for i, (a, b) in enumerate(bills[:N], start=1):
        rrn = f"{i:012d}"
        by_rrn[rrn] = (a.account, b.bill_id, b.amount)
        requests.append(m.payment(BILLER, a.account, rrn, b.amount, mmdd(), bill_id=b.bill_id))
    answers: dict[str, str] = {}
    log = tmp_path / "hub.log"
    hub, port = _hub(cfg, log)
    try:
        sender = asyncio.ensure_future(_send_all(port, pki, codec, requests, answers))
        while len(answers) < N // 3:
            await asyncio.sleep(0.01)
        os.kill(hub.pid, signal.SIGKILL)
        hub.wait(timeout=10)
        await sender
        before_kill = dict(answers)
        assert 0 < len(before_kill) < N, "the kill landed mid-flight"

        hub, port = _hub(cfg, log)
        await _send_all(port, pki, codec, requests, answers)
        assert len(answers) == N
        for rrn, code in before_kill.items():
            assert answers[rrn] == code, "an answer given before the crash never changes"
        approved = {rrn for rrn, code in answers.items() if code == "00"}
        assert len(approved) > N // 2

        ctx = client_context(pki.switch_cert, pki.switch_key, pki.hub_ca_cert)
        link = await SwitchLink.connect("127.0.0.1", port, ctx, codec)
        await link.sign_on()
        # The store shows exactly the approved bills as paid.
        for rrn, (account, bill_id, _) in list(by_rrn.items())[:: N // 50]:
            inq = await link.request(m.inquiry(BILLER, account, f"9{rrn[1:]}"))
            open_ids = set()
            if inq.fields[39] == "00":
                open_ids = {b.bill_id for b in parse_bills(parse_tlv(inq.fields[48])["BL"])}
            if rrn in approved:
                assert bill_id not in open_ids, "a paid bill is offered again"
        tomorrow = (TODAY + timedelta(days=1)).strftime("%m%d")
        assert (await link.cutover(tomorrow)).fields[39] == "00"
        await link.close()
        deadline = time.monotonic() + 10
        while _open_tasks(db) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        if hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            hub.wait(timeout=20)

    path = outbox / f"payments-{BILLER}-{TODAY:%Y%m%d}.csv"
    rows = list(csv.reader(io.StringIO(path.read_text("utf-8"))))
    body, trailer = rows[1:-1], rows[-1]
    in_file = [r[6] for r in body if r[-1] == "approved"]
    assert sorted(in_file) == sorted(approved), "every 00 exactly once, and nothing else"
    assert len(in_file) == len(set(in_file))
    total = sum(by_rrn[rrn][2] for rrn in approved)
    assert trailer == ["TOTAL", str(len(approved)), str(total), "0", "0"]
