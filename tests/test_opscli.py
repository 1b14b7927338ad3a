"""The operators' commands as an operator runs them: ``billhub status``, ``billhub journal show``.

The hub runs in this test's event loop (txharness, admin port on loopback); the
commands run as real processes, so the loop keeps serving while they wait.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import pytest
from tests.txharness import BATCH, REST, World, find, settle, start_world

from billhub.iso8583.mask import mask_account
from billhub.simulator import messages as m
from billhub.simulator.rest_biller import Faults

BILLHUB = [sys.executable, "-m", "billhub.cli"]


async def billhub(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *BILLHUB,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_error_line(code: int, err: str, *needles: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("billhub: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
async def world(tmp_path: Path, pki) -> World:  # type: ignore[no-untyped-def]
    w = await start_world(tmp_path, pki, admin=True, budget=0.3, quiet=0.2)
    yield w  # type: ignore[misc]
    await w.close()


# -- billhub status -----------------------------------------------------------------------------


async def test_status_table_and_json(world: World) -> None:
    link = await world.link()
    acct = find(world.batch_accounts)
    pay = world.pay(BATCH, acct)
    assert (await link.request(pay)).fields[39] == "00"
    assert (await link.request(m.inquiry(REST, "0999999999", world.next_rrn()))).fields[39] == "14"
    url = f"http://127.0.0.1:{world.hub.admin_port}"

    code, out, err = await billhub("status", "--url", url)
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"billhub at {url}: READY")
    assert "LINKS  1 connected, 1 signed on" in out
    assert "CN=switch-1,O=National Switch" in out and "signed_on" in out
    batch_row = next(line for line in out.splitlines() if line.strip().startswith(BATCH))
    assert "Rural Damascus" in batch_row and "batch" in batch_row
    amount = f"{acct.total_due // 100:,}.{acct.total_due % 100:02d}"
    assert amount in batch_row, (amount, batch_row)
    assert "RESOLVER  backlog 0" in out

    code, out, err = await billhub("status", "--url", url, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["ready"] is True and len(data["links"]) == 1
    totals = {b["code"]: b["today"] for b in data["billers"]}
    assert totals[BATCH]["approved_count"] == 1
    assert totals[BATCH]["approved_amount"] == acct.total_due
    assert totals[REST]["approved_count"] == 0


async def test_status_shows_not_ready_and_why(world: World) -> None:
    url = f"http://127.0.0.1:{world.hub.admin_port}/"
    code, out, err = await billhub("status", "--url", url)
    assert code == 0, err
    assert "READY" in out.splitlines()[0] and "NOT READY" not in out.splitlines()[0]
    assert "warning: no signed-on link from the switch" in out
    await world.hub.stores.close()  # the journal goes away: payments cannot be recorded
    code, out, err = await billhub("status", "--url", url)
    assert code == 0, err
    assert "NOT READY" in out.splitlines()[0]
    assert "problem: journal: journal is not open" in out


async def test_status_errors_are_one_line(world: World) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    code, _, err = await billhub("status", "--url", f"http://127.0.0.1:{closed}", "--timeout", "2")
    one_error_line(code, err, "cannot reach the hub's admin port")
    # Something that answers HTTP but is not a billhub admin port (the demo biller).
    code, _, err = await billhub("status", "--url", f"http://127.0.0.1:{world.rest.port}")
    one_error_line(code, err)
    code, _, err = await billhub("status", "--url", "127.0.0.1:9100")
    one_error_line(code, err, "must start with http://")


# -- billhub journal show ---------------------------------------------------------------------------


async def test_journal_show_tells_a_reversed_payment_with_the_account_masked(world: World) -> None:
    link = await world.link()
    acct = find(world.batch_accounts)
    pay = world.pay(BATCH, acct)
    assert (await link.request(pay)).fields[39] == "00"
    assert (await link.request(m.reversal(pay))).fields[39] == "00"
    rrn = pay.fields[37].strip()
    journal = str(world.hub.config.journal.path)

    code, out, err = await billhub("journal", "show", "--rrn", rrn, "--journal", journal)
    assert code == 0, err
    assert f"RRN {rrn}  acquirer {pay.fields[32]}  settlement {pay.fields[15]}" in out
    masked = mask_account(acct.account)
    assert masked is not None and f"account {masked}" in out
    assert acct.account not in out, "the account is masked"
    assert "answer    00 (approved)" in out and "reversed yes" in out
    assert "reversal " in out and "answer 00" in out and "booked on" in out

    code, out, err = await billhub(
        "journal", "show", "--rrn", rrn, "--journal", journal, "--json", "--date", pay.fields[15]
    )
    assert code == 0, err
    (story,) = json.loads(out)
    assert story["payment"]["request"]["account"] == masked
    assert story["payment"]["answer"]["response_code"] == "00"
    assert story["payment"]["posting"]["reversed"] is True
    assert story["reversal"]["response_code"] == "00"
    assert acct.account not in out


async def test_journal_show_tells_the_resolvers_work(world: World) -> None:
    world.rest.set_faults(Faults(drop_after_post=True))
    link = await world.link()
    pay = world.pay(REST, find(world.rest_accounts, partial=False))
    assert (await link.request(pay)).fields[39] == "91"
    world.rest.set_faults(Faults())
    await settle(world)
    code, out, err = await billhub(
        "journal",
        "show",
        "--rrn",
        pay.fields[37],
        "--journal",
        str(world.hub.config.journal.path),
        "--json",
    )
    assert code == 0, err
    (story,) = json.loads(out)
    assert story["payment"]["answer"] == {
        "response_code": "91",
        "state": "uncertain",
        "answered_at": story["payment"]["answer"]["answered_at"],
        "approval_code": None,
    }
    assert story["payment"]["posting"]["resolution"] == "cancelled"
    (task,) = story["tasks"]
    assert task["kind"] == "resolve" and task["done_at"] is not None and task["outcome"]


async def test_journal_show_reads_the_journal_named_by_the_config(
    world: World,
    tmp_path: Path,
    pki,  # type: ignore[no-untyped-def]
) -> None:
    link = await world.link()
    pay = world.pay(BATCH, find(world.batch_accounts))
    assert (await link.request(pay)).fields[39] == "00"
    cfg = tmp_path / "ops.toml"
    cfg.write_text(
        f"""
[tls]
cert_file = "{pki.hub_cert}"
key_file = "{pki.hub_key}"
client_ca_file = "{pki.switch_ca_cert}"
allowed_subjects = ["switch-1"]
[journal]
path = "{world.hub.config.journal.path}"
""",
        "utf-8",
    )
    code, out, err = await billhub(
        "journal", "show", "--rrn", pay.fields[37], "--config", str(cfg), "--acquirer", "600001"
    )
    assert code == 0, err
    assert "answer    00 (approved)" in out


async def test_journal_show_errors_are_one_line(world: World, tmp_path: Path) -> None:
    journal = str(world.hub.config.journal.path)
    code, _, err = await billhub("journal", "show", "--rrn", "000000000999", "--journal", journal)
    one_error_line(code, err, "no payment or reversal with RRN 000000000999")
    code, _, err = await billhub("journal", "show", "--rrn", "1", "--journal", str(tmp_path / "x"))
    one_error_line(code, err, "no journal at")
    code, _, err = await billhub(
        "journal", "show", "--rrn", "1", "--config", str(tmp_path / "none.toml")
    )
    one_error_line(code, err, "not found")
    not_a_journal = tmp_path / "plain.db"
    not_a_journal.write_bytes(b"this is not sqlite" * 100)
    code, _, err = await billhub("journal", "show", "--rrn", "1", "--journal", str(not_a_journal))
    one_error_line(code, err, "cannot read the journal")
