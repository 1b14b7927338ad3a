"""A whole hub for transaction tests: real TLS link, real SQLite journal, real billers.

The REST biller is the demo biller (an aiohttp server on a loopback socket, the
BILLERS.md contract, fault injection); the batch biller reads real bills files
from its inbox. The hub is built exactly as ``billhub serve`` builds it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tests.hubharness import Recorder, base_config

from billhub.app.hub import Hub, build_hub
from billhub.config import parse_config
from billhub.iso8583.de48 import parse_tlv
from billhub.iso8583.message import Message
from billhub.pipeline.decisions import payment_key
from billhub.pipeline.model import PaymentRecord
from billhub.simulator import messages as m
from billhub.simulator.demo_data import DemoAccount, generate_accounts, write_bills_file
from billhub.simulator.rest_biller import Faults, RestBiller
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context

REST, BATCH = "100001", "100002"
TOKEN = "test-token-d4c1"
TODAY = datetime.now(UTC).date()


def mmdd(d: date = TODAY) -> str:
    return d.strftime("%m%d")


def find(accounts: list[DemoAccount], **want: Any) -> DemoAccount:
    """The first account with the attributes asked for (and open bills unless said)."""
    for a in accounts:
        if want.get("status", "active") != a.status:
            continue
        if "partial" in want and a.partial_allowed != want["partial"]:
            continue
        if want.get("due", True) != (a.total_due > 0):
            continue
        if "min_bills" in want and len(a.bills) < want["min_bills"]:
            continue
        if "max_bills" in want and len(a.bills) > want["max_bills"]:
            continue
        return a
    raise LookupError(f"no demo account with {want}")


@dataclass
class World:
    hub: Hub
    port: int
    rest: RestBiller
    rest_accounts: list[DemoAccount]
    batch_accounts: list[DemoAccount]
    inbox: Path
    outbox: Path
    recorder: Recorder
    pki: Any
    links: list[SwitchLink] = field(default_factory=list)
    rrn: int = 0

    async def link(self) -> SwitchLink:
        ctx = client_context(self.pki.switch_cert, self.pki.switch_key, self.pki.hub_ca_cert)
        link = await SwitchLink.connect("127.0.0.1", self.port, ctx, self.hub.codec)
        assert (await link.sign_on()).fields[39] == "00"
        self.links.append(link)
        return link

    def next_rrn(self) -> str:
        self.rrn += 1
        return f"{self.rrn:012d}"

    def pay(
        self, biller: str, account: DemoAccount, amount: int | None = None, **kw: Any
    ) -> Message:
        return m.payment(
            biller,
            account.account,
            self.next_rrn(),
            account.total_due if amount is None else amount,
            kw.pop("date", mmdd()),
            **kw,
        )

    def ledger(self, payment_id: str | None = None) -> list[dict[str, Any]]:
        rows = self.rest.ledger_snapshot()
        return [r for r in rows if payment_id is None or r["payment_id"] == payment_id]

    async def payment_record(self, request: Message) -> PaymentRecord | None:
        assert self.hub.journal is not None
        return await self.hub.journal.get_payment(payment_key(request))

    async def payment_record_by_id(self, payment_id: str) -> PaymentRecord:
        assert self.hub.journal is not None
        record = await self.hub.journal.get_payment_by_id(payment_id)
        assert record is not None
        return record

    async def close(self) -> None:
        for link in self.links:
            await link.close()
        await self.hub.stop(2.0)
        await self.rest.stop()


def tlv(msg: Message) -> dict[str, str]:
    return parse_tlv(msg.fields.get(48, ""))


async def start_world(
    tmp_path: Path,
    pki: Any,
    *,
    budget: float = 1.0,
    quiet: float = 0.5,
    rest_concurrency: int = 16,
    faults: Faults | None = None,
    n_accounts: int = 60,
    journal: Path | None = None,
    outbox: Path | None = None,
    admin: bool = False,
    journal_dsn: str | None = None,
) -> World:
    """``admin``: serve the admin port (metrics, status) on a free loopback port.
    ``journal_dsn``: run on that PostgreSQL journal instead of the SQLite file."""
    rest_accounts = generate_accounts("01", n_accounts, 11, today=TODAY)
    batch_accounts = generate_accounts("02", n_accounts, 12, today=TODAY)
    rest = RestBiller(rest_accounts, TOKEN, faults=faults)
    rest_port = await rest.start()
    inbox = tmp_path / "inbox"
    outbox = outbox or tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir(exist_ok=True)
    journal = journal or tmp_path / "journal.db"
    write_bills_file(inbox, BATCH, batch_accounts, day=TODAY)
    text = (
        base_config(
            pki,
            journal,
            admin=admin,
            journal_dsn=journal_dsn,
            answer_budget_s=max(budget, 1.0) + 1,
        )
        + f"""
[resolver]
quiet_period_s = {quiet}
backoff_base_s = 0.05
backoff_max_s = 0.2
poll_interval_s = 0.05
call_timeout_s = 1.0
[[billers]]
code = "{REST}"
name = "Damascus"
kind = "rest"
budget_s = {budget}
max_concurrency = {rest_concurrency}
rest = {{ base_url = "http://127.0.0.1:{rest_port}", token = "{TOKEN}" }}
[[billers]]
code = "{BATCH}"
name = "Rural Damascus"
kind = "batch"
budget_s = {budget}
batch = {{ inbox = "{inbox}", outbox = "{outbox}" }}
"""
    )
    config = parse_config(text, base_dir=tmp_path, env={})
    # The same configuration as a file, for the command-line tools run against this hub.
    (tmp_path / "billhub.toml").write_text(text, "utf-8")
    recorder = Recorder()
    hub = build_hub(config, subscribers=[recorder])
    port = await hub.start()
    return World(hub, port, rest, rest_accounts, batch_accounts, inbox, outbox, recorder, pki)


async def settle(world: World, timeout: float = 10.0) -> None:
    """Let the resolver finish every open task."""
    assert world.hub.resolver is not None
    await world.hub.resolver.run_until_idle(timeout)


async def gather(*aws: Any) -> list[Any]:
    return list(await asyncio.gather(*aws))
