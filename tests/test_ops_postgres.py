"""The operators' commands on the PostgreSQL journal: the same answers as on SQLite.

One day of traffic (payments on both billers, a repeat, reversals, a decline, an
uncertain payment, a cutover, the 0500s, a late reversal) runs through a real hub
over TLS, once on each journal. Then ``billhub status`` (against the running hub),
``billhub journal show``, ``billhub settle import`` and ``billhub report`` run as
processes against each, reading ``[journal] kind = "postgresql"`` from the hub's
own configuration file. What they print and write must be the same on both
journals, but for what differs from one run to the next anyway (times, payment
ids, approval codes, ports and paths).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.test_business_day import TOMORROW, _day
from tests.test_clearing import settlement_file
from tests.txharness import BATCH, REST, TODAY, mmdd, start_world

from billhub.simulator import messages as m

BILLHUB = [sys.executable, "-m", "billhub.cli"]
#: What differs between two runs of the same day, whatever the journal.
VOLATILE_KEYS = re.compile(
    r"(_at|_id|approval_code|receipt|uptime|_s|_ago|seconds|since|age|port|url|instance|"
    r"version|peer|now|attempts|recent_.*)$"
)
VOLATILE_TEXT = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"), "<time>"),
    (re.compile(r"payment id \S+"), "payment id <id>"),
    (re.compile(r"approval \S+"), "approval <code>"),
    (re.compile(r"receipt \S+"), "receipt <receipt>"),
    (re.compile(r"task \d+"), "task <n>"),
    (re.compile(r"payment:\w+"), "payment:<id>"),
    (re.compile(r"attempts \d+"), "attempts <n>"),
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BILLHUB, *args], check=False, capture_output=True, text=True, timeout=120
    )


async def run_beside_the_hub(*args: str) -> tuple[int, str, str]:
    """A command run while the hub serves in this event loop (which must keep running)."""
    proc = await asyncio.create_subprocess_exec(
        *BILLHUB, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def stable(value: Any) -> Any:
    """``value`` (parsed JSON) without what differs between two runs."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if not VOLATILE_KEYS.search(k)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def stable_text(text: str, *paths: Path) -> str:
    for path in paths:
        text = text.replace(str(path), "<dir>")
    for pattern, repl in VOLATILE_TEXT:
        text = pattern.sub(repl, text)
    return text


async def cancels_confirmed(world: Any, timeout: float = 15.0) -> None:
    """Wait until the resolver confirmed the reversals' cancels (the uncertain payment's
    task waits for its quiet period, longer than the test)."""
    async with asyncio.timeout(timeout):
        while any(t.kind.value == "cancel" for t in await world.hub.journal.open_tasks()):
            world.hub.resolver.wake()
            await asyncio.sleep(0.05)


async def one_day(tmp: Path, pki: Any, dsn: str | None) -> dict[str, Any]:
    """Run the day on the journal of ``dsn`` (SQLite if None); what the commands say."""
    world = await start_world(tmp, pki, budget=0.4, quiet=30.0, admin=True, journal_dsn=dsn)
    seen: dict[str, Any] = {}
    cfg = str(tmp / "billhub.toml")
    try:
        ledger, sent = await _day(world)
        link = world.links[0]
        assert (await link.cutover(mmdd(TOMORROW))).fields[39] == "00"
        assert (await link.request(ledger.zero_five_hundred(REST))).fields[39] == "00"
        assert (await link.request(ledger.zero_five_hundred(BATCH, delta=700))).fields[39] == "95"
        assert (await link.request(m.reversal(sent[f"{REST}-2"]))).fields[39] == "00"
        await cancels_confirmed(world)
        url = f"http://127.0.0.1:{world.hub.admin_port}"
        code, out, err = await run_beside_the_hub("status", "--url", url, "--json")
        assert code == 0, err
        seen["status"] = stable(json.loads(out))
    finally:
        await world.close()
    # Each command is a process of its own (seconds on a loaded machine): a few tell all.
    for name in (f"{REST}-1", "uncertain"):
        shown = run("journal", "show", "--rrn", sent[name].fields[37], "--config", cfg, "--json")
        assert shown.returncode == 0, shown.stderr
        (seen[f"show {name}"],) = stable(json.loads(shown.stdout))
    text = run("journal", "show", "--rrn", sent[f"{BATCH}-1"].fields[37], "--config", cfg)
    assert text.returncode == 0, text.stderr
    seen[f"show {BATCH}-1 text"] = stable_text(text.stdout)
    path = settlement_file(sent, tmp / f"settlement-{TODAY}.csv")
    imported = run("settle", "import", str(path), "--config", cfg)
    assert imported.returncode == 0, imported.stderr
    seen["import"] = stable_text(imported.stdout, tmp)
    again = run("settle", "import", str(path), "--config", cfg)
    seen["import again"] = stable_text(again.stdout, tmp)
    report = run("report", TODAY.isoformat(), "--config", cfg, "--out", str(tmp / "reports"))
    assert report.returncode == 0, report.stderr
    seen["report"] = stable_text(report.stdout, tmp)
    for f in sorted((tmp / "reports").glob("*.csv")):
        seen[f.name] = stable_text(f.read_text("utf-8"), tmp)
    return seen


async def test_the_commands_say_the_same_on_postgresql_as_on_sqlite(
    tmp_path: Path,
    pki: Any,
    pg_dsn: str,
) -> None:
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "pg").mkdir()
    on_sqlite = await one_day(tmp_path / "sqlite", pki, None)
    on_pg = await one_day(tmp_path / "pg", pki, pg_dsn)
    # On PostgreSQL, the commands read the day at all (not an empty journal):
    assert on_pg["show uncertain"]["payment"]["answer"]["response_code"] == "91"
    assert on_pg["show uncertain"]["tasks"][0]["kind"] == "resolve"
    reversed_rest = on_pg[f"show {REST}-1"]
    assert reversed_rest["payment"]["posting"]["reversed"] is True
    assert reversed_rest["reversal"]["cancel_state"] == "confirmed"
    assert on_pg["import"].count("\n") > 1 and "already imported" in on_pg["import again"]
    assert any(name.startswith("summary-") for name in on_pg)
    assert sorted(on_pg) == sorted(on_sqlite)
    for name in on_sqlite:
        assert on_pg[name] == on_sqlite[name], name
