"""A web service under test: a real demo REST biller, a real uvicorn server on a free
port, the journal database on SQLite (or PostgreSQL), and an aiohttp client that keeps
cookies like a browser. Only the clock of the turnaround is the real one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from billhub.app.web import WebService, build_web, users_add
from billhub.config import Config, parse_config
from billhub.simulator.demo_data import DemoAccount, generate_accounts
from billhub.simulator.rest_biller import RestBiller

TOKEN = "tok-web-test"
COMPANY_A, COMPANY_B, BATCH = "100001", "100003", "100002"
TODAY = datetime.now(UTC).date()
ACCOUNTS_A = generate_accounts("01", 20, 11, today=TODAY)
ACCOUNTS_B = generate_accounts("03", 20, 13, today=TODAY)

CONFIG = """\
[link]
host = "127.0.0.1"
port = 0
[tls]
cert_file = "{certs}/hub.crt"
key_file = "{certs}/hub.key"
client_ca_file = "{certs}/switch-ca.crt"
allowed_subjects = ["switch-1"]
[journal]
{journal}
[web]
port = 0
admin_port = 0
secure_cookies = false
max_upload_bytes = 65536
client_per_minute = {client_limit}
account_per_minute = {account_limit}
staff_login_per_minute = 20
[requests]
holidays = ["2026-12-25"]
[requests.turnaround_days]
service_complaint = 15
[requests.companies."{a}"]
handover = "rest"
[requests.companies."{b}".turnaround_days]
service_complaint = 5
[[billers]]
code = "{a}"
name = "كهرباء دمشق"
kind = "rest"
budget_s = 1.0
rest = {{ base_url = "{url_a}", token = "{token}" }}
[[billers]]
code = "{b}"
name = "كهرباء حمص"
kind = "rest"
budget_s = 1.0
rest = {{ base_url = "{url_b}", token = "{token}" }}
[[billers]]
code = "{batch}"
name = "كهرباء ريف دمشق"
kind = "batch"
batch = {{ inbox = "inbox", outbox = "outbox" }}
"""


def open_account(accounts: list[DemoAccount], skip: int = 0) -> DemoAccount:
    ok = [
        a for a in accounts if a.status == "active" and len(a.bills) >= 2 and not a.partial_allowed
    ]
    return ok[skip]


@dataclass
class Web:
    config: Config
    service: WebService
    url: str
    biller_a: RestBiller
    biller_b: RestBiller
    dir: Path
    passwords: dict[str, str]

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.service.admin_port}"

    def codes(self) -> list[str]:
        path = self.config.web.code_file
        assert path is not None
        return path.read_text("utf-8").splitlines() if path.exists() else []

    def last_code(self) -> str:
        m = re.search(r"billhub: (\d{6})", self.codes()[-1])
        assert m
        return m.group(1)


def journal_lines(tmp: Path, dsn: str | None) -> str:
    return f'kind = "postgresql"\ndsn = "{dsn}"' if dsn else f'path = "{tmp}/journal.db"'


@asynccontextmanager
async def running_web(
    tmp: Path,
    pki_dir: Path,
    *,
    dsn: str | None = None,
    client_limit: int = 1000,
    account_limit: int = 1000,
    more_billers: str = "",
) -> AsyncIterator[Web]:
    a = RestBiller(ACCOUNTS_A, TOKEN)
    b = RestBiller(ACCOUNTS_B, TOKEN, receipt_prefix="HM")
    await a.start()
    await b.start()
    text = CONFIG.format(
        certs=pki_dir,
        journal=journal_lines(tmp, dsn),
        a=COMPANY_A,
        b=COMPANY_B,
        batch=BATCH,
        url_a=a.url,
        url_b=b.url,
        token=TOKEN,
        client_limit=client_limit,
        account_limit=account_limit,
    )
    config = parse_config(text + more_billers, base_dir=tmp, env={})
    passwords = {
        "clerk-a": await users_add(config, "clerk-a", "clerk", COMPANY_A),
        "super-a": await users_add(config, "super-a", "supervisor", COMPANY_A),
        "clerk-b": await users_add(config, "clerk-b", "clerk", COMPANY_B),
        "ministry": await users_add(config, "ministry", "ministry", None),
    }
    service = build_web(config)
    port = await service.start()
    try:
        yield Web(config, service, f"http://127.0.0.1:{port}", a, b, tmp, passwords)
    finally:
        await service.stop()
        await a.stop()
        await b.stop()


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


async def csrf_of(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as r:
        m = CSRF_RE.search(await r.text())
        assert m, f"no csrf in {url}"
        return m.group(1)


async def login(session: aiohttp.ClientSession, web: Web, user: str) -> str:
    token = await csrf_of(session, f"{web.url}/desk/login")
    async with session.post(
        f"{web.url}/desk/login",
        data={"csrf": token, "username": user, "password": web.passwords[user]},
        allow_redirects=False,
    ) as r:
        assert r.status == 303, await r.text()
    return await csrf_of(session, f"{web.url}/desk")


async def api(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, Any]:
    async with session.request(method, url, **kw) as r:
        body = await r.json(content_type=None)
        return r.status, body, r.headers
