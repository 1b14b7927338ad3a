"""A hub per core: several ``billhub serve`` processes on one host share the link port.

With ``[link] reuse_port = true`` every process binds the same port (``SO_REUSEPORT``)
and the kernel gives each new link to one of them; they share one PostgreSQL journal,
so a payment is recorded once whichever process its link landed on. On a SQLite
journal the option is refused: the processes would not share what they record.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.instancesharness import BILLER, Cluster, Instance, pg_hub_config, start_cluster
from tests.test_crash import hub_process
from tests.txharness import TODAY, mmdd

from billhub.config import parse_config
from billhub.errors import ConfigError
from billhub.simulator import messages as m
from billhub.simulator.demo_data import generate_accounts
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context

ACCOUNTS = generate_accounts("01", 400, 7, today=TODAY)
BILLS = [(a, b) for a in ACCOUNTS if a.status == "active" for b in a.bills]
#: Links opened at most before both processes must have had one: the kernel picks by a
#: hash of each connection's addresses, so all landing on one is 2 ** -(n - 1).
MAX_LINKS = 40
MIN_PAYMENTS = 8


@pytest.fixture
async def cluster(tmp_path: Path, pki: Any, pg_dsn: str) -> AsyncIterator[Cluster]:
    c = await start_cluster(tmp_path, pki, pg_dsn, today=TODAY.isoformat())
    try:
        yield c
    finally:
        await c.close()


def sharing(cluster: Cluster, name: str, port: int) -> Instance:
    """One more hub process on ``port`` (0: a free one) with ``reuse_port``."""
    text = pg_hub_config(cluster.pki, cluster.dsn, cluster.biller_port)
    text = text.replace("port = 0\n", f"port = {port}\nreuse_port = true\n", 1)  # [link]'s
    cfg = cluster.tmp / f"{name}.toml"
    cfg.write_text(text, "utf-8")
    log = cluster.tmp / f"{name}.log"
    proc, listening = hub_process(cfg, log)
    inst = Instance(name, cfg, log, proc, int(listening["port"]), int(listening["admin_port"]))
    cluster.instances.append(inst)
    return inst


async def test_two_hubs_share_one_port_and_record_each_payment_once(cluster: Cluster) -> None:
    a = sharing(cluster, "a", 0)
    b = sharing(cluster, "b", a.port)
    assert b.port == a.port and a.admin_port != b.admin_port
    with socket.socket() as plain, pytest.raises(OSError) as taken:
        plain.bind(("127.0.0.1", a.port))  # a process without SO_REUSEPORT is kept out
    assert taken.value.errno == errno.EADDRINUSE
    ctx = client_context(cluster.pki.switch_cert, cluster.pki.switch_key, cluster.pki.hub_ca_cert)

    rrns: list[str] = []
    landed: set[int] = set()
    for i in range(MAX_LINKS):
        link = await SwitchLink.connect("127.0.0.1", a.port, ctx, cluster.codec)
        try:
            assert (await link.sign_on()).fields[39] == "00"
            account, bill = BILLS[i]
            rrn = f"{i:012d}"
            answer = await link.request(
                m.payment(BILLER, account.account, rrn, bill.amount, mmdd(), bill_id=bill.bill_id)
            )
            assert answer.fields[39] == "00"
        finally:
            await link.close()
        rrns.append(rrn)
        row = await cluster.payment(rrn)
        assert row is not None
        landed.add(int(str(row["instance"]).split("-")[-2]))  # host-pid-random
        if len(landed) == 2 and len(rrns) >= MIN_PAYMENTS:
            break
    assert landed == {a.proc.pid, b.proc.pid}, "the switch's links reached both processes"

    rows = await cluster.query("SELECT rtrim(rrn) AS rrn, state FROM payments")
    assert sorted(r["rrn"] for r in rows) == sorted(rrns), "each payment in the journal once"
    assert {r["state"] for r in rows} == {"approved"}
    posted = [e for e in cluster.ledger().values() if e["rrn"] in rrns]
    assert sorted(e["rrn"] for e in posted) == sorted(rrns)
    assert all(e["post_count"] == 1 for e in posted), "each reached the biller once"


def test_reuse_port_is_refused_on_a_sqlite_journal(tmp_path: Path) -> None:
    text = """\
[link]
port = 8583
reuse_port = true
[tls]
cert_file = "hub.crt"
key_file = "hub.key"
client_ca_file = "ca.crt"
allowed_subjects = ["switch-1"]
[journal]
path = "billhub.db"
"""
    for name in ("hub.crt", "hub.key", "ca.crt"):
        (tmp_path / name).write_text("")
    with pytest.raises(ConfigError) as err:
        parse_config(text, base_dir=tmp_path, env={})
    assert err.value.key == "link.reuse_port"
    assert "postgresql" in str(err.value)
    assert parse_config(text.replace("true", "false"), base_dir=tmp_path, env={})
