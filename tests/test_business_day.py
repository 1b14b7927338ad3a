"""A business day through the simulator: payments, cutover, 0500 reconciliation.

Figures are checked against an independent sum of what the test itself sent
and got approved; never against the hub's own arithmetic.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from tests.txharness import BATCH, REST, TODAY, World, find, mmdd, start_world

from billhub.iso8583.elements import format_net
from billhub.iso8583.message import Message
from billhub.settlement.model import FindingKind
from billhub.simulator import messages as m
from billhub.simulator.rest_biller import Faults

TOMORROW = TODAY + timedelta(days=1)


class Ledger:
    """What the switch itself knows: approved payments and reversals, by biller."""

    def __init__(self) -> None:
        self.approved: dict[str, list[int]] = {REST: [], BATCH: []}
        self.reversed: dict[str, list[int]] = {REST: [], BATCH: []}

    def zero_five_hundred(self, biller: str, *, delta: int = 0) -> Message:
        a, r = self.approved[biller], self.reversed[biller]
        return m.reconciliation(
            biller,
            mmdd(),
            count=len(a),
            total=sum(a) + delta,
            reversal_count=len(r),
            reversal_total=sum(r),
        )


async def _day(world: World) -> tuple[Ledger, dict[str, Message]]:
    """Payments on both billers, a repeat, a reversal, a decline, an uncertain payment."""
    link = await world.link()
    ledger = Ledger()
    sent: dict[str, Message] = {}
    for biller, accounts in ((REST, world.rest_accounts), (BATCH, world.batch_accounts)):
        payable = [
            a
            for a in accounts
            if a.status == "active" and a.total_due > 0 and not a.partial_allowed
        ][:4]
        for i, acct in enumerate(payable):
            pay = world.pay(biller, acct)
            resp = await link.request(pay)
            assert resp.fields[39] == "00"
            ledger.approved[biller].append(acct.total_due)
            sent[f"{biller}-{i}"] = pay
        assert (await link.request(m.repeat(sent[f"{biller}-0"]))).fields[39] == "00"
        assert (await link.request(m.reversal(sent[f"{biller}-1"]))).fields[39] == "00"
        ledger.reversed[biller].append(int(sent[f"{biller}-1"].fields[4]))
        bad = world.pay(biller, find(accounts, status="blocked"))
        assert (await link.request(bad)).fields[39] == "58"
    world.rest.set_faults(Faults(hang=True))
    stuck = world.pay(REST, find(world.rest_accounts, partial=False, min_bills=3))
    assert (await link.request(stuck)).fields[39] == "91"
    world.rest.set_faults(Faults())
    sent["uncertain"] = stuck
    return ledger, sent


@pytest.fixture
async def world(tmp_path: Path, pki) -> World:  # type: ignore[no-untyped-def]
    w = await start_world(tmp_path, pki, budget=0.4, quiet=30.0)
    yield w  # type: ignore[misc]
    await w.close()


async def test_cutover_then_0500_agreeing_and_disagreeing(world: World) -> None:
    ledger, _sent = await _day(world)
    link = world.links[0]
    early = await link.request(ledger.zero_five_hundred(REST))
    assert early.fields[39] == "12", "a 0500 for a date not closed yet"
    assert (await link.cutover(mmdd(TOMORROW))).fields[39] == "00"
    assert (await link.cutover(mmdd(TOMORROW))).fields[39] == "00", "same date again"
    assert (await link.cutover(mmdd(TODAY))).fields[39] == "30", "an earlier date"

    for biller in (REST, BATCH):
        resp = await link.request(ledger.zero_five_hundred(biller))
        assert (resp.mti, resp.fields[39]) == ("0510", "00")
        a, r = ledger.approved[biller], ledger.reversed[biller]
        assert int(resp.fields[74]) == len(a) and int(resp.fields[86]) == sum(a)
        assert int(resp.fields[75]) == len(r) and int(resp.fields[87]) == sum(r)
        assert resp.fields[97] == format_net(sum(a), sum(r))

    wrong = await link.request(ledger.zero_five_hundred(REST, delta=100))
    assert wrong.fields[39] == "95"
    assert int(wrong.fields[86]) == sum(ledger.approved[REST]), "the hub answers its own totals"
    again = await link.request(ledger.zero_five_hundred(REST, delta=100))
    assert again.fields[39] == "95", "a repeated 0500 is compared and answered again"
    unknown = m.reconciliation(
        "999999", mmdd(), count=0, total=0, reversal_count=0, reversal_total=0
    )
    assert (await link.request(unknown)).fields[39] == "92"

    store = world.hub.closer.store  # type: ignore[union-attr]
    findings = await store.findings(TODAY)
    assert findings and all(f.kind is FindingKind.RECONCILIATION for f in findings)
    amount = [f for f in findings if "DE 86" in f.detail]
    assert amount and amount[0].biller == REST
    assert amount[0].switch != amount[0].hub, "both sides' figures are kept"


async def test_closed_date_gets_90_but_repeats_keep_their_answer(world: World) -> None:
    _ledger, sent = await _day(world)
    link = world.links[0]
    assert (await link.cutover(mmdd(TOMORROW))).fields[39] == "00"
    late = world.pay(REST, find(world.rest_accounts, partial=False, min_bills=2), date=mmdd())
    assert (await link.request(late)).fields[39] == "90"
    assert (await link.request(m.repeat(late))).fields[39] == "90"
    assert (await link.request(m.repeat(sent[f"{REST}-0"]))).fields[39] == "00"
    assert (await link.request(m.repeat(sent["uncertain"]))).fields[39] == "91"
    fresh = world.pay(
        BATCH, find(world.batch_accounts, partial=False, min_bills=2), date=mmdd(TOMORROW)
    )
    assert (await link.request(fresh)).fields[39] == "00", "the new date is open"


async def test_late_reversal_after_the_0500_is_applied(world: World) -> None:
    ledger, sent = await _day(world)
    link = world.links[0]
    assert (await link.cutover(mmdd(TOMORROW))).fields[39] == "00"
    assert (await link.request(ledger.zero_five_hundred(BATCH))).fields[39] == "00"
    late = m.reversal(sent[f"{BATCH}-2"])
    assert (await link.request(late)).fields[39] == "00", "applied, even after the 0500"
    store = world.hub.closer.store  # type: ignore[union-attr]
    totals = await store.day_totals(BATCH, TODAY)
    assert totals.reversal_count == len(ledger.reversed[BATCH]) + 1
    again = await link.request(ledger.zero_five_hundred(BATCH))
    assert again.fields[39] == "95", "the switch's old figures no longer agree"
    first = await store.first_reconciled_at(BATCH, TODAY)
    reversals = [r for r in await store.reversals_on(TODAY) if r.response_code == "00"]
    adjustments = [r for r in reversals if first is not None and r.received_at > first]
    assert len(adjustments) == 1 and adjustments[0].biller == BATCH


async def test_cutover_waits_for_payments_in_flight(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    world = await start_world(tmp_path, pki, budget=2.0, faults=Faults(latency_ms=600))
    try:
        link = await world.link()
        pay = world.pay(REST, find(world.rest_accounts, partial=False))
        paid = link.send(pay)
        await asyncio.sleep(0.1)
        cut = link.send(link.link.network_request("201", mmdd(TOMORROW)))
        first = await asyncio.wait({paid, cut}, return_when=asyncio.FIRST_COMPLETED)
        assert paid in first[0], "the payment of the closing date is answered first"
        assert (await paid).fields[39] == "00" and (await cut).fields[39] == "00"
        record = await world.payment_record(pay)
        assert record is not None and record.response_code == "00"
    finally:
        await world.close()


async def test_closing_a_day_survives_a_crash_and_is_redone(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    world = await start_world(tmp_path, pki)
    link = await world.link()
    for a in [a for a in world.batch_accounts if a.status == "active" and a.total_due > 0][:3]:
        assert (await link.request(world.pay(BATCH, a))).fields[39] == "00"

    async def crash(dates, ledger):  # type: ignore[no-untyped-def]
        raise OSError("disk gone mid-cutover")

    world.hub.billers[BATCH].close_day = crash  # type: ignore[method-assign]
    resp = await link.request(link.link.network_request("201", mmdd(TOMORROW)))
    assert resp.fields[39] == "96", "the cutover could not finish: no 00"
    path = world.outbox / f"payments-{BATCH}-{TODAY:%Y%m%d}.csv"
    assert not path.exists()
    await world.close()

    again = await start_world_again(tmp_path, pki)
    try:
        assert path.exists(), "the closing was redone at start-up"
        first = path.read_bytes()
        last = await again.hub.closer.store.latest_cutover()
        assert last is not None and last.state == "closed" and last.new_date == TOMORROW
        assert again.hub.day.current == TOMORROW
        link = await again.link()
        again.rrn = 1000  # RRNs of the first run are in the journal: these are new payments
        late = again.pay(BATCH, find(again.batch_accounts, partial=False), date=mmdd())
        assert (await link.request(late)).fields[39] == "90"
        assert (await link.cutover(mmdd(TOMORROW))).fields[39] == "00"
        assert path.read_bytes() == first, "nothing written twice or differently"
        assert first.decode().splitlines()[-1].startswith("TOTAL,3,")
    finally:
        await again.close()


async def start_world_again(tmp_path: Path, pki) -> World:  # type: ignore[no-untyped-def]
    """The same hub configuration and journal, after a crash (fresh folders for the billers)."""
    fresh = tmp_path / "again"
    fresh.mkdir()
    world = await start_world(
        fresh, pki, journal=tmp_path / "journal.db", outbox=tmp_path / "outbox"
    )
    return world
