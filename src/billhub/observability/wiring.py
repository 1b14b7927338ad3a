"""The hub's observability, built once: logs, metrics and billers' health, as observers.

:func:`build_observability` gives the composition root (:mod:`billhub.app.hub`) what to
plug where one observer is expected: ``link_events`` for the transport (the bus of link
facts: logs, then metrics), ``pipeline_observer`` for the pipeline and the resolver (health, then
metrics), ``journal_hooks()`` for the SQLite journal's commit hook. With metrics off
(``[admin] metrics = false``) only logs and health are kept and nothing is counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from billhub.iso8583.spec import LinkRules
from billhub.link.facts import LinkSubscriber
from billhub.observability.admin import AdminServer
from billhub.observability.bus import LinkEventBus
from billhub.observability.health import BillerHealth, JournalHealth
from billhub.observability.logs import LogObserver, get_logger
from billhub.observability.metrics import FanoutPipelineObserver, LinksSource, Metrics
from billhub.observability.watch import Backlog, BillerInfo, HubWatch, TotalsSource
from billhub.pipeline.ports import PipelineObserver


class _LoadResult(Protocol):
    """What of a bills-file load result is counted (``connectors.batch.LoadResult``)."""

    @property
    def rows(self) -> int: ...

    @property
    def outcome(self) -> str: ...  # a StrEnum


@dataclass
class Observability:
    metrics: Metrics | None
    health: BillerHealth
    billers: Sequence[BillerInfo]
    link_events: LinkEventBus
    pipeline_observer: PipelineObserver
    journal_health: JournalHealth
    #: The subscriber that writes log lines (its refusal summary is flushed at shutdown).
    log_observer: LogObserver | None = None

    def journal_hooks(self) -> dict[str, Any]:
        """Keyword arguments for ``build_journal``: its write health, and its commit
        hook and clock if counted."""
        if self.metrics is None:
            return {"health": self.journal_health}
        return {
            "health": self.journal_health,
            "on_commit": self.metrics.journal_commit,
            "clock": time.perf_counter,
        }

    def reconciliation_finding(self, biller: str) -> None:
        """Count one reconciliation difference for ``biller`` (a no-op with metrics off)."""
        if self.metrics is not None:
            self.metrics.reconciliation_finding(biller)

    def bills_file(self, biller: str, result: _LoadResult) -> None:
        """Count one bills file taken from ``biller``'s inbox."""
        if self.metrics is not None:
            self.metrics.bills_file(biller, str(result.outcome), result.rows)

    def admin_server(
        self,
        *,
        links: LinksSource,
        day_totals: TotalsSource | None,
        backlog: Backlog | None,
        business_day: Callable[[], date],
        listening: Callable[[], bool] | None = None,
    ) -> AdminServer:
        """The admin port's server, reading the running hub through these callbacks."""
        watch = HubWatch(
            links=links,
            billers=self.billers,
            health=self.health,
            day_totals=day_totals,
            backlog=backlog,
            metrics=self.metrics,
            journal_health=self.journal_health,
            listening=listening,
            business_day=business_day,
        )
        return AdminServer(watch.readiness, status=watch.status, metrics=watch.metrics_text)


def build_observability(
    subscribers: Sequence[LinkSubscriber],
    *,
    billers: Sequence[BillerInfo],
    file_billers: Sequence[str] = (),
    rules: LinkRules,
    refusal_reasons: Sequence[str],
    metrics: bool,
    journal: str = "",
) -> Observability:
    """Logs and health always; metrics when asked (the admin port serves them).

    ``subscribers``: who hears the link facts before the metrics (the log; tests add
    their recorder or take the log's place).

    ``file_billers``: the billers that exchange files (their bills-file counters
    are exposed at zero from the start).

    ``journal`` names the journal in its health log lines (a path, never a DSN).
    """
    health = BillerHealth(b.code for b in billers)
    log = get_logger("billhub.journal")
    logs = next((s for s in subscribers if isinstance(s, LogObserver)), None)
    if not metrics:
        jh = JournalHealth(log, where=journal)
        return Observability(None, health, billers, LinkEventBus(*subscribers), health, jh, logs)
    m = Metrics(
        billers=[b.code for b in billers],
        batch_billers=list(file_billers),
        rules=rules,
        refusal_reasons=refusal_reasons,
    )
    return Observability(
        m,
        health,
        billers,
        LinkEventBus(*subscribers, m.link_event),
        FanoutPipelineObserver(health, m),
        JournalHealth(log, metrics=m, where=journal),
        logs,
    )
