"""Build and run a hub from a :class:`~billhub.config.Config`: the wiring, in one place.

Kept apart from :mod:`billhub.cli` so that the demo, the tests and the
benchmarks start exactly the hub that ``billhub serve`` starts.
"""

from __future__ import annotations

import asyncio
import gc
import random
import secrets
import signal
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from billhub.config import BillerConfig, Config
from billhub.connectors.batch import BatchConnector, LoadResult
from billhub.connectors.rest import RestConnector
from billhub.errors import ConfigError
from billhub.iso8583.codec import Codec
from billhub.iso8583.spec import load_spec
from billhub.journal.sqlite import SqliteJournal, SqliteSettlementStore
from billhub.link.core import Timers
from billhub.link.observer import LinkObserver
from billhub.observability.admin import AdminServer
from billhub.observability.logs import LogObserver, get_logger
from billhub.observability.logs import flush as flush_logs
from billhub.observability.watch import BillerInfo
from billhub.observability.wiring import Observability, build_observability
from billhub.pipeline.ports import Biller, RequestHandler
from billhub.pipeline.resolver import Resolver
from billhub.pipeline.routes import BillerRoute
from billhub.pipeline.service import Pipeline
from billhub.pipeline.unrecorded import UnrecordedOutcomes
from billhub.settlement.calendar import BusinessDay, resolve_mmdd
from billhub.settlement.dayclose import DayCloser
from billhub.settlement.dispatch import HubDispatcher
from billhub.settlement.reconcile import Reconciler
from billhub.transport.server import HubServer, ServerLimits
from billhub.transport.tls import REFUSAL_REASONS, AllowList, server_context

_ALNUM = string.ascii_uppercase + string.digits


def utc_today() -> date:
    return datetime.now(UTC).date()


class SystemClock:
    """The real clock: UTC wall time for records, the monotonic clock for budgets."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class RandomIds:
    """Payment ids unique forever, and approval codes, at the cost of one counter step.

    A payment id is the process's start time and 48 random bits (drawn once),
    then a counter: unique across restarts and instances without a system call
    per payment. Approval codes come from a per-process random stream seeded
    from the OS; they identify, they do not protect.
    """

    def __init__(self) -> None:
        self._prefix = f"P{datetime.now(UTC):%y%m%d%H%M%S}{secrets.token_hex(6)}"
        self._n = 0
        self._codes = random.Random(secrets.randbits(128))

    def payment_id(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:x}"

    def approval_code(self) -> str:
        return "".join(self._codes.choices(_ALNUM, k=6))


def settlement_date(mmdd: str) -> date | None:
    """DE 15's date, its year nearest today (LINK-SPEC 3); None if no nearby year has it."""
    try:
        return resolve_mmdd(mmdd, utc_today())
    except ValueError:
        return None


def _connector(b: BillerConfig, state_dir: Path, auth_failed: Any) -> Biller:
    if b.kind == "rest" and b.rest is not None:
        return RestConnector(
            b.code,
            b.rest,
            max_concurrency=b.max_concurrency,
            call_timeout=b.budget_s,
            on_auth_failure=auth_failed,
        )
    if b.kind == "batch" and b.batch is not None:
        return BatchConnector(b.code, b.batch, state_dir, today=utc_today)
    raise ConfigError(f"billers[{b.code}].kind", f"the {b.kind} connector is not available yet")


@dataclass
class Hub:
    """A hub's parts, built but not yet listening."""

    config: Config
    codec: Codec
    server: HubServer
    journal: SqliteJournal | None = None
    pipeline: Pipeline | None = None
    resolver: Resolver | None = None
    day: BusinessDay = field(default_factory=BusinessDay)
    billers: dict[str, Biller] = field(default_factory=dict)
    admin: AdminServer | None = None
    admin_port: int | None = None
    closer: DayCloser | None = None
    obs: Observability | None = None  # metrics, billers' health (issue 5)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self) -> int:
        """Open the journal, recover, start billers and the resolver, then listen.

        Returns the link port. Payments left half-way by a crash become uncertain
        and go to the resolver before the first new request is read.
        """
        log = get_logger("billhub")
        if self.journal is not None:
            await self.journal.open()
            clock = SystemClock()
            now = clock.now()
            quiet = timedelta(seconds=self.config.resolver.quiet_period_s)
            recovered = await self.journal.recover(now, now + quiet)
            if recovered:
                log.warning("recovered_uncertain_payments", count=len(recovered))
            for biller in self.billers.values():
                if isinstance(biller, BatchConnector):
                    await biller.start(self.journal)
            await self.load_bills_files()
            _settle_heap()
            if self.closer is not None:
                last = await self.closer.restore()
                if last is not None:
                    log.info("business_day", current=last.new_date.isoformat(), state=last.state)
        if self.resolver is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self.resolver.run()))
        if any(isinstance(b, BatchConnector) for b in self.billers.values()):
            self._tasks.append(asyncio.get_running_loop().create_task(self._poll_inboxes()))
        port = await self.server.start(self.config.link.host, self.config.link.port)
        if self.config.admin.enabled and self.obs is not None:
            self.admin = self.obs.admin_server(
                links=lambda: self.server.links,
                day_totals=(
                    SqliteSettlementStore(self.journal).day_totals if self.journal else None
                ),
                backlog=self.resolver.backlog if self.resolver is not None else None,
                business_day=lambda: self.day.current or utc_today(),
            )
        elif self.config.admin.enabled:
            self.admin = AdminServer(self.readiness)
        if self.admin is not None:
            self.admin_port = await self.admin.start(self.config.admin.host, self.config.admin.port)
        return port

    async def load_bills_files(self) -> list[LoadResult]:
        """Load whatever bills files wait in the batch billers' inboxes."""
        log = get_logger("billhub.batch")
        results: list[LoadResult] = []
        for biller in self.billers.values():
            if isinstance(biller, BatchConnector):
                for r in await biller.load_inbox():
                    log.info("bills_file", biller=biller.code, **_fields(r))
                    if self.obs is not None:
                        self.obs.bills_file(biller.code, r)
                    results.append(r)
        return results

    async def _poll_inboxes(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load_bills_files()
            except Exception as exc:  # keep polling; the reason is logged
                get_logger("billhub.batch").error("bills_file_poll_failed", error=str(exc))

    async def write_payments_files(self, closed: list[date]) -> list[tuple[str, date, str]]:
        """At cutover: each batch biller's payments file for each closed date."""
        out: list[tuple[str, date, str]] = []
        if self.journal is None:
            return out
        for biller in self.billers.values():
            if isinstance(biller, BatchConnector):
                for d in closed:
                    path = await biller.write_payments_file(d, self.journal)
                    get_logger("billhub.batch").info(
                        "payments_file", biller=biller.code, date=d.isoformat(), path=str(path)
                    )
                    out.append((biller.code, d, str(path)))
        return out

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready when at least one link is signed on: a hub no switch reaches earns nothing."""
        links = len(self.server.links)
        signed_on = self.server.signed_on_links
        problems = [] if signed_on else ["no signed-on link from the switch"]
        return not problems, {"links": links, "signed_on": signed_on, "problems": problems}

    async def stop(self, grace: float) -> None:
        await self.server.shutdown(grace)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.resolver is not None:
            await self.resolver.stop()
        for biller in self.billers.values():
            await biller.close()
        if self.journal is not None:
            await self.journal.close()
        if self.admin is not None:
            await self.admin.stop()


def _settle_heap() -> None:
    """Move what start-up loaded (bills, indexes) out of the collector's sight.

    Hundreds of thousands of long-lived bill objects make every full collection
    walk them all, which showed as pauses of up to 0.8 s holding every answer in
    flight. Frozen objects are never collected, which is right for a store that
    lives as long as the process.
    """
    gc.collect()
    gc.freeze()


def _fields(r: LoadResult) -> dict[str, Any]:
    """A bills-file load result as log fields (names and counts, never row data)."""
    return {
        "file": r.name,
        "outcome": r.outcome.value,
        "rows": r.rows,
        "conflicts": list(r.conflicts),
        "row": r.row,
        "reason": r.reason,
    }


def build_hub(
    config: Config,
    *,
    observer: LinkObserver | None = None,
    financial: RequestHandler | None = None,
) -> Hub:
    """Everything ``billhub serve`` runs, from a validated configuration."""
    spec = load_spec(config.link.spec_file)
    codec = Codec(spec)
    day = BusinessDay()
    journal: SqliteJournal | None = None
    pipeline: Pipeline | None = None
    resolver: Resolver | None = None
    billers: dict[str, Biller] = {}
    log = get_logger("billhub")
    obs = build_observability(
        observer or LogObserver(),
        billers=[BillerInfo(b.code, b.name, b.kind) for b in config.billers],
        rules=spec.rules,
        refusal_reasons=REFUSAL_REASONS,
        metrics=config.admin.enabled and config.admin.metrics,
        journal=str(config.journal.path or "postgresql"),
    )

    def auth_failed(code: str) -> None:
        log.error("biller_unauthorized", biller=code, hint="check the biller's token")
        obs.health.unauthorized(code)

    if financial is None:
        if config.journal.kind != "sqlite" or config.journal.path is None:
            raise ConfigError("journal.kind", "the PostgreSQL journal is not available yet")
        journal = SqliteJournal(config.journal.path, **obs.journal_hooks())
        state_dir = config.journal.path.parent
        routes: dict[str, BillerRoute] = {}
        for b in config.billers:
            conn = _connector(b, state_dir, auth_failed)
            billers[b.code] = conn
            routes[b.code] = BillerRoute(b.code, b.name, conn, b.budget_s, b.max_concurrency)
        clock = SystemClock()
        rc = config.resolver
        unrecorded = UnrecordedOutcomes()
        resolver = Resolver(
            journal,
            billers,
            clock,
            call_timeout=rc.call_timeout_s,
            backoff_base=rc.backoff_base_s,
            backoff_max=rc.backoff_max_s,
            poll_interval=rc.poll_interval_s,
            observer=obs.pipeline_observer,
            unrecorded=unrecorded,
        )
        pipeline = Pipeline(
            spec.rules,
            journal,
            routes,
            clock,
            RandomIds(),
            settlement_date=settlement_date,
            business_day=lambda: day.current,
            is_closed=lambda d: day.current is not None and d < day.current,
            wake_resolver=resolver.wake,
            quiet_period=rc.quiet_period_s,
            observer=obs.pipeline_observer,
            unrecorded=unrecorded,
        )
        financial = pipeline
    hub_ref: list[Hub] = []
    closer: DayCloser | None = None
    reconciler: Reconciler | None = None
    if journal is not None and pipeline is not None:
        store = SqliteSettlementStore(journal)
        cutover_lock = asyncio.Lock()

        async def write_files(closed: list[date]) -> list[tuple[str, date, str]]:
            return await hub_ref[0].write_payments_files(closed)

        closer = DayCloser(
            store,
            day,
            drained=pipeline.inflight.drained,
            write_files=write_files,
            exclusive=lambda: cutover_lock,
            now=SystemClock().now,
            today=utc_today,
        )
        reconciler = Reconciler(
            spec.rules,
            store,
            billers=frozenset(billers),
            day=day,
            settlement_date=settlement_date,
            now=SystemClock().now,
            on_finding=obs.reconciliation_finding,
        )
    handler = HubDispatcher(
        spec.rules, financial, day, utc_today, closer=closer, reconciler=reconciler
    )
    lc = config.link
    server = HubServer(
        codec,
        handler,
        server_context(
            config.tls.cert_file,
            config.tls.key_file,
            config.tls.client_ca_file,
            min_version=config.tls.min_version,
        ),
        AllowList(config.tls.allowed_subjects),
        obs.link_observer,
        timers=Timers(
            read_timeout=lc.read_timeout_s,
            idle_interval=lc.idle_interval_s,
            echo_timeout=lc.echo_timeout_s,
            echo_max_missed=lc.echo_max_missed,
        ),
        limits=ServerLimits(
            max_links=lc.max_links,
            max_handshakes=lc.max_handshakes,
            handshake_timeout=lc.handshake_timeout_s,
            max_in_flight=lc.max_in_flight,
        ),
    )
    hub = Hub(config, codec, server, journal, pipeline, resolver, day, billers, closer=closer)
    hub.obs = obs
    hub_ref.append(hub)
    return hub


async def serve(config: Config, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT; a second signal during shutdown forces it."""
    log = get_logger("billhub")
    hub = build_hub(config)
    port = await hub.start()
    log.info(
        "hub_listening",
        host=config.link.host,
        port=port,
        admin_port=hub.admin_port,
        spec=hub.codec.spec.name,
        billers=sorted(hub.billers),
    )
    flush_logs()  # operators and scripts wait for this line
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    async def flush_periodically() -> None:
        while True:
            await asyncio.sleep(0.2)
            flush_logs()

    flusher = loop.create_task(flush_periodically())

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        log.info("signal", signal=signal.Signals(signum).name, count=signals)
        if signals == 1:
            stop.set()
        else:
            hub.server.abort()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting_down", grace_s=config.link.shutdown_grace_s, links=len(hub.server.links))
    await hub.stop(config.link.shutdown_grace_s)
    flusher.cancel()
    log.info("stopped")
    flush_logs()
