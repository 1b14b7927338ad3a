"""What the admin port tells about a running hub: readiness, status, metrics.

:class:`HubWatch` reads the hub's parts through callbacks and ports (links from the
transport, billers' health, the journal's ledger, the resolver's backlog), so that
this package imports neither the transport nor the journal (STYLE.md layers). The
composition root (:mod:`billhub.app.hub`) builds it.

Every journal read is bounded by ``journal_timeout``: an admin request never hangs
on a stuck journal, it reports it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from billhub.errors import BillhubError
from billhub.observability.health import BillerHealth, JournalHealth
from billhub.observability.metrics import LinksSource, Metrics

Backlog = Callable[[], Awaitable[tuple[int, datetime | None]]]


class DayTotals(Protocol):
    """A settlement date's totals for one biller (``settlement.model.Totals``)."""

    @property
    def count(self) -> int: ...

    @property
    def amount(self) -> int: ...

    @property
    def reversal_count(self) -> int: ...

    @property
    def reversal_amount(self) -> int: ...


TotalsSource = Callable[[str, date], Awaitable[DayTotals]]


@dataclass(frozen=True, slots=True)
class BillerInfo:
    code: str
    name: str
    kind: str


def _utc_now() -> datetime:
    return datetime.now(UTC)


class HubWatch:
    """Readiness, the JSON status and the metrics text of one hub."""

    def __init__(
        self,
        *,
        links: LinksSource,
        billers: Sequence[BillerInfo] = (),
        health: BillerHealth | None = None,
        day_totals: TotalsSource | None = None,
        backlog: Backlog | None = None,
        metrics: Metrics | None = None,
        journal_health: JournalHealth | None = None,
        listening: Callable[[], bool] | None = None,
        business_day: Callable[[], date],
        now: Callable[[], datetime] = _utc_now,
        journal_timeout: float = 2.0,
        totals_ttl: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.links = links
        self.billers = list(billers)
        self.health = health or BillerHealth(b.code for b in self.billers)
        self.day_totals = day_totals
        self.backlog = backlog
        self.metrics = metrics
        self.journal_health = journal_health
        self.listening = listening
        self.business_day = business_day
        self.now = now
        self.journal_timeout = journal_timeout
        self.totals_ttl = totals_ttl
        self.monotonic = monotonic
        self._totals_cache: tuple[float, date, dict[str, dict[str, Any]]] | None = None
        self.started_at = now()
        if metrics is not None:
            metrics.watch_links(links)
            metrics.watch_billers(self.health.up)

    async def _backlog(self) -> tuple[int, datetime | None]:
        """Open resolver tasks and the oldest's creation: a read through the journal."""
        assert self.backlog is not None
        async with asyncio.timeout(self.journal_timeout):
            return await self.backlog()

    def _age(self, oldest: datetime | None) -> float:
        return max(0.0, (self.now() - oldest).total_seconds()) if oldest is not None else 0.0

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready means "can take a link and record payments": the link listener is up
        and the journal answers and writes.

        Load balancers and Kubernetes send a new link only to a ready instance, so no
        switch link yet, or billers down, must not make an instance unready: the switch
        could then never connect. Those are warnings here, and metrics and alerts
        (``billhub_links_signed_on``, ``billhub_biller_up``).
        """
        problems: list[str] = []
        warnings: list[str] = []
        body: dict[str, Any] = {}
        if self.backlog is not None:
            try:
                await self._backlog()
                body["journal"] = "ok"
            except TimeoutError:
                body["journal"] = "timeout"
                problems.append(f"journal: no answer within {self.journal_timeout:g} s")
            except (BillhubError, OSError) as exc:
                body["journal"] = "error"
                problems.append(f"journal: {exc}")
        jh = self.journal_health
        if jh is not None and not jh.writable:
            report = jh.report()
            body["journal"] = "failing"
            body["journal_writes"] = report
            problems.append(
                f"journal: writes failing ({report['reason']}) for {report['failing_s']:g} s"
            )
        links = list(self.links())
        signed_on = sum(1 for link in links if link.signed_on)
        body["links"] = len(links)
        body["signed_on"] = signed_on
        if not signed_on:
            warnings.append("no signed-on link from the switch")
        if self.listening is not None and not self.listening():
            problems.append("the link listener is not accepting connections")
        states = {b.code: self.health.report(b.code)["state"] for b in self.billers}
        body["billers"] = states
        down = [code for code, s in states.items() if s in ("down", "unauthorized")]
        for code in down:
            warnings.append(f"biller {code}: {states[code]}")
        if self.billers and len(down) == len(self.billers):
            warnings.append("every biller is down")
        body["problems"] = problems
        body["warnings"] = warnings
        return not problems, body

    async def status(self) -> dict[str, Any]:
        """Everything ``billhub status`` shows, JSON-ready."""
        now = self.now()
        ready, readiness = await self.readiness()
        day = self.business_day()
        links = [
            {
                "link": link.info.link_id,
                "peer": link.info.peer,
                "subject": link.info.subject,
                "state": "signed_on" if link.signed_on else "connected",
                "in_flight": link.in_flight,
            }
            for link in sorted(self.links(), key=lambda x: x.info.link_id)
        ]
        resolver: dict[str, Any] = {}
        if self.backlog is not None:
            try:
                count, oldest = await self._backlog()
                resolver = {
                    "backlog": count,
                    "oldest_created_at": oldest.isoformat() if oldest else None,
                    "oldest_age_s": round(self._age(oldest), 1),
                }
            except (TimeoutError, BillhubError, OSError) as exc:
                resolver = {"error": str(exc) or type(exc).__name__}
        totals = await self._totals(day)
        billers = []
        for b in self.billers:
            entry: dict[str, Any] = {"code": b.code, "name": b.name, "kind": b.kind}
            entry.update(self.health.report(b.code))
            entry["today"] = totals.get(b.code)
            billers.append(entry)
        return {
            "ready": ready,
            "problems": readiness["problems"],
            "warnings": readiness["warnings"],
            "now": now.isoformat(),
            "started_at": self.started_at.isoformat(),
            "uptime_s": round((now - self.started_at).total_seconds(), 1),
            "business_day": day.isoformat(),
            "links": links,
            "billers": billers,
            "resolver": resolver,
        }

    async def _totals(self, day: date) -> dict[str, dict[str, Any]]:
        """Per biller, for the settlement date: approved payments (later reversed or not)
        and their reversals answered `00`, as the 0500 totals count them.

        Kept ``totals_ttl`` seconds: the reads share the journal's single thread with the
        payments' commits, and an operator running ``watch billhub status`` should not
        add to that.
        """
        cached = self._totals_cache
        if (
            cached is not None
            and cached[1] == day
            and self.monotonic() - cached[0] < self.totals_ttl
        ):
            return cached[2]
        out: dict[str, dict[str, Any]] = {}
        if self.day_totals is None:
            return out
        for b in self.billers:
            try:
                async with asyncio.timeout(self.journal_timeout):
                    t = await self.day_totals(b.code, day)
            except (TimeoutError, BillhubError, OSError) as exc:
                out[b.code] = {"error": str(exc) or type(exc).__name__}
                continue
            out[b.code] = {
                "approved_count": t.count,
                "approved_amount": t.amount,
                "reversal_count": t.reversal_count,
                "reversal_amount": t.reversal_amount,
                "currency": "760",
            }
        if all("error" not in v for v in out.values()):
            self._totals_cache = (self.monotonic(), day, out)
        return out

    async def metrics_text(self) -> bytes | None:
        """The exposition text, the resolver backlog refreshed first; None if metrics are off."""
        if self.metrics is None:
            return None
        if self.backlog is not None:
            try:
                count, oldest = await self._backlog()
                self.metrics.set_resolver_backlog(count, self._age(oldest))
            except (TimeoutError, BillhubError, OSError):
                pass  # the gauges keep their last value; /readyz says what is wrong
        return self.metrics.render()
