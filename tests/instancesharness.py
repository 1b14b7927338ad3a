"""Several ``billhub serve`` processes on one PostgreSQL journal, as a ministry runs them.

Everything that holds state is its own process over real sockets: each hub
instance (``python -m billhub.cli serve``, its own link port and admin port), the
demo REST biller (``python -m billhub.simulator.rest_biller``), and the switch
(:class:`SwitchLink` over mutual TLS, one link per instance). The checks read what
a user would read: the answers on the wire, the biller's own ledger
(``GET /_admin/ledger``), the journal's tables, and each instance's ``/readyz``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from tests.hubharness import base_config
from tests.test_crash import hub_process

from billhub.iso8583.codec import Codec
from billhub.iso8583.spec import load_spec
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context

TOKEN = "instances-test-token"
BILLER = "100001"
BATCH = "100002"


def start_biller(*args: str) -> tuple[subprocess.Popen[str], int]:
    """The demo REST biller as its own process; returns it and its port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "billhub.simulator.rest_biller",
            "--port",
            "0",
            "--token",
            TOKEN,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise AssertionError(f"biller did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def pg_hub_config(
    pki: Any,
    dsn: str,
    biller_port: int,
    *,
    budget_s: float = 2.0,
    quiet_s: float = 1.0,
    lease_s: float = 2.0,
    claim_s: float = 3.0,
    batch: tuple[Path, Path] | None = None,
) -> str:
    """One instance's configuration: its own ports (0: free ones), the shared journal;
    ``batch``: also the batch biller ``100002`` on these (shared) inbox and outbox."""
    text = base_config(pki, Path("unused.db"), answer_budget_s=budget_s + 2)
    head, _, _ = text.rpartition("[journal]")
    return (
        head
        + f"""[journal]
kind = "postgresql"
dsn = "{dsn}"
lease_s = {lease_s}
claim_s = {claim_s}
[resolver]
quiet_period_s = {quiet_s}
backoff_base_s = 0.05
backoff_max_s = 0.5
poll_interval_s = 0.1
call_timeout_s = 2.0
[[billers]]
code = "{BILLER}"
name = "Damascus"
kind = "rest"
budget_s = {budget_s}
max_concurrency = 32
rest = {{ base_url = "http://127.0.0.1:{biller_port}", token = "{TOKEN}" }}
"""
        + (
            ""
            if batch is None
            else f"""[[billers]]
code = "{BATCH}"
name = "Rural Damascus"
kind = "batch"
budget_s = {budget_s}
batch = {{ inbox = "{batch[0]}", outbox = "{batch[1]}" }}
"""
        )
    )


@dataclass
class Instance:
    """One running ``billhub serve``."""

    name: str
    cfg: Path
    log: Path
    proc: subprocess.Popen[str]
    port: int
    admin_port: int

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}/readyz", timeout=5
            ) as r:
                return r.status, dict(json.load(r))
        except urllib.error.HTTPError as exc:
            return exc.code, dict(json.load(exc))

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class Cluster:
    """The hub instances of one test, the biller they share, and the switch's side."""

    tmp: Path
    pki: Any
    dsn: str
    biller: subprocess.Popen[str]
    biller_port: int
    codec: Codec = field(default_factory=lambda: Codec(load_spec()))
    instances: list[Instance] = field(default_factory=list)
    links: list[SwitchLink] = field(default_factory=list)

    def start_instance(self, name: str, **settings: Any) -> Instance:
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(pg_hub_config(self.pki, self.dsn, self.biller_port, **settings), "utf-8")
        log = self.tmp / f"{name}.log"
        proc, listening = hub_process(cfg, log)
        inst = Instance(name, cfg, log, proc, int(listening["port"]), int(listening["admin_port"]))
        self.instances.append(inst)
        return inst

    async def link(self, inst: Instance) -> SwitchLink:
        ctx = client_context(self.pki.switch_cert, self.pki.switch_key, self.pki.hub_ca_cert)
        link = await SwitchLink.connect("127.0.0.1", inst.port, ctx, self.codec)
        assert (await link.sign_on()).fields[39] == "00"
        self.links.append(link)
        return link

    def _admin(self, path: str, body: object | None = None) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.biller_port}/_admin/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def ledger(self) -> dict[str, dict[str, Any]]:
        """The biller's books: payment id → its entry (post and call counts, status)."""
        return {e["payment_id"]: e for e in self._admin("ledger")["payments"]}

    def faults(self, **faults: Any) -> None:
        """Make the biller misbehave (or, with nothing, behave again), at once."""
        self._admin("faults", faults)

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def payment(self, rrn: str) -> asyncpg.Record | None:
        rows = await self.query(
            "SELECT payment_id, state, response_code, resolution, instance FROM payments "
            "WHERE rtrim(rrn) = $1",
            rrn,
        )
        return rows[0] if rows else None

    async def open_tasks(self) -> int:
        rows = await self.query("SELECT count(*) FROM tasks WHERE done_at IS NULL")
        return int(rows[0][0])

    async def wait_tasks_done(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.open_tasks() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert await self.open_tasks() == 0, "every resolver task is done"

    async def close(self) -> None:
        for link in self.links:
            if not link.is_closed:
                await link.close()
        for inst in self.instances:
            inst.stop()
        if self.biller.poll() is None:
            self.biller.kill()
        self.biller.wait(timeout=10)


async def start_cluster(tmp: Path, pki: Any, dsn: str, *biller_args: str, today: str) -> Cluster:
    biller, port = start_biller(
        "--seed", "7", "--accounts", "400", "--prefix", "01", "--today", today, *biller_args
    )
    return Cluster(tmp, pki, dsn, biller, port)
