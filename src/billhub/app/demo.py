"""``billhub demo``: a hub, two demo billers and a simulated switch on loopback.

No set-up: development certificates, the Damascus REST biller, the Rural
Damascus bills file and a configuration are made in the working folder; the
hub runs on SQLite with its logs in ``hub.log`` there; the switch signs on and
runs a short business day over mutual TLS, and the table of what happened is
printed at the end with where the journal and the payments file are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp

from billhub.app.hub import build_hub
from billhub.app.web import build_web, users_add
from billhub.config import Config, load_config
from billhub.connectors.database.schema import install, load_bills
from billhub.iso8583.de48 import parse_bills, parse_tlv
from billhub.iso8583.message import Message
from billhub.money import Amount
from billhub.observability.logs import configure
from billhub.pipeline.decisions import payment_key
from billhub.simulator import messages as m
from billhub.simulator.demo_data import (
    DemoAccount,
    bills_table_rows,
    generate_accounts,
    write_bills_file,
)
from billhub.simulator.rest_biller import Faults, RestBiller
from billhub.simulator.switch import SwitchLink
from billhub.transport.certs import init_dev_certs
from billhub.transport.tls import client_context

DAMASCUS, RURAL, ALEPPO = "100001", "100002", "100003"
TOKEN = "demo-token-not-a-secret"  # noqa: S105 - the demo biller's, made up
PHONE = "0944123456"
STILL_DUE = "دفعت والفاتورة ما زالت مستحقة"
OUTAGES = "انقطاع متكرر للتيار"

CONFIG = """\
# Written by `billhub demo`: a hub on loopback with development certificates.
[link]
host = "127.0.0.1"
port = 0
idle_interval_s = 1.0      # short, so that the hub's own echo test shows in the demo

[tls]
cert_file = "certs/hub.crt"
key_file = "certs/hub.key"
client_ca_file = "certs/switch-ca.crt"
allowed_subjects = ["switch-1"]

[admin]
host = "127.0.0.1"
port = 0

[log]
format = "json"
level = "debug"

[journal]
path = "journal.db"

[web]
host = "127.0.0.1"
port = 0
admin_port = 0
secure_cookies = false     # the demo serves plain HTTP on loopback; production keeps true
code_file = "sms-codes.log"

[resolver]
quiet_period_s = 1.0       # short for the demo; production waits longer for late postings
backoff_base_s = 0.1
poll_interval_s = 0.1

[[billers]]
code = "{damascus}"
name = "Damascus Electricity"
kind = "rest"
budget_s = 1.0
rest = {{ base_url = "http://127.0.0.1:{port}", token = "{token}" }}

[[billers]]
code = "{rural}"
name = "Rural Damascus Electricity"
kind = "batch"
budget_s = 1.0
batch = {{ inbox = "rural-damascus/inbox", outbox = "rural-damascus/outbox" }}
"""

DATABASE_BILLER = """
[[billers]]
code = "{aleppo}"
name = "Aleppo Electricity"
kind = "database"
budget_s = 2.0

[billers.database]
dsn = "${{BILLHUB_DEMO_BILLER_DSN}}"
"""


@dataclass
class Row:
    step: str
    request: str
    answer: str
    code: str
    detail: str


def _syp(minor: int) -> str:
    return f"{Amount(minor).format()} SYP"


def _pick(accounts: list[DemoAccount], n: int) -> list[DemoAccount]:
    ok = [a for a in accounts if a.status == "active" and a.total_due > 0 and len(a.bills) <= 12]
    return [a for a in ok if not a.partial_allowed][:n]


def run_demo(workdir: Path, *, database_biller: str | None = None) -> int:
    """Prepare the working folder, then run the script; returns the exit code.

    With ``database_biller`` (a DSN of a PostgreSQL or MariaDB/MySQL database of the
    user's own), a third biller, Aleppo, is that database: the default schema is
    created there, emptied and filled with demo subscribers, and the switch pays it
    too. The DSN reaches the configuration through the environment, never the file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    certs = workdir / "certs"
    if not (certs / "hub.crt").exists():
        init_dev_certs(certs, force=True)
    for stale in ("journal.db", "journal.db-wal", "journal.db-shm"):
        (workdir / stale).unlink(missing_ok=True)
    shutil.rmtree(workdir / "rural-damascus", ignore_errors=True)
    inbox = workdir / "rural-damascus" / "inbox"
    (workdir / "rural-damascus" / "outbox").mkdir(parents=True)
    inbox.mkdir(parents=True)
    today = datetime.now(UTC).date()
    write_bills_file(inbox, RURAL, generate_accounts("02", 200, 2, today=today), day=today)
    if database_biller is not None:
        asyncio.run(_fill(database_biller, today))
        os.environ["BILLHUB_DEMO_BILLER_DSN"] = database_biller
    log_path = workdir / "hub.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        configure("json", "debug", log_file)
        return asyncio.run(_script(workdir, certs, log_path, database=database_biller is not None))


def _aleppo(today: date) -> list[DemoAccount]:
    return generate_accounts("03", 200, 3, today=today)


async def _fill(dsn: str, today: date) -> None:
    await fill_biller_database(dsn, _aleppo(today), empty=True)


async def fill_biller_database(dsn: str, accounts: list[DemoAccount], *, empty: bool) -> int:
    """The default biller schema at ``dsn``, filled with ``accounts``' bills; returns rows."""
    await install(dsn, code=ALEPPO, empty=empty)
    return await load_bills(dsn, bills_table_rows(accounts), code=ALEPPO)


async def _script(workdir: Path, certs: Path, log_path: Path, *, database: bool = False) -> int:
    today = datetime.now(UTC).date()
    damascus_accounts = generate_accounts("01", 200, 1, today=today)
    rural_accounts = generate_accounts("02", 200, 2, today=today)
    biller = RestBiller(damascus_accounts, TOKEN)
    biller_port = await biller.start()
    cfg_path = workdir / "billhub.toml"
    text = CONFIG.format(damascus=DAMASCUS, rural=RURAL, port=biller_port, token=TOKEN)
    if database:
        text += DATABASE_BILLER.format(aleppo=ALEPPO)
    cfg_path.write_text(text, "utf-8")
    config: Config = load_config(cfg_path)
    hub = build_hub(config)
    port = await hub.start()
    rows: list[Row] = []
    ctx = client_context(certs / "switch.crt", certs / "switch.key", certs / "hub-ca.crt")
    link = await SwitchLink.connect("127.0.0.1", port, ctx, hub.codec)
    rrn = iter(range(1, 1000))
    mmdd = today.strftime("%m%d")

    def next_rrn() -> str:
        return f"{next(rrn):012d}"

    async def step(
        label: str, req: Message, detail: str | Callable[[Message], str] = ""
    ) -> Message:
        resp = await link.request(req)
        code = resp.fields.get(39, "--")
        rows.append(
            Row(label, req.mti, resp.mti, code, detail(resp) if callable(detail) else detail)
        )
        return resp

    def due(resp: Message) -> str:
        if resp.fields.get(39) != "00":
            return ""
        tags = parse_tlv(resp.fields.get(48, ""))
        n = len(parse_bills(tags.get("BL", "")))
        return f"{tags.get('CN', '')}: {n} bill(s), {_syp(int(resp.fields[4]))} due"

    def receipt(resp: Message) -> str:
        tags = parse_tlv(resp.fields.get(48, ""))
        return f"receipt {tags['RN']}, approval {resp.fields.get(38)}" if "RN" in tags else ""

    a, b, c, t = _pick(damascus_accounts, 4)
    (r,) = _pick(rural_accounts, 1)
    await step("sign-on", link.link.network_request("001"))
    await step("inquiry, Damascus (REST)", m.inquiry(DAMASCUS, a.account, next_rrn()), due)
    pay = m.payment(DAMASCUS, a.account, next_rrn(), a.total_due, mmdd)
    first = await step(f"payment {_syp(a.total_due)}", pay, receipt)
    again = await step("repeat of that payment (0201)", m.repeat(pay), receipt)
    same = (again.fields.get(38), again.fields.get(48)) == (
        first.fields.get(38),
        first.fields.get(48),
    )
    rows[-1].detail += "  (same answer)" if same else "  (DIFFERENT ANSWER)"
    await step("inquiry, Rural Damascus (batch)", m.inquiry(RURAL, r.account, next_rrn()), due)
    await step(
        f"payment {_syp(r.total_due)}",
        m.payment(RURAL, r.account, next_rrn(), r.total_due, mmdd),
        receipt,
    )
    if database:
        (d,) = _pick(_aleppo(today), 1)
        await step("inquiry, Aleppo (database)", m.inquiry(ALEPPO, d.account, next_rrn()), due)
        pay_d = m.payment(ALEPPO, d.account, next_rrn(), d.total_due, mmdd)
        await step(f"payment {_syp(d.total_due)}", pay_d, receipt)
        await step("repeat of that payment (0200)", m.repeat(pay_d, "0200"), receipt)
        await step("reversal of that payment (0420)", m.reversal(pay_d))
        database_row = rows[-1]
    pay_b = m.payment(DAMASCUS, b.account, next_rrn(), b.total_due, mmdd)
    await step(f"payment {_syp(b.total_due)}", pay_b, receipt)
    await step("reversal of that payment (0420)", m.reversal(pay_b))
    reversal_row = rows[-1]
    await step(
        "amount too high", m.payment(DAMASCUS, c.account, next_rrn(), c.total_due + 100, mmdd)
    )
    biller.set_faults(Faults(post_delay_ms=1500))
    pay_t = m.payment(DAMASCUS, t.account, next_rrn(), t.total_due, mmdd)
    await step("payment, biller times out", pay_t, "posted after the 1 s budget")
    biller.set_faults(Faults())
    await hub.resolver.run_until_idle(20)
    rec = await hub.journal.get_payment_by_id(
        next(p.payment_id for p in await hub.stores.reader.payments() if p.response_code == "91")
    )
    held = {e["payment_id"]: e["status"] for e in biller.ledger_snapshot()}
    reversed_rec = await hub.journal.get_payment(payment_key(pay_b))
    if reversed_rec is not None:
        reversal_row.detail = f"the biller now says '{held.get(reversed_rec.payment_id)}'"
    rows.append(
        Row(
            "resolver: the timed-out payment",
            "",
            "",
            "",
            f"{rec.resolution.value if rec and rec.resolution else '?'}; biller now says "
            f"'{held.get(rec.payment_id, 'unknown') if rec else '?'}'",
        )
    )
    if database:
        rec_d = await hub.journal.get_payment(payment_key(pay_d))
        if rec_d is not None:
            status = await hub.billers[ALEPPO].payment_status(rec_d.payment_id)
            database_row.detail = f"the database's payments table now says '{status.status}'"
    tomorrow = (today + timedelta(days=1)).strftime("%m%d")
    await step(f"cutover to {tomorrow}", link.link.network_request("201", tomorrow))
    await step("sign-off", link.link.network_request("002"))
    await link.close()
    await hub.stop(2.0)
    web = build_web(config)
    web_port = await web.start()
    try:
        web_url = f"http://127.0.0.1:{web_port}"
        filed = await _citizens(
            web_url,
            paid=a,
            damascus=damascus_accounts,
            rural=rural_accounts,
            rural_paid=r,
            first_payment=first,
        )
        staff = [
            (name, company, role, await users_add(config, name, role, company))
            for name, company, role in (
                (f"clerk-{DAMASCUS}", DAMASCUS, "clerk"),
                (f"clerk-{RURAL}", RURAL, "clerk"),
                ("ministry", None, "ministry"),
            )
        ]
    except BaseException:
        await web.stop()
        await biller.stop()
        raise

    payments_file = workdir / "rural-damascus" / "outbox" / f"payments-{RURAL}-{today:%Y%m%d}.csv"
    print(f"billhub demo: hub on 127.0.0.1:{port}, switch over mutual TLS, journal on SQLite\n")
    print(f"  {'step':<34} {'msg':<5} {'ans':<5} {'code':<4} detail")
    for row in rows:
        print(f"  {row.step:<34} {row.request:<5} {row.answer:<5} {row.code:<4} {row.detail}")
    trailer = payments_file.read_text("utf-8").splitlines()[-1] if payments_file.exists() else "-"
    print(f"\n  journal (SQLite):      {workdir / 'journal.db'}")
    print(f"  payments file:         {payments_file}")
    print(f"  its trailer:           {trailer}")
    print(f"  hub log (JSON lines):  {log_path}")
    print("  codes: 00 approved, 13 invalid amount, 91 biller unavailable (a decline: the")
    print("  resolver makes sure the biller keeps nothing); every code: specs/response-codes.md")
    print(f"\n  citizen web service:   {web_url}/   (desk: {web_url}/desk, API: {web_url}/api/v1)")
    print(f"  its metrics:           http://127.0.0.1:{web.admin_port}/metrics")
    print(f"  one-time codes (dev):  {config.web.code_file}")
    print("  requests filed by the simulated citizens (ticket, phone 0944123456 to track):")
    for ticket, kind, state in filed:
        print(f"    {ticket}  {kind:<22} {state}")
    print("  staff (the desk's users):")
    for name, company, role, password in staff:
        print(f"    {name:<16} {role:<9} {company or 'all companies':<14} password {password}")
    ok = same and rows[-2].code == "00" and payments_file.exists() and len(filed) == 5
    try:
        if sys.stdin.isatty():
            print("\n  the web service runs until Ctrl-C")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
    finally:
        await web.stop()
        await biller.stop()
    return 0 if ok else 1


async def _citizens(
    url: str,
    *,
    paid: DemoAccount,
    damascus: list[DemoAccount],
    rural: list[DemoAccount],
    rural_paid: DemoAccount,
    first_payment: Message,
) -> list[tuple[str, str, str]]:
    """A few requests of each type, filed through the JSON API as the mobile app would."""
    rrn = first_payment.fields.get(37, "").strip()
    today = datetime.now(UTC).date().isoformat()
    inst = next(x for x in _pick(damascus, 12) if len(x.bills) >= 2 and x is not paid)
    corr = next(x for x in _pick(rural, 6) if x is not rural_paid)
    bodies: list[tuple[str, dict[str, object]]] = [
        (
            "complaints",
            {
                "kind": "transaction",
                "company": DAMASCUS,
                "account": paid.account,
                "phone": PHONE,
                "reference": rrn,
                "paid_on": today,
                "disposition": "paid_still_due",
                "description": STILL_DUE,
            },
        ),
        (
            "complaints",
            {
                "kind": "service",
                "company": DAMASCUS,
                "account": inst.account,
                "phone": PHONE,
                "category": "supply",
                "description": OUTAGES,
            },
        ),
        (
            "complaints",
            {
                "kind": "service",
                "company": RURAL,
                "account": corr.account,
                "phone": PHONE,
                "category": "meter",
                "description": "العداد لا يعمل",
            },
        ),
        (
            "installments",
            {
                "company": DAMASCUS,
                "account": inst.account,
                "phone": PHONE,
                "bill_ids": [b.bill_id for b in inst.bills[:2]],
                "installments": 4,
                "reason": "دخل محدود هذا الشتاء",
            },
        ),
        (
            "corrections",
            {
                "company": RURAL,
                "account": corr.account,
                "phone": PHONE,
                "bill_id": corr.bills[0].bill_id,
                "reason": "estimated_reading",
                "reading": "4512",
                "description": "القراءة تقديرية",
            },
        ),
    ]
    out: list[tuple[str, str, str]] = []
    async with aiohttp.ClientSession() as session:
        for path, body in bodies:
            async with session.post(f"{url}/api/v1/{path}", json=body) as resp:
                answer = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"demo request {path} refused: {answer}")
                out.append((answer["ticket"], answer["type"], answer["status"]))
    return out
