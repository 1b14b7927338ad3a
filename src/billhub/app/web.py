"""``billhub web``: the citizen web service, its own process beside ``billhub serve``.

It shares the hub's configuration file: the journal database (the requests' tables
live there, the payments are read from there) and the billers, reached through the
same connectors as the switch path (REST directly; batch billers through the journal's
bills store, as the hub answers from it). Uvicorn serves the
app and, on the admin port, the metrics. A background loop escalates overdue
requests and refreshes the request gauges every ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import make_asgi_app

from billhub.app.runtime import utc_today
from billhub.config import BillerConfig, Config
from billhub.connectors.registry import ConnectorContext, build_biller
from billhub.connectors.rest_decisions import RestDecisions
from billhub.errors import BillerUnavailable, ConfigError, JournalError
from billhub.journal.factory import JournalSet, build_journal, build_request_store
from billhub.observability.logs import flush as flush_logs
from billhub.observability.logs import get_logger
from billhub.observability.webmetrics import WebMetrics
from billhub.pipeline.model import AccountBills, StatusAnswer
from billhub.pipeline.ports import Biller
from billhub.requests.model import ROLES, RequestType
from billhub.requests.ports import AuditEntry, CodeSender, Conflict, RequestStore, StaffUser
from billhub.requests.turnaround import TurnaroundPolicy
from billhub.settlement.calendar import WorkingCalendar
from billhub.web.asgi import create_app
from billhub.web.auth import hash_password, new_password
from billhub.web.ratelimit import RateLimiter
from billhub.web.senders import FileCodeSender, HttpSmsSender
from billhub.web.services import Company, Limits, Services
from billhub.web.uploads import UploadStore

log = get_logger("billhub.web")


def policy_of(config: Config) -> TurnaroundPolicy:
    r = config.requests
    base = TurnaroundPolicy()
    return TurnaroundPolicy(
        calendar=WorkingCalendar(holidays=frozenset(r.holidays), weekend=frozenset(r.weekend)),
        defaults={**base.defaults, **r.turnaround_days},
        per_company=r.companies,
    )


def sender_of(config: Config) -> CodeSender:
    w = config.web
    if w.sms_url is not None and w.sms_token is not None:
        return HttpSmsSender(w.sms_url, w.sms_token)
    assert w.code_file is not None
    return FileCodeSender(w.code_file)


@dataclass
class WebService:
    config: Config
    store: RequestStore
    services: Services
    metrics: WebMetrics
    billers: list[Any]
    journal_bills: JournalBills
    refresh_s: float = 30.0
    servers: list[uvicorn.Server] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    port: int = 0
    admin_port: int = 0

    async def start(self) -> int:
        await self.store.open()
        app = create_app(
            self.services,
            secure_cookies=self.config.web.secure_cookies,
            max_upload=self.config.web.max_upload_bytes,
            observe=self.metrics.request,
        )
        w = self.config.web
        main = uvicorn.Server(
            uvicorn.Config(
                app,
                host=w.host,
                port=w.port,
                log_config=None,
                access_log=False,
                server_header=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
        )
        admin = uvicorn.Server(
            uvicorn.Config(
                make_asgi_app(self.metrics.registry),
                host=w.admin_host,
                port=w.admin_port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        for server, key, host, port in (
            (main, "web.port", w.host, w.port),
            (admin, "web.admin_port", w.admin_host, w.admin_port),
        ):
            try:
                sock = _listen(key, host, port)
            except ConfigError:
                await self.stop()
                raise
            self.servers.append(server)
            self.tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
            while not server.started:
                if self.tasks[-1].done():
                    self.tasks[-1].result()
                await asyncio.sleep(0.01)
        self.port = _bound(main)
        self.admin_port = _bound(admin)
        self.tasks.append(asyncio.create_task(self._refresh()))
        return self.port

    async def refresh_once(self) -> None:
        await self.services.process_handovers()
        n = await self.services.escalate_due()
        if n:
            self.metrics.escalations.inc(n)
            log.warning("requests_escalated", count=n)
        open_, overdue = await self.services.open_counts()
        self.metrics.set_counts(
            open_, overdue, list(self.services.companies), [t.value for t in RequestType]
        )

    async def _refresh(self) -> None:
        while True:
            try:
                await self.refresh_once()
            except Exception as exc:  # reported; the next round tries again
                log.error("requests_refresh_failed", error=type(exc).__name__)
            await asyncio.sleep(self.refresh_s)

    async def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True
        for t in self.tasks[len(self.servers) :]:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for b in self.billers:
            with contextlib.suppress(Exception):
                await b.close()
        await self.journal_bills.close()
        await self.store.close()


def _listen(key: str, host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one line naming the key
    (uvicorn, binding it itself, would exit the process from inside the event loop)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ConfigError(key, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _bound(server: uvicorn.Server) -> int:
    for s in server.servers:
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("server has no socket")


class JournalBills:
    """The journal's bills store, opened read-only on first use and kept open.

    The web service does not create the hub's journal: until the hub has, a batch
    biller's inquiry is "try again later", and the next inquiry tries again.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._set: JournalSet | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> JournalSet:
        async with self._lock:
            if self._set is None:
                js = build_journal(self._config.journal, read_only=True)
                try:
                    await js.open()
                except JournalError as exc:
                    raise BillerUnavailable(f"the journal cannot be read yet: {exc}") from None
                self._set = js
            return self._set

    async def close(self) -> None:
        if self._set is not None:
            await self._set.close()
            self._set = None


class DeferredBiller:
    """A batch biller's connector, built and started from the journal's bills store on
    the first call (see :class:`JournalBills`); only the read questions are asked."""

    def __init__(self, b: BillerConfig, bills: JournalBills, today: Any, state_dir: Path) -> None:
        self.code = b.code
        self._config = b
        self._bills = bills
        self._today = today
        self._state_dir = state_dir
        self._biller: Biller | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> Biller:
        async with self._lock:
            if self._biller is None:
                js = await self._bills.get()
                ctx = ConnectorContext(state_dir=self._state_dir, today=self._today, bills=js.bills)
                biller = build_biller(self._config, ctx)
                await biller.start(js.journal)
                self._biller = biller
            return self._biller

    async def open_bills(self, account: str) -> AccountBills:
        return await (await self._ready()).open_bills(account)

    async def payment_status(self, payment_id: str) -> StatusAnswer:
        return await (await self._ready()).payment_status(payment_id)

    async def close(self) -> None:
        if self._biller is not None:
            await self._biller.close()


def build_web(config: Config, *, today: Any = utc_today) -> WebService:
    metrics = WebMetrics()
    state_dir = config.journal.path.parent if config.journal.path else Path.cwd()
    ctx = ConnectorContext(state_dir=state_dir, today=today)
    journal_bills = JournalBills(config)
    companies: list[Company] = []
    billers: list[Any] = []
    for b in config.billers:
        biller: Any = None
        if b.kind in ("rest", "database"):  # online: asked as the switch path asks them
            biller = build_biller(b, ctx)
        elif b.kind == "batch":
            biller = DeferredBiller(b, journal_bills, today, state_dir)
        if biller is not None:
            billers.append(biller)
        companies.append(Company(b.code, b.name, b.budget_s, biller))
    w = config.web
    clock = time.monotonic
    store = build_request_store(config.journal)
    assert w.uploads is not None and w.exports is not None
    services = Services(
        store=store,
        companies=companies,
        policy=policy_of(config),
        sender=sender_of(config),
        uploads=UploadStore(w.uploads),
        exports=w.exports,
        limits=Limits(
            client=RateLimiter(w.client_per_minute, 60.0, clock),
            account=RateLimiter(w.account_per_minute, 60.0, clock),
            login=RateLimiter(w.staff_login_per_minute, 60.0, clock),
        ),
        max_upload=w.max_upload_bytes,
        session_hours=w.session_hours,
        observe_biller=metrics.biller_call,
        sinks={
            b.code: RestDecisions(b.code, b.rest, timeout_s=b.budget_s)
            for b in config.billers
            if b.code in config.requests.rest_handover and b.rest is not None
        },
    )
    return WebService(config, store, services, metrics, billers, journal_bills)


async def run_web(config: Config) -> None:
    """Run until SIGTERM or SIGINT."""
    service = build_web(config)
    port = await service.start()
    log.info("web_listening", host=config.web.host, port=port, admin_port=service.admin_port)
    flush_logs()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    flush_logs()


async def users_add(
    config: Config, username: str, role: str, company: str | None, password: str | None = None
) -> str:
    """Add a staff account; returns its password (made up unless given)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,39}", username):
        raise ConfigError("username", "2-40 of a-z 0-9 . _ - (starting with a letter or digit)")
    if role not in ROLES:
        raise ConfigError("role", f"must be one of {', '.join(ROLES)}")
    if role == "ministry":
        if company is not None:
            raise ConfigError("company", "a ministry account belongs to no company")
    elif company is None or config.biller(company) is None:
        raise ConfigError("company", "must be the code of a configured biller")
    secret = password or new_password()
    store = build_request_store(config.journal)
    await store.open()
    try:
        try:
            await store.add_staff(StaffUser(username, company, role, hash_password(secret)))
        except Conflict:
            raise ConfigError("username", f"{username} already exists") from None
        await store.record(
            AuditEntry(datetime.now(UTC), "cli", company, "staff_added", None, f"{username} {role}")
        )
    finally:
        await store.close()
    return secret


async def users_disable(config: Config, username: str, disabled: bool = True) -> None:
    store = build_request_store(config.journal)
    await store.open()
    try:
        user = await store.staff(username)
        if user is None or not await store.set_staff_disabled(username, disabled):
            raise ConfigError("username", f"no staff account {username}")
        action = "staff_disabled" if disabled else "staff_enabled"
        await store.record(
            AuditEntry(datetime.now(UTC), "cli", user.company, action, None, username)
        )
    finally:
        await store.close()


async def users_list(config: Config) -> list[StaffUser]:
    store = build_request_store(config.journal)
    await store.open()
    try:
        return await store.all_staff()
    finally:
        await store.close()
