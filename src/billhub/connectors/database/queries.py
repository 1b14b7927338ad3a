"""The statements the database connector runs, their parameters, and the shipped SQL.

BILLERS.md section 2: the hub's configuration holds, per biller, the SQL of each
question with named parameters, and a default ships for the schema of
``specs/biller-database.md``. The connector keeps the contract's logic itself
(which bills a payment settles, whether an amount is acceptable, what a repeat is),
so that it is the same for every company; the SQL only reads and writes. A question
that changes the books takes several statements, all in one transaction:

=================  ==============================================  ========================
statement          parameters                                      answers
=================  ==============================================  ========================
open_bills         account                                         the account's bills
payment_status     payment_id                                      0 or 1 payment row
post_payment       payment_id account bill_id amount               (inserts the payment)
                   settlement_date acquirer rrn channel paid_at
                   receipt
pay_bill           payment_id bill_id amount                       must change 1 row
add_payment_bill   payment_id bill_id amount                       (what it took off a bill)
payment_bills      payment_id                                      bill_id, amount rows
cancel_payment     payment_id                                      must change 1 row
unpay_bill         payment_id bill_id amount                       must change 1 row
=================  ==============================================  ========================

Every statement may be replaced in ``[billers.database.queries]``; one that names a
parameter its statement does not have, or leaves out its key parameter, stops the
hub at start-up naming the biller and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from billhub.connectors.database.sql import Dialect, SqlError, Statement, parse_statement
from billhub.errors import ConfigError

__all__ = ["DEFAULT_SQL", "PARAMETERS", "REQUIRED", "Queries", "build_queries"]

_ORDER = ("payment_id", "account", "bill_id", "amount", "settlement_date", "acquirer", "rrn")
_POSTING = frozenset({*_ORDER, "channel", "paid_at", "receipt"})
_LINE = frozenset({"payment_id", "bill_id", "amount"})

#: The parameters each statement may name.
PARAMETERS: Mapping[str, frozenset[str]] = {
    "open_bills": frozenset({"account"}),
    "payment_status": frozenset({"payment_id"}),
    "post_payment": _POSTING,
    "pay_bill": _LINE,
    "add_payment_bill": _LINE,
    "payment_bills": frozenset({"payment_id"}),
    "cancel_payment": frozenset({"payment_id"}),
    "unpay_bill": _LINE,
}

#: The parameters each statement must use: without them it cannot be about the
#: account, payment or bill in question.
REQUIRED: Mapping[str, frozenset[str]] = {
    "open_bills": frozenset({"account"}),
    "payment_status": frozenset({"payment_id"}),
    "post_payment": frozenset({"payment_id"}),
    "pay_bill": frozenset({"bill_id", "amount"}),
    "add_payment_bill": frozenset({"payment_id", "bill_id"}),
    "payment_bills": frozenset({"payment_id"}),
    "cancel_payment": frozenset({"payment_id"}),
    "unpay_bill": frozenset({"bill_id", "amount"}),
}

#: The shipped SQL, for the default schema; the same text runs on both servers.
DEFAULT_SQL: Mapping[str, str] = {
    "open_bills": (
        "SELECT customer_name, account_status, partial_allowed, min_payment,"
        " bill_id, period, due_date, amount - paid AS due"
        " FROM bills WHERE account = :account ORDER BY period, due_date, bill_id"
    ),
    "payment_status": (
        "SELECT status, receipt, account, bill_id, amount, settlement_date, acquirer, rrn, channel"
        " FROM payments WHERE payment_id = :payment_id"
    ),
    "post_payment": (
        "INSERT INTO payments (payment_id, account, bill_id, amount, settlement_date,"
        " acquirer, rrn, channel, paid_at, receipt, status)"
        " VALUES (:payment_id, :account, :bill_id, :amount, :settlement_date,"
        " :acquirer, :rrn, :channel, :paid_at, :receipt, 'posted')"
    ),
    "pay_bill": (
        "UPDATE bills SET paid = paid + :amount"
        " WHERE bill_id = :bill_id AND paid + :amount <= amount"
    ),
    "add_payment_bill": (
        "INSERT INTO payment_bills (payment_id, bill_id, amount)"
        " VALUES (:payment_id, :bill_id, :amount)"
    ),
    "payment_bills": (
        "SELECT bill_id, amount FROM payment_bills WHERE payment_id = :payment_id ORDER BY bill_id"
    ),
    "cancel_payment": (
        "UPDATE payments SET status = 'cancelled'"
        " WHERE payment_id = :payment_id AND status = 'posted'"
    ),
    "unpay_bill": (
        "UPDATE bills SET paid = paid - :amount WHERE bill_id = :bill_id AND paid >= :amount"
    ),
}


@dataclass(frozen=True, slots=True)
class Queries:
    """Every statement of one biller, translated for its server."""

    open_bills: Statement
    payment_status: Statement
    post_payment: Statement
    pay_bill: Statement
    add_payment_bill: Statement
    payment_bills: Statement
    cancel_payment: Statement
    unpay_bill: Statement


def build_queries(code: str, overrides: Mapping[str, str], dialect: Dialect) -> Queries:
    """The biller's statements: its overrides, else the shipped SQL, each checked.

    Raises :class:`~billhub.errors.ConfigError` keyed ``biller <code>:
    database.queries.<name>`` for a name that is no statement, SQL that is not one
    statement with named parameters, an unknown parameter or a missing key one.
    """
    for name in overrides:
        if name not in DEFAULT_SQL:
            raise ConfigError(f"biller {code}: database.queries.{name}", "unknown statement")
    built: dict[str, Statement] = {}
    for name, default in DEFAULT_SQL.items():
        key = f"biller {code}: database.queries.{name}"
        try:
            st = parse_statement(overrides.get(name, default), dialect)
        except SqlError as exc:
            raise ConfigError(key, str(exc)) from None
        allowed = PARAMETERS[name]
        unknown = sorted(st.names - allowed)
        if unknown:
            known = ", ".join(f":{p}" for p in sorted(allowed))
            raise ConfigError(key, f"names an unknown parameter :{unknown[0]} (known: {known})")
        missing = sorted(REQUIRED[name] - st.names)
        if missing:
            raise ConfigError(key, f"must use :{missing[0]}")
        built[name] = st
    return Queries(**built)
