"""The database connector (BILLERS.md 2) against the machine's real PostgreSQL and MariaDB.

Every test that touches a server runs on both, each in a fresh database of its own
(``pg_dsn``, ``mariadb_dsn``) holding the default schema filled by the demo-data
generator. What a test checks is what the company would see in its own tables.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.dbhelp import fetch, observer, row_locked
from tests.hubharness import base_config
from tests.test_crash import hub_process
from tests.txharness import TODAY as TXDAY
from tests.txharness import mmdd

from billhub.config import DATABASE_QUERIES, DatabaseSettings
from billhub.connectors.database import DatabaseConnector, receipt_for
from billhub.connectors.database.queries import DEFAULT_SQL, build_queries
from billhub.connectors.database.schema import ddl, install, load_bills
from billhub.connectors.database.sql import SqlError, parse_statement
from billhub.errors import BillerRejected, BillerTimeout, BillerUnavailable, ConfigError
from billhub.iso8583.codec import Codec
from billhub.iso8583.de48 import parse_tlv
from billhub.iso8583.spec import load_spec
from billhub.pipeline.model import AccountStatus, PaymentOrder, PostingStatus, StatusAnswer
from billhub.simulator import messages as m
from billhub.simulator.demo_data import DemoAccount, bills_table_rows, generate_accounts
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context

TODAY = date(2026, 12, 2)
BILLER = "100003"


@pytest.fixture(params=["postgresql", "mariadb"])
def dsn(request: pytest.FixtureRequest) -> str:
    name = "pg_dsn" if request.param == "postgresql" else "mariadb_dsn"
    return str(request.getfixturevalue(name))


@pytest.fixture
def accounts() -> list[DemoAccount]:
    return generate_accounts("03", 40, 7, today=TODAY)


@pytest.fixture
async def filled(dsn: str, accounts: list[DemoAccount]) -> str:
    await install(dsn)
    await load_bills(dsn, bills_table_rows(accounts))
    return dsn


@pytest.fixture
async def conn(filled: str) -> AsyncIterator[DatabaseConnector]:
    c = DatabaseConnector(BILLER, DatabaseSettings(filled), max_concurrency=8, call_timeout=5.0)
    yield c
    await c.close()


def find(accounts: list[DemoAccount], **want: Any) -> DemoAccount:
    for a in accounts:
        if all(getattr(a, k) == v for k, v in want.items()):
            return a
    raise LookupError(want)


def active_with(accounts: list[DemoAccount], n: int) -> DemoAccount:
    return next(
        a for a in accounts if a.status == "active" and not a.partial_allowed and len(a.bills) >= n
    )


def order(
    account: DemoAccount, amount: int, pid: str = "P-1", bill_id: str | None = None, rrn: str = "1"
) -> PaymentOrder:
    return PaymentOrder(
        payment_id=pid,
        account=account.account,
        bill_id=bill_id,
        amount=amount,
        settlement_date=TODAY,
        acquirer="600001",
        rrn=rrn.rjust(12, "0"),
        channel="6013",
        paid_at=datetime(2026, 12, 2, 9, 45, 12, tzinfo=UTC),
    )


async def paid(dsn: str, account: DemoAccount) -> dict[str, int]:
    rows = await fetch(dsn, f"SELECT bill_id, paid FROM bills WHERE account = '{account.account}'")
    return {r["bill_id"]: int(r["paid"]) for r in rows}


async def conn_open(dsn: str, account: DemoAccount) -> int:
    """What the account still owes, read from the company's table."""
    rows = await fetch(
        dsn, f"SELECT amount - paid AS due FROM bills WHERE account = '{account.account}'"
    )
    return sum(int(r["due"]) for r in rows)


async def payments(dsn: str) -> list[dict[str, Any]]:
    return await fetch(dsn, "SELECT * FROM payments ORDER BY payment_id")


# ---------------------------------------------------------------------- the four questions


async def test_open_bills_are_the_companys_open_bills_oldest_first(
    conn: DatabaseConnector, accounts: list[DemoAccount]
) -> None:
    many = find(accounts, status="active", partial_allowed=False)
    for a in accounts:
        if a.status == "closed" and not a.bills:
            continue  # known only by its bills: none left (specs/READINGS.md)
        got = await conn.open_bills(a.account)
        assert got.customer_name == a.customer_name
        assert got.status is AccountStatus(a.status)
        assert got.partial_allowed == a.partial_allowed
        assert got.min_payment == (a.min_payment if a.partial_allowed else 0)
        assert [(b.bill_id, b.period, b.due_date, b.amount) for b in got.bills] == [
            (b.bill_id, b.period, b.due_date, b.amount) for b in a.bills
        ]
    assert (await conn.open_bills(many.account)).total_due == many.total_due


async def test_post_marks_the_bills_paid_and_cancel_gives_back_exactly_that(
    conn: DatabaseConnector, filled: str, accounts: list[DemoAccount]
) -> None:
    a = active_with(accounts, 2)
    receipt = await conn.post_payment(order(a, a.total_due))
    assert receipt == receipt_for("P-1")
    assert await paid(filled, a) == {b.bill_id: b.amount for b in a.bills} | {
        b.bill_id: b.amount for b in a.paid_bills
    }
    [row] = await payments(filled)
    assert (row["payment_id"], row["account"], row["amount"], row["status"], row["receipt"]) == (
        "P-1", a.account, a.total_due, "posted", receipt,
    )  # fmt: skip
    assert (row["acquirer"], row["rrn"], row["channel"]) == ("600001", "000000000001", "6013")
    assert str(row["settlement_date"]) == "2026-12-02"
    assert (await conn.open_bills(a.account)).bills == ()
    assert await conn.payment_status("P-1") == StatusAnswer(PostingStatus.POSTED, receipt)

    await conn.cancel_payment("P-1")
    await conn.cancel_payment("P-1")  # again: harmless
    assert (await conn.payment_status("P-1")).status is PostingStatus.CANCELLED
    assert [b.amount for b in (await conn.open_bills(a.account)).bills] == [
        b.amount for b in a.bills
    ]
    assert [r["status"] for r in await payments(filled)] == ["cancelled"]


async def test_a_partial_payment_settles_the_oldest_bills_first(
    conn: DatabaseConnector, filled: str, accounts: list[DemoAccount]
) -> None:
    a = find(accounts, partial_allowed=True)
    first, second = a.bills[0], a.bills[1]
    amount = first.amount + second.amount // 2
    await conn.post_payment(order(a, amount))
    left = await conn.open_bills(a.account)
    assert left.bills[0].bill_id == second.bill_id
    assert left.bills[0].amount == second.amount - second.amount // 2
    assert left.total_due == a.total_due - amount
    lines = await fetch(filled, "SELECT bill_id, amount FROM payment_bills ORDER BY bill_id")
    assert {r["bill_id"]: r["amount"] for r in lines} == {
        first.bill_id: first.amount,
        second.bill_id: second.amount // 2,
    }
    await conn.cancel_payment("P-1")
    assert (await conn.open_bills(a.account)).total_due == a.total_due


async def test_payment_status_of_a_payment_never_posted_is_unknown(
    conn: DatabaseConnector,
) -> None:
    assert (await conn.payment_status("NEVER")).status is PostingStatus.UNKNOWN
    with pytest.raises(BillerRejected) as err:
        await conn.cancel_payment("NEVER")
    assert err.value.code == "unknown_payment"


# ---------------------------------------------------------------------- refusals


async def test_each_refusal_has_its_code_and_changes_nothing(
    conn: DatabaseConnector, filled: str, accounts: list[DemoAccount]
) -> None:
    a = active_with(accounts, 2)
    paid_up = find(accounts, status="active", bills=())
    blocked = find(accounts, status="blocked")
    partial = find(accounts, partial_allowed=True)
    other = next(x for x in accounts if x.status == "active" and x.bills and x is not a)
    before = await fetch(filled, "SELECT bill_id, paid FROM bills ORDER BY bill_id")

    async def refused(o: PaymentOrder) -> str:
        with pytest.raises(BillerRejected) as err:
            await conn.post_payment(o)
        return err.value.code

    with pytest.raises(BillerRejected) as unknown:
        await conn.open_bills("0399999999")
    assert unknown.value.code == "unknown_account"
    assert await refused(replace(order(a, 100, "P-x"), account="0399999999")) == "unknown_account"
    assert await refused(order(blocked, blocked.total_due, "P-b")) == "account_blocked"
    assert await refused(order(paid_up, 100, "P-n")) == "nothing_due"
    paid_bill = paid_up.paid_bills[0].bill_id
    assert await refused(order(paid_up, 100, "P-p", bill_id=paid_bill)) == "bill_not_open"
    theirs = other.bills[0]
    assert await refused(order(a, theirs.amount, "P-o", bill_id=theirs.bill_id)) == "bill_not_open"
    assert await refused(order(a, a.total_due + 1, "P-m")) == "amount_not_acceptable"
    assert await refused(order(a, a.total_due - 1, "P-l")) == "amount_not_acceptable"
    one = a.bills[0]
    assert await refused(order(a, one.amount + 1, "P-i", bill_id=one.bill_id)) == (
        "amount_not_acceptable"
    )
    below = min(partial.min_payment, partial.total_due) - 1
    assert await refused(order(partial, below, "P-min")) == "amount_not_acceptable"
    assert await refused(order(partial, partial.total_due + 1, "P-max")) == "amount_not_acceptable"

    assert await payments(filled) == []
    assert await fetch(filled, "SELECT bill_id, paid FROM bills ORDER BY bill_id") == before

    await conn.post_payment(order(a, one.amount, "P-ok", bill_id=one.bill_id))
    other_content = order(a, a.bills[1].amount, "P-ok", bill_id=a.bills[1].bill_id)
    assert await refused(other_content) == "payment_id_conflict"
    await conn.cancel_payment("P-ok")
    assert await refused(order(a, one.amount, "P-ok", bill_id=one.bill_id)) == "payment_cancelled"
    assert len(await payments(filled)) == 1
    assert (await paid(filled, a))[one.bill_id] == 0


# ---------------------------------------------------------------------- exactly once


async def test_the_same_payment_id_twice_is_one_posting(
    conn: DatabaseConnector, filled: str, accounts: list[DemoAccount]
) -> None:
    a = active_with(accounts, 1)
    o = order(a, a.total_due)
    first = await conn.post_payment(o)
    again = await conn.post_payment(replace(o, paid_at=datetime.now(UTC)))  # may differ
    assert again == first
    concurrent = await asyncio.gather(*(conn.post_payment(o) for _ in range(8)))
    assert set(concurrent) == {first}
    assert len(await payments(filled)) == 1
    lines = await fetch(filled, "SELECT payment_id, bill_id, amount FROM payment_bills")
    assert len(lines) == len(a.bills)
    assert sum((await paid(filled, a)).values()) == a.total_due + sum(
        b.amount for b in a.paid_bills
    )


async def test_concurrent_payments_of_one_bill_post_one(
    conn: DatabaseConnector, filled: str, accounts: list[DemoAccount]
) -> None:
    a = active_with(accounts, 1)
    bill = a.bills[0]
    results = await asyncio.gather(
        *(
            conn.post_payment(order(a, bill.amount, f"P-{i}", bill_id=bill.bill_id, rrn=str(i)))
            for i in range(6)
        ),
        return_exceptions=True,
    )
    receipts = [r for r in results if isinstance(r, str)]
    refusals = [r.code for r in results if isinstance(r, BillerRejected)]
    assert len(receipts) == 1 and refusals == ["bill_not_open"] * 5
    assert (await paid(filled, a))[bill.bill_id] == bill.amount
    assert len(await payments(filled)) == 1


# ---------------------------------------------------------------------- faults


async def test_a_lost_connection_mid_payment_is_unavailable_and_the_pool_reconnects(
    conn: DatabaseConnector, filled: str, accounts: list[DemoAccount]
) -> None:
    a = active_with(accounts, 1)
    o = order(a, a.total_due)
    async with row_locked(filled, a.bills[0].bill_id) as holder:
        posting = asyncio.ensure_future(conn.post_payment(o))
        await holder.terminate(await holder.wait_for_waiter())
        with pytest.raises(BillerUnavailable) as err:
            await posting
    assert "connection" in str(err.value)
    assert (await conn.payment_status(o.payment_id)).status is PostingStatus.UNKNOWN
    assert await payments(filled) == []
    assert (await paid(filled, a))[a.bills[0].bill_id] == 0
    assert await conn.post_payment(o) == receipt_for(o.payment_id)  # a new connection
    assert len(await payments(filled)) == 1


async def test_idle_pooled_connections_the_server_closed_are_replaced(
    conn: DatabaseConnector, filled: str, accounts: list[DemoAccount]
) -> None:
    """A database restart or a KILL ends the pool's idle connections: the next calls
    get new ones, and nothing is answered unavailable for it."""
    a = active_with(accounts, 1)
    await asyncio.gather(*(conn.open_bills(a.account) for _ in range(4)))  # fill the pool
    seen = observer(filled)
    idle = await seen.idle_backends()
    assert idle
    for backend in idle:
        await seen.kill(backend)
    assert (await conn.open_bills(a.account)).total_due == a.total_due
    assert await conn.post_payment(order(a, a.total_due)) == receipt_for("P-1")
    assert len(await payments(filled)) == 1


async def test_a_call_over_its_budget_is_a_timeout_and_commits_nothing(
    filled: str, accounts: list[DemoAccount]
) -> None:
    a = active_with(accounts, 1)
    c = DatabaseConnector(BILLER, DatabaseSettings(filled), max_concurrency=2, call_timeout=0.5)
    try:
        async with row_locked(filled, a.bills[0].bill_id):
            with pytest.raises(BillerTimeout):
                await c.post_payment(order(a, a.total_due))
        assert await payments(filled) == []
        assert (await c.open_bills(a.account)).total_due == a.total_due  # the pool goes on
    finally:
        await c.close()


async def test_a_server_that_is_down_is_unavailable() -> None:
    for down in ("postgresql://postgres@127.0.0.1:1/x", "mysql://root@127.0.0.1:1/x"):
        c = DatabaseConnector(BILLER, DatabaseSettings(down), max_concurrency=1, call_timeout=5)
        with pytest.raises(BillerUnavailable):
            await c.open_bills("0300000001")
        await c.close()


async def test_a_wrong_user_is_reported_as_a_configuration_fault(dsn: str) -> None:
    wrong = dsn.replace("postgres@", "no_such_role@").replace("root@", "no_such_user@")
    told: list[str] = []
    c = DatabaseConnector(
        BILLER, DatabaseSettings(wrong), max_concurrency=1, call_timeout=5,
        on_auth_failure=told.append,
    )  # fmt: skip
    with pytest.raises(BillerUnavailable) as err:
        await c.open_bills("0300000001")
    await c.close()
    assert told == [BILLER]
    assert "auth" in str(err.value) and "no_such" not in str(err.value)


async def test_a_query_that_does_not_fit_the_schema_is_unavailable(filled: str) -> None:
    settings = DatabaseSettings(filled, {"open_bills": "SELECT * FROM no_table WHERE a = :account"})
    c = DatabaseConnector(BILLER, settings, max_concurrency=1, call_timeout=5)
    with pytest.raises(BillerUnavailable) as err:
        await c.open_bills("0300000001")
    await c.close()
    assert "sql" in str(err.value)


async def test_a_companys_own_sql_replaces_the_default(
    filled: str, accounts: list[DemoAccount]
) -> None:
    """A company with its own view: only the SQL changes, the answers do not."""
    await fetch(
        filled,
        "CREATE VIEW open_items AS SELECT account AS acct, customer_name AS name,"
        " account_status AS st, partial_allowed AS pa, min_payment AS mn, bill_id AS id,"
        " period AS per, due_date AS due_on, amount - paid AS left_to_pay FROM bills",
    )
    sql = (
        "SELECT name AS customer_name, st AS account_status, pa AS partial_allowed,"
        " mn AS min_payment, id AS bill_id, per AS period, due_on AS due_date,"
        " left_to_pay AS due FROM open_items WHERE acct = :account"
        " ORDER BY per, due_on -- oldest first: ':' in a comment is no parameter"
    )
    c = DatabaseConnector(
        BILLER, DatabaseSettings(filled, {"open_bills": sql}), max_concurrency=1, call_timeout=5
    )
    try:
        a = active_with(accounts, 2)
        got = await c.open_bills(a.account)
        assert [b.bill_id for b in got.bills] == [b.bill_id for b in a.bills]
    finally:
        await c.close()


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sqlite:///x.db", "must start with postgresql:// or mysql://"),
        ("postgresql://u:secret-pw@db", "names no database"),
        ("mysql://u:secret-pw@db:port/x", "port not a number"),
        ("postgresql://u:secret-pw@db/x?sslmod=require", "unknown option 'sslmod'"),
        ("mysql://u:secret-pw@/x", "names no host"),
    ],
)
def test_a_bad_dsn_is_one_config_error_naming_the_biller_and_key(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        DatabaseConnector(BILLER, DatabaseSettings(text), max_concurrency=1, call_timeout=1)
    assert err.value.key == f"biller {BILLER}: database.dsn"
    assert reason in err.value.reason
    assert "secret-pw" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "sql", "reason"),
    [
        ("open_bills", "SELECT * FROM bills WHERE account = :acount", "unknown parameter :acount"),
        ("pay_bill", "UPDATE bills SET paid = paid + :amount WHERE bill_id = :bill", ":bill "),
        ("open_bills", "SELECT * FROM bills", "must use :account"),
        ("open_bills", "SELECT * FROM bills WHERE account = $1", "positional placeholder"),
        ("payment_status", "SELECT 1 WHERE :payment_id = 'x; SELECT 2", "unclosed"),
        ("cancel_payment", "DELETE FROM p WHERE id = :payment_id; DROP TABLE p", "one statement"),
    ],
)
def test_a_bad_query_is_one_config_error_naming_the_biller_and_key(
    name: str, sql: str, reason: str
) -> None:
    settings = DatabaseSettings("postgresql://u@db/x", {name: sql})
    with pytest.raises(ConfigError) as err:
        DatabaseConnector(BILLER, settings, max_concurrency=1, call_timeout=1)
    assert err.value.key == f"biller {BILLER}: database.queries.{name}"
    assert reason in err.value.reason, err.value.reason


def test_the_config_knows_every_statement_the_connector_runs() -> None:
    assert set(DATABASE_QUERIES) == set(DEFAULT_SQL)
    for dialect in ("postgresql", "mysql"):
        build_queries(BILLER, {}, dialect)  # the shipped SQL passes its own checks


@pytest.mark.parametrize(
    ("sql", "dialect", "text", "order"),
    [
        ("a = :x AND b = :y OR c = :x", "postgresql", "a = $1 AND b = $2 OR c = $1", ("x", "y")),
        ("a = :x AND b = :y OR c = :x", "mysql", "a = %s AND b = %s OR c = %s", ("x", "y", "x")),
        ("a::text = ':x' AND b = :y", "postgresql", "a::text = ':x' AND b = $1", ("y",)),
        ("$$ :x $$ || $t$ :x $t$ = :y", "postgresql", "$$ :x $$ || $t$ :x $t$ = $1", ("y",)),
        ("`:x` LIKE '50%' AND b = :y # :z", "mysql", "`:x` LIKE '50%%' AND b = %s # :z", ("y",)),
        ("'it\\'s :x' = :y /* :z */", "mysql", "'it\\'s :x' = %s /* :z */", ("y",)),
        ("a = :x;  -- done", "postgresql", "a = $1  -- done", ("x",)),
    ],
)
def test_named_parameters_become_the_drivers_positions(
    sql: str, dialect: Any, text: str, order: tuple[str, ...]
) -> None:
    st = parse_statement(sql, dialect)
    assert (st.text, st.order) == (text, order)


def test_sql_that_is_not_one_statement_is_refused() -> None:
    for bad in ("", "   ", "a = ?", "a = %s", "SELECT 1; SELECT 2", "a = 'x"):
        with pytest.raises(SqlError):
            parse_statement(bad, "mysql")


# ---------------------------------------------------------------------- end to end


def _journal(db: Path, rrn: str) -> dict[str, Any] | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute(
            "SELECT payment_id, state, response_code, resolution FROM payments WHERE rrn = ?",
            (rrn,),
        ).fetchone()
        return dict(row) if row is not None else None
    finally:
        conn.close()


async def _until(check: Any, what: str) -> Any:
    """Poll ``check`` (an async callable) until it returns something true; a minute at most."""
    for _ in range(600):
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


async def test_a_hub_process_serves_a_database_biller_over_tls(
    filled: str, accounts: list[DemoAccount], tmp_path: Path, pki: Any
) -> None:
    """``billhub serve`` with a database biller, the switch simulator over mutual TLS: an
    inquiry, a payment and its repeat, a reversal, and a payment whose database
    connection is killed mid-posting (91, then resolved); checked in the company's tables."""
    db = tmp_path / "journal.db"
    cfg = tmp_path / "billhub.toml"
    cfg.write_text(
        base_config(pki, db, admin=False)
        + f"""
[resolver]
quiet_period_s = 1.0
backoff_base_s = 0.05
backoff_max_s = 0.5
poll_interval_s = 0.1
[[billers]]
code = "{BILLER}"
name = "Aleppo Electricity"
kind = "database"
budget_s = 5
max_concurrency = 4
[billers.database]
dsn = "{filled}"
""",
        "utf-8",
    )
    codec = Codec(load_spec())
    a = active_with(accounts, 2)
    b = next(x for x in accounts if x.status == "active" and x.bills and x is not a)
    sdate = mmdd(TXDAY)
    hub, listening = hub_process(cfg, tmp_path / "hub.log")
    link = None
    try:
        ctx = client_context(pki.switch_cert, pki.switch_key, pki.hub_ca_cert)
        link = await SwitchLink.connect("127.0.0.1", int(listening["port"]), ctx, codec)
        assert (await link.sign_on()).fields[39] == "00"

        inq = await link.request(m.inquiry(BILLER, a.account, "000000000001"))
        assert inq.fields[39] == "00" and int(inq.fields[4]) == a.total_due
        assert parse_tlv(inq.fields[48])["CN"] == a.customer_name

        pay = m.payment(BILLER, a.account, "000000000002", a.total_due, sdate)
        first = await link.request(pay)
        assert first.fields[39] == "00"
        receipt = parse_tlv(first.fields[48])["RN"]
        again = await link.request(m.repeat(pay))
        assert (again.fields[39], parse_tlv(again.fields[48])["RN"]) == ("00", receipt)
        [row] = await payments(filled)
        assert (row["receipt"], row["status"], row["amount"]) == (receipt, "posted", a.total_due)
        assert (await conn_open(filled, a)) == 0

        pay.fields[7], pay.fields[11] = first.fields[7], first.fields[11]
        assert (await link.request(m.reversal(pay))).fields[39] == "00"

        async def cancelled() -> bool:
            return [r["status"] for r in await payments(filled)] == ["cancelled"]

        await _until(cancelled, "the resolver cancelled the reversed payment in the table")
        assert await conn_open(filled, a) == a.total_due

        lost = m.payment(BILLER, b.account, "000000000003", b.total_due, sdate)
        async with row_locked(filled, b.bills[0].bill_id) as holder:
            answer = asyncio.ensure_future(link.request(lost))
            await holder.terminate(await holder.wait_for_waiter())
            assert (await answer).fields[39] == "91"

        async def settled() -> dict[str, Any] | None:
            j = _journal(db, "000000000003")
            return j if j is not None and j["resolution"] is not None else None

        j = await _until(settled, "the resolver settled the uncertain payment")
        assert (j["state"], j["response_code"], j["resolution"]) == (
            "uncertain", "91", "never_posted",
        )  # fmt: skip
        assert [r["payment_id"] for r in await payments(filled)] == [row["payment_id"]]
        assert await conn_open(filled, b) == b.total_due

        fresh = m.payment(BILLER, b.account, "000000000004", b.total_due, sdate)
        assert (await link.request(fresh)).fields[39] == "00", "the pool reconnected"
        assert await conn_open(filled, b) == 0
        assert len(await payments(filled)) == 2
    finally:
        if link is not None:
            await link.close()
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=20)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait(timeout=10)


@pytest.mark.parametrize(
    ("database", "key"),
    [
        ('dsn = "mysql://root:hunter2@db.internal:3306"', "database.dsn"),
        (
            'dsn = "postgresql://u@db/x"\n'
            'queries = { open_bills = "SELECT * FROM bills WHERE account = :acount" }',
            "database.queries.open_bills",
        ),
    ],
)
def test_serve_stops_with_one_line_naming_the_biller_and_key(
    database: str, key: str, tmp_path: Path, pki: Any
) -> None:
    cfg = tmp_path / "billhub.toml"
    cfg.write_text(
        base_config(pki, tmp_path / "journal.db", admin=False)
        + f'[[billers]]\ncode = "{BILLER}"\nname = "Aleppo"\nkind = "database"\n'
        + f"[billers.database]\n{database}\n",
        "utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "billhub.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"billhub: error: biller {BILLER}: {key}: ")
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "journal.db").exists(), "nothing was opened"


# ---------------------------------------------------------------------- demo and set-up


def test_the_demo_shows_a_database_biller_when_given_one(pg_dsn: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "billhub.cli", "demo", "--dir", str(tmp_path / "demo"),
         "--database-biller", pg_dsn],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    aleppo = [line for line in lines if "Aleppo (database)" in line]
    assert aleppo and " 00 " in aleppo[0]
    assert any("the database's payments table now says 'cancelled'" in line for line in lines)
    rows = asyncio.run(fetch(pg_dsn, "SELECT status FROM payments"))
    assert [r["status"] for r in rows] == ["cancelled"]
    assert "${BILLHUB_DEMO_BILLER_DSN}" in (tmp_path / "demo" / "billhub.toml").read_text()


def test_biller_db_fills_the_default_schema_with_the_demo_subscribers(mariadb_dsn: str) -> None:
    cmd = [sys.executable, "-m", "billhub.cli", "biller-db", "--dsn", mariadb_dsn,
           "--accounts", "60", "--seed", "4", "--prefix", "03", "--today", TODAY.isoformat()]  # fmt: skip
    for _ in range(2):  # again: the same rows, not twice as many
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    want = list(bills_table_rows(generate_accounts("03", 60, 4, today=TODAY)))
    rows = asyncio.run(fetch(mariadb_dsn, "SELECT bill_id, amount, paid FROM bills"))
    assert sorted((r["bill_id"], r["amount"], r["paid"]) for r in rows) == sorted(
        (w[0], w[8], w[9]) for w in want
    )


def test_the_spec_holds_the_ddl_the_package_ships() -> None:
    """specs/biller-database.md is what a company runs: it must be the shipped DDL."""
    text = (Path(__file__).parent.parent / "specs" / "biller-database.md").read_text("utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```sql\n")[1:]]
    assert blocks == [ddl("postgresql"), ddl("mysql")]
