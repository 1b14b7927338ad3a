"""A batch biller's bills shared by two hub instances on one PostgreSQL journal.

Each instance runs its own pipeline and its own connector (an index in memory), as two
``billhub serve`` processes do; the store and the journal are one PostgreSQL database.
No sockets: the pipelines are driven with the switch's messages directly. What an
operator checks: one bill is paid once whichever instance is asked, both instances
answer from the same bills, and a reversal on one reopens the bill on both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import FixedIds, ManualClock
from tests.test_journal_sqlite import T0

from billhub.config import BatchSettings, JournalConfig
from billhub.connectors.batch import BatchConnector
from billhub.iso8583.spec import load_spec
from billhub.journal.factory import JournalSet, build_journal
from billhub.pipeline.routes import BillerRoute
from billhub.pipeline.service import Pipeline
from billhub.settlement.calendar import BusinessDay
from billhub.simulator import messages as m
from billhub.simulator.demo_data import DemoAccount, DemoBill, write_bills_file

BILLER = "100002"
RULES = load_spec(None).rules
ACCOUNT = "0200000001"
OLD = DemoBill("RD-2026-10-000001", "202610", date(2026, 10, 28), 90_000)
NEW = DemoBill("RD-2026-11-000001", "202611", date(2026, 11, 28), 120_000)
MMDD = T0.strftime("%m%d")


@dataclass
class Instance:
    stores: JournalSet
    biller: BatchConnector
    pipeline: Pipeline


def sent(msg: Any, stan: str) -> Any:
    """What the switch's link adds to a request before it goes: DE 7 and DE 11."""
    msg.fields[7], msg.fields[11] = T0.strftime("%m%d%H%M%S"), stan
    return msg


async def instance(name: str, dsn: str, settings: BatchSettings) -> Instance:
    stores = build_journal(JournalConfig(kind="postgresql", dsn=dsn), instance=name)
    await stores.open()
    biller = BatchConnector(BILLER, settings, stores.bills, today=T0.date, follow_interval=0)
    await biller.start(stores.journal)
    route = BillerRoute(BILLER, "Rural Damascus", biller, budget=2.0, max_concurrency=8)
    pipeline = Pipeline(
        RULES,
        stores.journal,
        {BILLER: route},
        ManualClock(T0),
        FixedIds(prefix=f"{name}-"),
        calendar=BusinessDay(T0.date),
    )
    return Instance(stores, biller, pipeline)


@pytest.fixture
async def pair(pg_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[Instance, Instance]]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = BatchSettings(inbox, tmp_path / "outbox")
    account = DemoAccount(ACCOUNT, "سامر سليمان", "active", False, 0, (OLD, NEW), (), ())
    write_bills_file(inbox, BILLER, [account], day=T0.date())
    a = await instance("a", pg_dsn, settings)
    b = await instance("b", pg_dsn, settings)
    try:
        yield a, b
    finally:
        for i in (a, b):
            await i.biller.close()
            await i.stores.close()


async def pay(i: Instance, rrn: str, amount: int, bill_id: str | None = None) -> Any:
    msg = m.payment(BILLER, ACCOUNT, rrn, amount, MMDD, bill_id=bill_id)
    return await i.pipeline.handle(sent(msg, rrn[-6:]))


async def due(i: Instance) -> list[str]:
    return [b.bill_id for b in (await i.biller.open_bills(ACCOUNT)).bills]


async def test_a_bills_file_is_loaded_once_and_both_instances_answer_from_it(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    loaded_a = await a.biller.poll()
    loaded_b = await b.biller.poll()  # the same inbox: the file is gone or a duplicate
    assert [r.outcome.value for r in loaded_a] == ["loaded"]
    assert [r.outcome.value for r in loaded_b] in ([], ["duplicate"])
    assert await due(a) == await due(b) == [OLD.bill_id, NEW.bill_id]


async def test_one_bill_asked_on_both_instances_is_paid_once(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    await a.biller.poll()
    await b.biller.follow()
    first = await pay(a, "000000000001", OLD.amount, OLD.bill_id)
    # b has not heard of a's payment yet: its memory says the bill is open; the
    # journal's commit refuses the second taking, and b answers from the store.
    second = await pay(b, "000000000002", OLD.amount, OLD.bill_id)
    assert (first.fields[39], second.fields[39]) == ("00", "51")
    assert await due(b) == [NEW.bill_id]
    await a.biller.follow()
    assert await due(a) == [NEW.bill_id]
    held = await a.stores.journal.held_payments(BILLER)
    assert [(p.key.rrn, p.amount) for p in held] == [("000000000001", OLD.amount)]
    # Paying everything due on b (no bill id): the one bill left.
    rest = await pay(b, "000000000003", NEW.amount)
    assert rest.fields[39] == "00"
    await a.biller.follow()
    assert await due(a) == await due(b) == []


async def test_a_reversal_on_one_instance_reopens_the_bill_on_both(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    await a.biller.poll()
    await b.biller.follow()
    original = sent(m.payment(BILLER, ACCOUNT, "000000000001", OLD.amount, MMDD,
                              bill_id=OLD.bill_id), "000001")  # fmt: skip
    assert (await a.pipeline.handle(original)).fields[39] == "00"
    reversal = sent(m.reversal(original), "000002")
    assert (await b.pipeline.handle(reversal)).fields[39] == "00"
    await a.biller.follow()
    assert await due(a) == await due(b) == [OLD.bill_id, NEW.bill_id]
    again = await pay(a, "000000000003", OLD.amount, OLD.bill_id)
    assert again.fields[39] == "00"
    held = await b.stores.journal.held_payments(BILLER)
    assert [p.key.rrn for p in held] == ["000000000003"]
