"""The database connector: BILLERS.md section 2 on the company's own database.

One :class:`DatabaseConnector` per biller, behind the same
:class:`~billhub.pipeline.ports.Biller` port as the REST connector. It holds one
pool (:mod:`.pg` or :mod:`.mysql`, by the DSN's scheme) of at most
``max_concurrency`` connections and the biller's statements (:mod:`.queries`),
translated and checked at construction, so that a bad DSN or a query naming an
unknown parameter stops the hub before it starts.

The contract's logic is here, the same for every company, and the SQL only reads and
writes. Posting is one transaction, keyed by the payment id:

1. ``payment_status``: a payment of that id already there is a repeat: the same
   content gets the same receipt (``payment_cancelled`` if it was cancelled), other
   content ``payment_id_conflict``; nothing is written again;
2. ``open_bills``, then the checks of LINK-SPEC 6.3 (``unknown_account``,
   ``account_blocked``, ``nothing_due``, ``bill_not_open``,
   ``amount_not_acceptable``), and the amount is spread over the bills oldest
   first (only over the named bill with ``BI``);
3. ``post_payment`` inserts the payment row; for each bill ``pay_bill`` takes its
   share off (an ``UPDATE`` that must match exactly one row, so a concurrent payment
   cannot overpay a bill) and ``add_payment_bill`` records the share, so that a
   cancel gives back exactly that;
4. ``payment_status`` again: the receipt as the database holds it.

A share that no longer fits (a concurrent payment got there first), a payment id
inserted meanwhile (the same payment on another connection), a deadlock: the
transaction is rolled back and done again from step 1, where it now finds what
happened. So a retry, a repeat and a resolver's call are harmless.

What a call may raise (the port's contract): :class:`BillerRejected` with a
BILLERS.md code; :class:`BillerTimeout` when the call did not end within
``call_timeout`` (the connection it used is closed, the transaction rolled back
unless its commit had been sent: then the resolver finds out); and
:class:`BillerUnavailable` for a lost connection, a server down, a wrong password
(after ``on_auth_failure(code)``), SQL or a schema that does not fit, or an answer
outside the contract. Messages are short fixed reasons: no account, no SQL value.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TypeVar

from billhub.config import DatabaseSettings
from billhub.connectors.database.dsn import Dsn, parse_dsn
from billhub.connectors.database.engine import Engine, EngineFault, Row, Session
from billhub.connectors.database.mysql import MysqlEngine
from billhub.connectors.database.pg import PgEngine
from billhub.connectors.database.queries import Queries, build_queries
from billhub.errors import BillerRejected, BillerTimeout, BillerUnavailable
from billhub.pipeline.model import (
    AccountBills,
    AccountStatus,
    Bill,
    DayFile,
    InboxFile,
    PaymentOrder,
    PostingStatus,
    StatusAnswer,
)
from billhub.pipeline.ports import PaymentsLedger

__all__ = ["DatabaseConnector", "make_engine", "receipt_for"]

#: How often a posting or cancel is redone after a conflict before giving up (`91`).
_ATTEMPTS = 4
_MAX_AMOUNT = 10**15
_ID_RE = re.compile(r"[A-Za-z0-9-]{1,20}")
_PAYMENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PERIOD_RE = re.compile(r"[0-9]{4}(0[1-9]|1[0-2])")
_STATUSES = {s.value: s for s in AccountStatus}
_POSTING = {"posted": PostingStatus.POSTED, "cancelled": PostingStatus.CANCELLED}
#: What makes a repeated posting "the same payment" (BILLERS.md: paid_at may differ).
_CONTENT = ("account", "bill_id", "amount", "settlement_date", "acquirer", "rrn", "channel")


_T = TypeVar("_T")


class _Redo(Exception):
    """The transaction met a concurrent change: roll back and start again."""


def receipt_for(payment_id: str) -> str:
    """The default schema's receipt: derived from the payment id, so a redone posting
    writes the same one (``DB`` + 16 hex digits; a company's own SQL may make its own)."""
    return "DB" + hashlib.sha256(payment_id.encode()).hexdigest()[:16].upper()


def make_engine(dsn: Dsn, *, max_size: int, connect_timeout: float) -> Engine:
    """The engine of the DSN's server."""
    if dsn.dialect == "postgresql":
        return PgEngine(dsn, max_size=max_size, connect_timeout=connect_timeout)
    return MysqlEngine(dsn, max_size=max_size, connect_timeout=connect_timeout)


class DatabaseConnector:
    """A biller reached through its billing database (BILLERS.md section 2).

    Raises :class:`~billhub.errors.ConfigError` at construction for a DSN or a
    statement that cannot work (see :func:`~.dsn.parse_dsn`,
    :func:`~.queries.build_queries`), and ``ValueError`` for ``max_concurrency`` < 1
    or ``call_timeout`` <= 0. Nothing connects before the first call.
    """

    status_is_authoritative = False  # a remote system: a late commit may still land
    exchanges_files = False

    def __init__(
        self,
        code: str,
        settings: DatabaseSettings,
        *,
        max_concurrency: int,
        call_timeout: float,
        on_auth_failure: Callable[[str], None] | None = None,
        engine: Engine | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not call_timeout > 0:
            raise ValueError("call_timeout must be > 0")
        self.code = code
        self.dsn = parse_dsn(code, settings.dsn)
        self.queries: Queries = build_queries(code, settings.queries, self.dsn.dialect)
        self._timeout = call_timeout
        self._on_auth_failure = on_auth_failure
        self._engine = engine or make_engine(
            self.dsn, max_size=max_concurrency, connect_timeout=call_timeout
        )

    def __repr__(self) -> str:
        return f"DatabaseConnector(code={self.code!r}, dialect={self.dsn.dialect!r})"

    # ------------------------------------------------------------------ the life cycle

    async def start(self, ledger: PaymentsLedger) -> None:
        """Nothing to open before traffic: connections are made on the first call."""

    async def poll(self) -> list[InboxFile]:
        return []

    async def close_day(self, dates: Sequence[date], ledger: PaymentsLedger) -> list[DayFile]:
        """The database has every payment already: a closed day owes it no file."""
        return []

    async def close(self) -> None:
        await self._engine.close()

    # ------------------------------------------------------------------ the four questions

    async def open_bills(self, account: str) -> AccountBills:
        async def run(s: Session) -> AccountBills:
            return _account(account, await s.rows(self.queries.open_bills, {"account": account}))

        return await self._call(run, read_only=True)

    async def post_payment(self, order: PaymentOrder) -> str:
        """Post in one transaction (module docstring); returns the receipt."""
        _check_payment_id(order.payment_id)

        async def run(s: Session) -> str:
            q = self.queries
            key = {"payment_id": order.payment_id}
            existing = await s.rows(q.payment_status, key)
            if existing:
                return _repeat(existing[0], order)
            bills = _account(order.account, await s.rows(q.open_bills, {"account": order.account}))
            shares = _allocate(bills, order.bill_id, order.amount)
            await s.execute(
                q.post_payment,
                {
                    "payment_id": order.payment_id,
                    "account": order.account,
                    "bill_id": order.bill_id,
                    "amount": order.amount,
                    "settlement_date": order.settlement_date,
                    "acquirer": order.acquirer,
                    "rrn": order.rrn,
                    "channel": order.channel,
                    "paid_at": order.paid_at,
                    "receipt": receipt_for(order.payment_id),
                },
            )
            for bill_id, share in shares:
                line = {"payment_id": order.payment_id, "bill_id": bill_id, "amount": share}
                if await s.execute(q.pay_bill, line) != 1:
                    raise _Redo
                await s.execute(q.add_payment_bill, line)
            stored = await s.rows(q.payment_status, key)
            if not stored:
                raise _outside("payment_status after posting")
            return _identifier(stored[0].get("receipt"), "receipt")

        return await self._call(run)

    def bills_taken(self, payment_id: str) -> tuple[str, ...]:
        """None: the company's database keeps its own bills."""
        return ()

    async def cancel_payment(self, payment_id: str) -> None:
        """Mark the payment cancelled and give its shares back to its bills, in one
        transaction; again is harmless. ``unknown_payment`` if never posted."""
        _check_payment_id(payment_id)

        async def run(s: Session) -> None:
            q = self.queries
            key = {"payment_id": payment_id}
            rows = await s.rows(q.payment_status, key)
            if not rows:
                raise BillerRejected("unknown_payment")
            if _status(rows[0]) is PostingStatus.CANCELLED:
                return
            if await s.execute(q.cancel_payment, key) != 1:
                raise _Redo  # cancelled meanwhile by another call: look again
            for line in await s.rows(q.payment_bills, key):
                bill_id = _identifier(line.get("bill_id"), "payment_bills.bill_id")
                share = _integer(line.get("amount"), "payment_bills.amount")
                params = {"payment_id": payment_id, "bill_id": bill_id, "amount": share}
                if await s.execute(q.unpay_bill, params) != 1:
                    raise _outside("unpay_bill matched no bill")

        await self._call(run)

    async def payment_status(self, payment_id: str) -> StatusAnswer:
        """Posted or cancelled with the receipt; no row is UNKNOWN (not final: a commit
        the hub gave up waiting for may still land)."""
        _check_payment_id(payment_id)

        async def run(s: Session) -> StatusAnswer:
            rows = await s.rows(self.queries.payment_status, {"payment_id": payment_id})
            if not rows:
                return StatusAnswer(PostingStatus.UNKNOWN)
            return StatusAnswer(_status(rows[0]), _identifier(rows[0].get("receipt"), "receipt"))

        return await self._call(run, read_only=True)

    # ------------------------------------------------------------------ transactions

    async def _call(
        self, body: Callable[[Session], Awaitable[_T]], *, read_only: bool = False
    ) -> _T:
        """Run ``body`` in a transaction within the time budget; redo it on a conflict."""
        try:
            async with asyncio.timeout(self._timeout):
                last: EngineFault | None = None
                for attempt in range(_ATTEMPTS):
                    try:
                        async with self._engine.transaction(read_only=read_only) as session:
                            return await body(session)
                    except _Redo:
                        pass
                    except EngineFault as exc:
                        # A conflict is redone; so is a connection that failed before
                        # anything was sent or under a read (pooled connections the
                        # server had closed): neither can have changed anything.
                        harmless = exc.kind == "connection" and (exc.before_work or read_only)
                        if not (exc.kind == "conflict" or harmless):
                            raise
                        last = exc if exc.kind != "conflict" else None
                    await asyncio.sleep(0.005 * (attempt + 1))
                if last is not None:
                    raise last
                raise BillerUnavailable("concurrent changes: gave up redoing the transaction")
        except TimeoutError:
            raise BillerTimeout(f"no answer within {self._timeout:g} s") from None
        except EngineFault as exc:
            if exc.kind == "auth" and self._on_auth_failure is not None:
                with contextlib.suppress(Exception):
                    self._on_auth_failure(self.code)
            raise BillerUnavailable(f"database {exc.kind}: {exc.reason}") from None


# ---------------------------------------------------------------------- answers


def _outside(where: str) -> BillerUnavailable:
    return BillerUnavailable(f"answer outside the contract: {where}")


def _check_payment_id(payment_id: str) -> None:
    if not _PAYMENT_ID_RE.fullmatch(payment_id):
        raise BillerUnavailable("payment id outside the contract (1-64 of A-Z a-z 0-9 - _)")


def _integer(value: object, where: str) -> int:
    """An amount: an integer column (or an integral DECIMAL, as SUM() gives on MySQL)."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    if type(value) is not int or not -_MAX_AMOUNT <= value <= _MAX_AMOUNT:
        raise _outside(where)
    return value


def _identifier(value: object, where: str) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise _outside(where)
    return value


def _flag(value: object, where: str) -> bool:
    """A boolean column; MySQL's BOOLEAN is TINYINT(1), so 0 and 1 count."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise _outside(where)


def _day(value: object, where: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _outside(where)


def _period(value: object, where: str) -> str:
    text = str(value) if type(value) is int else value
    if not isinstance(text, str) or not _PERIOD_RE.fullmatch(text):
        raise _outside(where)
    return text


def _account(account: str, rows: list[Row]) -> AccountBills:
    """``open_bills`` rows as BILLERS.md question 1; no row is ``unknown_account``.

    Every row carries the account's columns (the first row's count); a row whose
    ``due`` is 0 or whose ``bill_id`` is NULL only says the account exists (a paid
    bill, or an accounts table joined to its bills).
    """
    if not rows:
        raise BillerRejected("unknown_account")
    first = rows[0]
    name = first.get("customer_name")
    if not isinstance(name, str):
        raise _outside("open_bills.customer_name")
    status = first.get("account_status")
    if not isinstance(status, str) or status not in _STATUSES:
        raise _outside("open_bills.account_status")
    partial = _flag(first.get("partial_allowed"), "open_bills.partial_allowed")
    min_payment = _integer(first.get("min_payment") or 0, "open_bills.min_payment")
    bills: list[Bill] = []
    seen: set[str] = set()
    for row in rows:
        if row.get("bill_id") is None:
            continue
        due = _integer(row.get("due"), "open_bills.due")
        if due <= 0:
            continue
        bill_id = _identifier(row.get("bill_id"), "open_bills.bill_id")
        if bill_id in seen:
            raise _outside("open_bills.bill_id repeated")
        seen.add(bill_id)
        bills.append(
            Bill(
                bill_id,
                _period(row.get("period"), "open_bills.period"),
                _day(row.get("due_date"), "open_bills.due_date"),
                due,
            )
        )
    return AccountBills(
        account=account,
        customer_name=name,
        status=_STATUSES[status],
        partial_allowed=partial,
        min_payment=max(min_payment, 0) if partial else 0,
        bills=tuple(bills),
    )


def _allocate(bills: AccountBills, bill_id: str | None, amount: int) -> list[tuple[str, int]]:
    """LINK-SPEC 6.3: which bills a payment settles and by how much, or the refusal."""
    if bills.status is not AccountStatus.ACTIVE:
        raise BillerRejected("account_blocked")
    if bill_id is not None:
        targets = [b for b in bills.bills if b.bill_id == bill_id]
        if not targets:
            raise BillerRejected("bill_not_open")
    else:
        targets = list(bills.bills)
        if not targets:
            raise BillerRejected("nothing_due")
    due = sum(b.amount for b in targets)
    if bills.partial_allowed:
        acceptable = min(bills.min_payment, due) <= amount <= due
    else:
        acceptable = amount == due
    if not acceptable or amount <= 0:
        raise BillerRejected("amount_not_acceptable")
    shares: list[tuple[str, int]] = []
    left = amount
    for b in targets:  # oldest first
        take = min(left, b.amount)
        if take == 0:
            break
        shares.append((b.bill_id, take))
        left -= take
    return shares


def _status(row: Row) -> PostingStatus:
    status = row.get("status")
    if not isinstance(status, str) or status not in _POSTING:
        raise _outside("payment_status.status")
    return _POSTING[status]


def _comparable(value: object) -> object:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str):
        return value.rstrip()  # CHAR columns come back space-padded on some servers
    return value


def _repeat(row: Row, order: PaymentOrder) -> str:
    """A posting of a payment id the database has: same content, same receipt."""
    wanted = {
        "account": order.account,
        "bill_id": order.bill_id,
        "amount": order.amount,
        "settlement_date": order.settlement_date.isoformat(),
        "acquirer": order.acquirer,
        "rrn": order.rrn,
        "channel": order.channel,
    }
    for name in _CONTENT:
        if name in row and _comparable(row[name]) != wanted[name]:
            raise BillerRejected("payment_id_conflict")
    if _status(row) is PostingStatus.CANCELLED:
        raise BillerRejected("payment_cancelled")
    return _identifier(row.get("receipt"), "receipt")
