"""The default biller schema (``schema/*.sql``): installed and filled for demos and tests.

The DDL ships inside the package, one file per server, and is what
``specs/biller-database.md`` documents; a company that adopts the default schema
runs the file itself. :func:`install` creates the tables (``IF NOT EXISTS``, so it
may run again) and :func:`load_bills` inserts bill rows, both through the same
engines as the connector.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from importlib import resources

from billhub.connectors.database.connector import make_engine
from billhub.connectors.database.dsn import parse_dsn
from billhub.connectors.database.engine import Engine, EngineFault
from billhub.connectors.database.sql import Dialect, parse_statement
from billhub.errors import BillerUnavailable

__all__ = ["BILL_COLUMNS", "ddl", "install", "load_bills"]

#: The ``bills`` columns :func:`load_bills` fills, in the order of each row.
BILL_COLUMNS = (
    "bill_id",
    "account",
    "customer_name",
    "account_status",
    "partial_allowed",
    "min_payment",
    "period",
    "due_date",
    "amount",
    "paid",
)


def ddl(dialect: Dialect) -> str:
    """The schema file's text for ``dialect``."""
    return resources.files(__package__).joinpath(f"schema/{dialect}.sql").read_text("utf-8")


def _statements(text: str) -> list[str]:
    """The DDL file's statements (it has no ';' inside strings or bodies)."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def _engine(code: str, dsn_text: str) -> tuple[Engine, Dialect]:
    dsn = parse_dsn(code, dsn_text)
    return make_engine(dsn, max_size=2, connect_timeout=10.0), dsn.dialect


async def install(dsn_text: str, *, code: str = "demo", empty: bool = False) -> None:
    """Create the default schema's tables at ``dsn_text`` (unless they exist); with
    ``empty``, delete every row of them (a demo starting over). Raises
    :class:`~billhub.errors.ConfigError` for a bad DSN and
    :class:`~billhub.errors.BillerUnavailable` when the server does not take it."""
    engine, dialect = _engine(code, dsn_text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MySQL warns of each table that exists already
            async with engine.transaction() as s:
                for text in _statements(ddl(dialect)):
                    await s.execute(parse_statement(text, dialect), {})
        if empty:
            async with engine.transaction() as s:
                for table in ("payment_bills", "payments", "bills"):
                    await s.execute(parse_statement(f"DELETE FROM {table}", dialect), {})  # noqa: S608
    except EngineFault as exc:
        raise BillerUnavailable(f"database {exc.kind}: {exc.reason}") from None
    finally:
        await engine.close()


async def load_bills(
    dsn_text: str, rows: Iterable[Sequence[object]], *, code: str = "demo", batch: int = 2000
) -> int:
    """Insert ``rows`` (values in :data:`BILL_COLUMNS` order) into ``bills``, replacing
    bills of the same id; one transaction per ``batch`` rows. Returns the rows written."""
    engine, dialect = _engine(code, dsn_text)
    # Only the constant column names are formatted into the SQL; every value is bound.
    names = ", ".join(BILL_COLUMNS)
    marks = ", ".join(f":{c}" for c in BILL_COLUMNS)
    if dialect == "postgresql":
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in BILL_COLUMNS[1:])
        upsert = f"ON CONFLICT (bill_id) DO UPDATE SET {updates}"
    else:
        updates = ", ".join(f"{c} = VALUES({c})" for c in BILL_COLUMNS[1:])
        upsert = f"ON DUPLICATE KEY UPDATE {updates}"
    sql = f"INSERT INTO bills ({names}) VALUES ({marks}) {upsert}"  # noqa: S608
    statement = parse_statement(sql, dialect)
    written = 0
    pending: list[Sequence[object]] = []

    async def flush() -> None:
        nonlocal written
        async with engine.transaction() as s:
            for row in pending:
                await s.execute(statement, dict(zip(BILL_COLUMNS, row, strict=True)))
        written += len(pending)
        pending.clear()

    try:
        for row in rows:
            pending.append(row)
            if len(pending) >= batch:
                await flush()
        if pending:
            await flush()
    except EngineFault as exc:
        raise BillerUnavailable(f"database {exc.kind}: {exc.reason}") from None
    finally:
        await engine.close()
    return written
