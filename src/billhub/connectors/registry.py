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
from billhub.connectors.rest import RestConnector
from billhub.errors import ConfigError
from billhub.pipeline.ports import Biller


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What connectors may need from the hub: where state lives, the date, a hook for 401s."""

    state_dir: Path
    today: Callable[[], date]
    on_auth_failure: Callable[[str], None] = lambda _: None


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
    if b.batch is None:
        return None
    return BatchConnector(b.code, b.batch, ctx.state_dir, today=ctx.today)


KINDS: dict[str, Callable[[BillerConfig, ConnectorContext], Biller | None]] = {
    "rest": _rest,
    "batch": _batch,
}


def build_biller(b: BillerConfig, ctx: ConnectorContext) -> Biller:
    """The connector of one configured biller; a kind with no connector is a ConfigError."""
    factory = KINDS.get(b.kind)
    biller = factory(b, ctx) if factory is not None else None
    if biller is None:
        raise ConfigError(f"billers[{b.code}].kind", f"the {b.kind} connector is not available yet")
    return biller
