"""One registry from a biller's ``kind`` to its connector: adding a kind is one entry here.

The composition calls :func:`build_biller` for every ``[[billers]]`` entry and then
treats every biller the same way, through the :class:`~billhub.pipeline.ports.Biller`
port.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from billhub.config import BillerConfig
from billhub.connectors.batch import BatchConnector
from billhub.connectors.database import DatabaseConnector
from billhub.connectors.rest import RestConnector
from billhub.errors import ConfigError
from billhub.pipeline.ports import Biller, BillsStore


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What connectors may need from the hub: where state lives, the date, a hook for
    401s, and the store of the bills the hub keeps itself (batch billers)."""

    state_dir: Path
    today: Callable[[], date]
    on_auth_failure: Callable[[str], None] = lambda _: None
    bills: BillsStore | None = None


def _rest(b: BillerConfig, ctx: ConnectorContext) -> Biller | None:
    if b.rest is None:
        return None
    return RestConnector(
        b.code,
        b.rest,
        max_concurrency=b.max_concurrency,
        call_timeout=b.budget_s,
        on_auth_failure=ctx.on_auth_failure,
    )


def _batch(b: BillerConfig, ctx: ConnectorContext) -> Biller | None:
    if b.batch is None or ctx.bills is None:
        return None
    legacy = ctx.state_dir / f"batch-{b.code}.db"
    if legacy.exists():
        # An earlier billhub kept this biller's bills in a file of its own; they are in
        # the journal now. Starting without it would offer bills its payments took.
        raise ConfigError(
            f"billers[{b.code}]",
            f"{legacy} is a bills store of an earlier billhub; see docs/configuration.md "
            "\"Batch billers' bills\" to move to the journal's store",
        )
    return BatchConnector(b.code, b.batch, ctx.bills, today=ctx.today)


def _database(b: BillerConfig, ctx: ConnectorContext) -> Biller | None:
    if b.database is None:
        return None
    return DatabaseConnector(
        b.code,
        b.database,
        max_concurrency=b.max_concurrency,
        call_timeout=b.budget_s,
        on_auth_failure=ctx.on_auth_failure,
    )


#: The kinds whose connectors exchange files with their companies (for the metrics,
#: which are set up before the journal and the connectors exist).
FILE_KINDS = frozenset({"batch"})

KINDS: dict[str, Callable[[BillerConfig, ConnectorContext], Biller | None]] = {
    "rest": _rest,
    "batch": _batch,
    "database": _database,
}


def build_biller(b: BillerConfig, ctx: ConnectorContext) -> Biller:
    """The connector of one configured biller; a kind with no connector is a ConfigError."""
    factory = KINDS.get(b.kind)
    biller = factory(b, ctx) if factory is not None else None
    if biller is None:
        raise ConfigError(f"billers[{b.code}].kind", f"the {b.kind} connector is not available yet")
    return biller
