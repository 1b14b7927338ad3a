"""``billhub serve``: build and run a hub from a :class:`~billhub.config.Config`.

The wiring, in one place, so that the demo, the tests and the benchmarks start
exactly the hub that ``billhub serve`` starts. Every part is reached through
its port: the journal from :func:`~billhub.journal.factory.build_journal`, the
billers from :func:`~billhub.connectors.registry.build_biller`.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from billhub.app.dispatch import HubDispatcher
from billhub.app.runtime import RandomIds, SystemClock, utc_today
from billhub.config import Config
from billhub.connectors.registry import FILE_KINDS, ConnectorContext, build_biller
from billhub.errors import ConfigError, JournalError
from billhub.iso8583.codec import Codec
from billhub.iso8583.spec import load_spec
from billhub.journal.factory import JournalSet, build_journal, describe
from billhub.link.core import Timers
from billhub.link.facts import LinkSubscriber
from billhub.observability.admin import AdminServer
from billhub.observability.logs import LogObserver, get_logger
from billhub.observability.logs import flush as flush_logs
from billhub.observability.watch import BillerInfo
from billhub.observability.wiring import Observability, build_observability
from billhub.pipeline.model import DayFile, InboxFile
from billhub.pipeline.ports import Biller, Journal
from billhub.pipeline.recovery import recover_unfinished
from billhub.pipeline.resolver import Resolver
from billhub.pipeline.routes import BillerRoute
from billhub.pipeline.service import Pipeline
from billhub.pipeline.unrecorded import UnrecordedOutcomes
from billhub.settlement.calendar import BusinessDay
from billhub.settlement.dayclose import DayCloser
from billhub.settlement.reconcile import Reconciler
from billhub.transport.eventloop import loop_name
from billhub.transport.server import HubServer, ServerLimits
from billhub.transport.tls import REFUSAL_REASONS, AllowList, server_context

#: How often billers are polled for what their companies dropped (bills files).
POLL_INTERVAL_S = 5.0


@dataclass
class Hub:
    """A hub's parts, built but not yet listening."""

    config: Config
    codec: Codec
    server: HubServer
    stores: JournalSet
    pipeline: Pipeline
    resolver: Resolver
    day: BusinessDay
    billers: dict[str, Biller]
    closer: DayCloser
    obs: Observability
    admin: AdminServer | None = None
    admin_port: int | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def journal(self) -> Journal:
        return self.stores.journal

    async def start(self) -> int:
        """Open the journal, recover, start billers and the resolver, then listen.

        Returns the link port. Payments left half-way by a crash become uncertain
        and go to the resolver before the first new request is read.
        """
        log = get_logger("billhub")
        await self.stores.open()
        now = SystemClock().now()
        quiet = timedelta(seconds=self.config.resolver.quiet_period_s)
        recovered = await recover_unfinished(self.stores.journal, now, now + quiet)
        if recovered:
            log.warning("recovered_uncertain_payments", count=len(recovered))
        for biller in self.billers.values():
            await biller.start(self.stores.journal)
        await self.load_bills_files()
        _settle_heap()
        last = await self.closer.restore()
        if last is not None:
            log.info("business_day", current=last.new_date.isoformat(), state=last.state)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.resolver.run()))
        if any(b.exchanges_files for b in self.billers.values()):
            self._tasks.append(loop.create_task(self._poll_periodically()))
        if self.config.journal.kind == "postgresql":  # a journal other instances share
            self._tasks.append(loop.create_task(self._take_over_periodically()))
        link = self.config.link
        try:
            port = await self.server.start(link.host, link.port)
        except OSError as exc:
            raise ConfigError("link.port", _cannot_listen(link.host, link.port, exc)) from None
        if self.config.admin.enabled:
            self.admin = self.obs.admin_server(
                links=lambda: self.server.links,
                day_totals=self.stores.settlement.day_totals,
                backlog=self.resolver.backlog,
                business_day=lambda: self.day.current or utc_today(),
                listening=lambda: self.server.listening,
            )
            admin = self.config.admin
            try:
                self.admin_port = await self.admin.start(admin.host, admin.port)
            except OSError as exc:
                raise ConfigError(
                    "admin.port", _cannot_listen(admin.host, admin.port, exc)
                ) from None
        return port

    async def load_bills_files(self) -> list[InboxFile]:
        """Poll every biller: take in what its company dropped (bills files), and report it."""
        log = get_logger("billhub.batch")
        results: list[InboxFile] = []
        for biller in self.billers.values():
            for r in await biller.poll():
                log.info("bills_file", biller=biller.code, **_fields(r))
                self.obs.bills_file(biller.code, r)
                results.append(r)
        return results

    async def _poll_periodically(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                await self.load_bills_files()
            except Exception as exc:  # keep polling; the reason is logged
                get_logger("billhub.batch").error("bills_file_poll_failed", error=str(exc))

    async def _take_over_periodically(self) -> None:
        """Recover the payments an instance that died left half-way, while this one runs.

        Start-up recovery alone would leave them ``POSTING`` until some instance
        restarts: their repeats would get `91` while the biller may hold them. The
        journal hands over only the payments of instances whose heartbeat ran out.
        """
        log = get_logger("billhub")
        interval = self.config.journal.lease_s / 2
        quiet = timedelta(seconds=self.config.resolver.quiet_period_s)
        while True:
            await asyncio.sleep(interval)
            now = SystemClock().now()
            try:
                taken = await recover_unfinished(self.stores.journal, now, now + quiet)
            except JournalError as exc:  # the journal's own health reports it; try again
                log.warning("take_over_failed", error=str(exc))
                continue
            except Exception as exc:  # a loop that ended would take nothing over again
                log.error("take_over_failed", error=type(exc).__name__)
                continue
            if taken:
                log.warning("took_over_uncertain_payments", count=len(taken))
                self.resolver.wake()

    async def stop(self, grace: float) -> None:
        await self.server.shutdown(grace)
        if self.obs.log_observer is not None:
            self.obs.log_observer.refusals.flush()  # the last interval's summary lines
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.resolver.stop()
        for biller in self.billers.values():
            await biller.close()
        await self.stores.close()
        if self.admin is not None:
            await self.admin.stop()


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    """A failed bind as one line: the address and the reason, not the exception's text."""
    why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"cannot listen on {host}:{port}: {why}"


def _settle_heap() -> None:
    """Move what start-up loaded (bills, indexes) out of the collector's sight.

    Hundreds of thousands of long-lived bill objects make every full collection
    walk them all, which showed as pauses of up to 0.8 s holding every answer in
    flight. Frozen objects are never collected, which is right for a store that
    lives as long as the process.
    """
    gc.collect()
    gc.freeze()


def _fields(r: InboxFile) -> dict[str, Any]:
    """A bills-file load result as log fields (names and counts, never row data)."""
    return {
        "file": r.name,
        "outcome": r.outcome.value,
        "rows": r.rows,
        "conflicts": list(r.conflicts),
        "row": r.row,
        "reason": r.reason,
    }


def _log_day_file(f: DayFile) -> None:
    get_logger("billhub.batch").info(
        "payments_file", biller=f.biller, date=f.settlement_date.isoformat(), path=str(f.path)
    )


def build_hub(config: Config, *, subscribers: Sequence[LinkSubscriber] | None = None) -> Hub:
    """Everything ``billhub serve`` runs, from a validated configuration.

    ``subscribers`` hear the link facts in the log's place (tests: a recorder, with or
    without a log); the metrics, when on, always hear them too.
    """
    spec = load_spec(config.link.spec_file)
    codec = Codec(spec)
    day = BusinessDay(utc_today)
    log = get_logger("billhub")
    holder: list[Observability] = []

    def auth_failed(code: str) -> None:
        log.error("biller_unauthorized", biller=code, hint="check the biller's token")
        holder[0].health.unauthorized(code)

    state_dir = config.journal.path.parent if config.journal.path is not None else Path.cwd()
    obs = build_observability(
        (LogObserver(),) if subscribers is None else subscribers,
        billers=[BillerInfo(b.code, b.name, b.kind) for b in config.billers],
        file_billers=[b.code for b in config.billers if b.kind in FILE_KINDS],
        rules=spec.rules,
        refusal_reasons=REFUSAL_REASONS,
        metrics=config.admin.enabled and config.admin.metrics,
        journal=describe(config.journal),
    )
    holder.append(obs)
    stores = build_journal(config.journal, **obs.journal_hooks())
    # Batch billers keep their bills in the journal's database (one store for every
    # instance on a PostgreSQL journal).
    ctx = ConnectorContext(state_dir, utc_today, auth_failed, bills=stores.bills)
    billers = {b.code: build_biller(b, ctx) for b in config.billers}
    routes = {
        b.code: BillerRoute(b.code, b.name, billers[b.code], b.budget_s, b.max_concurrency)
        for b in config.billers
    }
    clock = SystemClock()
    rc = config.resolver
    unrecorded = UnrecordedOutcomes()
    resolver = Resolver(
        stores.journal,
        billers,
        clock,
        call_timeout=rc.call_timeout_s,
        backoff_base=rc.backoff_base_s,
        backoff_max=rc.backoff_max_s,
        poll_interval=rc.poll_interval_s,
        observer=obs.pipeline_observer,
        unrecorded=unrecorded,
        on_turn_failed=lambda error: log.error("resolver_turn_failed", error=error),
    )
    pipeline = Pipeline(
        spec.rules,
        stores.journal,
        routes,
        clock,
        RandomIds(),
        calendar=day,
        resolver=resolver,
        quiet_period=rc.quiet_period_s,
        observer=obs.pipeline_observer,
        unrecorded=unrecorded,
    )
    cutover_lock = asyncio.Lock()

    async def drained(new: date) -> None:
        """This process's payments of the closed dates, then every instance's."""
        await pipeline.inflight.drained(new)
        while await stores.settlement.posting_before(new):  # noqa: ASYNC110 - in the database
            await asyncio.sleep(0.05)

    closer = DayCloser(
        stores.settlement,
        day,
        billers=list(billers.values()),
        ledger=stores.journal,
        drained=drained,
        exclusive=lambda: cutover_lock,
        now=clock.now,
        pause=asyncio.sleep,
        on_file=_log_day_file,
    )
    reconciler = Reconciler(
        spec.rules,
        stores.settlement,
        billers=frozenset(billers),
        day=day,
        now=clock.now,
        on_finding=obs.reconciliation_finding,
        refresh=closer.refresh,
    )
    handler = HubDispatcher(spec.rules, pipeline, closer, reconciler)
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
        obs.link_events,
        timers=Timers(
            read_timeout=lc.read_timeout_s,
            idle_interval=lc.idle_interval_s,
            echo_timeout=lc.echo_timeout_s,
            echo_max_missed=lc.echo_max_missed,
            sign_on_timeout=lc.sign_on_timeout_s,
        ),
        limits=ServerLimits(
            max_links=lc.max_links,
            max_handshakes=lc.max_handshakes,
            max_handshakes_per_source=lc.max_handshakes_per_source,
            hello_timeout=lc.hello_timeout_s,
            handshake_timeout=lc.handshake_timeout_s,
            allowed_sources=None
            if lc.allowed_sources is None
            else tuple(ipaddress.ip_network(n) for n in lc.allowed_sources),
            max_in_flight=lc.max_in_flight,
            reuse_port=lc.reuse_port,
        ),
    )
    return Hub(config, codec, server, stores, pipeline, resolver, day, billers, closer, obs)


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
        event_loop=loop_name(),
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
