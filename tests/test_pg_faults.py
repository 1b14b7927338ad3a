"""PostgreSQL cut and stopped under a running hub, on a private cluster of the test's own.

A real failover looks like this to the hub: every connection dies at once
(``pg_terminate_backend``, a proxy or a primary going away), then the server
refuses connections for a while (``pg_ctl stop -m immediate``), then it is back.
Meanwhile the switch keeps sending payments. What must hold, read from the
answers, ``/readyz``, the journal and the biller's own ledger:

- no `00` without a commit: every payment answered `00` is in the journal
  approved, and posted once at the biller;
- payments the journal could not take are declined (`91`/`96`), and whatever the
  biller posted for them is cancelled by the resolver, with no restart;
- ``/readyz`` says not ready while the journal cannot write, ready again after;
- the hub reconnects by itself and approves again; an answer given never changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.instancesharness import BILLER, Cluster, Instance, start_cluster
from tests.privatepg import PrivatePg, private_pg  # noqa: F401 (the fixture)
from tests.test_instances import BILLS, answer, pay
from tests.txharness import TODAY

from billhub.errors import BillhubError
from billhub.iso8583.message import Message
from billhub.simulator import messages as m
from billhub.simulator.switch import SwitchLink


@pytest.fixture
async def cluster(tmp_path: Path, pki: Any, private_pg: PrivatePg) -> AsyncIterator[Cluster]:  # noqa: F811
    c = await start_cluster(
        tmp_path, pki, private_pg.dsn("billhub"), "--latency-ms", "20", today=TODAY.isoformat()
    )
    try:
        yield c
    finally:
        await c.close()


class Traffic:
    """The switch paying bills on one link, a few at a time, until stopped; each
    request that got no answer is re-sent later as a repeat."""

    def __init__(self, link: SwitchLink, requests: list[Message], in_flight: int = 8) -> None:
        self.link = link
        self.todo = list(requests)
        self.answers: dict[str, Message] = {}
        self.answered_at: dict[str, float] = {}
        self.in_flight = in_flight
        self._stop = asyncio.Event()

    async def run(self) -> None:
        sem = asyncio.Semaphore(self.in_flight)
        pending: set[asyncio.Task[None]] = set()
        for req in self.todo:
            if self._stop.is_set():
                break
            await sem.acquire()
            await asyncio.sleep(0.01)  # paced: a declining hub must not use the list up
            task = asyncio.ensure_future(self._one(req))
            task.add_done_callback(lambda _: sem.release())
            pending.add(task)
        await asyncio.gather(*pending)

    async def _one(self, req: Message) -> None:
        msg = m.repeat(req, "0200") if req.fields.get(7) else req
        try:
            resp = await self.link.request(msg, timeout=20)
        except BillhubError:
            return
        req.fields[7] = resp.fields[7]
        self.answers.setdefault(req.fields[37], resp)
        self.answered_at.setdefault(req.fields[37], time.monotonic())

    def stop(self) -> None:
        self._stop.set()

    async def until(self, n: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while len(self.answers) < n:
                await asyncio.sleep(0.02)


async def _ready(inst: Instance, want: bool, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await asyncio.to_thread(inst.readyz)
        if (status == 200) == want or time.monotonic() > deadline:
            assert (status == 200) == want, f"/readyz {status} {body}"
            return body
        await asyncio.sleep(0.1)


async def test_postgresql_cut_and_stopped_mid_traffic(
    cluster: Cluster,
    private_pg: PrivatePg,  # noqa: F811
) -> None:
    a = cluster.start_instance("a", lease_s=5.0, claim_s=5.0)
    link = await cluster.link(a)
    await _ready(a, True)
    traffic = Traffic(link, [pay(i) for i in range(0, 1200)])
    running = asyncio.ensure_future(traffic.run())

    await traffic.until(60)
    killed = private_pg.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = 'billhub' AND pid <> pg_backend_pid()"
    )
    assert int(killed) > 0, "the hub's connections were cut"
    await traffic.until(len(traffic.answers) + 60)

    private_pg.stop("immediate")
    down_at = time.monotonic()
    body = await _ready(a, False)
    assert body["journal"] in ("failing", "error", "timeout"), body
    inquiry = await link.request(m.inquiry(BILLER, pay(len(BILLS) - 1).fields[102], "999999000001"))
    assert inquiry.fields[39] in ("00", "91"), "an inquiry needs no journal or says 91"
    await asyncio.sleep(2.0)  # the switch keeps paying while the journal is down
    up_at = time.monotonic()
    private_pg.start()
    await _ready(a, True)
    after = len(traffic.answers)
    await traffic.until(after + 60)
    traffic.stop()
    await running

    during = [
        r for rrn, r in traffic.answers.items() if down_at + 0.5 < traffic.answered_at[rrn] < up_at
    ]
    assert during and all(r.fields[39] in ("91", "96") for r in during), (
        "nothing is approved while the journal is down"
    )
    assert any(
        r.fields[39] == "00"
        for rrn, r in traffic.answers.items()
        if traffic.answered_at[rrn] > up_at
    ), "the hub reconnected by itself"

    # The switch re-sends what got no answer, then every key once more: answers stand.
    sent = [r for r in traffic.todo if r.fields.get(7)]
    first = {rrn: answer(r) for rrn, r in traffic.answers.items()}
    again = Traffic(link, sent)
    again.answers = {k: v for k, v in traffic.answers.items()}
    await again.run()
    for req in sent:
        if req.fields[37] in first:
            resp = await link.request(m.repeat(req, "0201"))
            assert answer(resp) == first[req.fields[37]], "an answer given never changes"
    await cluster.wait_tasks_done(timeout=90)

    ledger = cluster.ledger()
    rows = await cluster.query("SELECT rtrim(rrn) AS rrn, payment_id, state FROM payments")
    journal = {r["rrn"]: r for r in rows}
    approved = 0
    for rrn, resp in again.answers.items():
        row = journal.get(rrn.strip())
        entry = ledger.get(row["payment_id"]) if row is not None else None
        if resp.fields[39] == "00":
            approved += 1
            assert row is not None and row["state"] == "approved", "no 00 without a commit"
            assert entry is not None and entry["status"] == "posted"
            assert entry["post_count"] == 1
        else:
            assert entry is None or entry["status"] == "cancelled", (
                f"a payment answered {resp.fields[39]} is held by the biller"
            )
    held = [e for e in ledger.values() if e["status"] == "posted"]
    assert len(held) == approved, "the biller holds exactly the approved payments"
    assert "Traceback" not in a.log.read_text(), "the outage is logged in events, not tracebacks"
    codes = sorted({r.fields[39] for r in again.answers.values()})
    print(f"\nanswers {len(again.answers)}, approved {approved}, codes {codes}")
