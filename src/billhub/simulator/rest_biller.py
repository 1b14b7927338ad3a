"""A demo electricity biller speaking the online REST contract of BILLERS.md section 1.

The hub's REST connector, its uncertain-payment resolution and the benchmarks
need a biller that behaves exactly like the contract, over a real socket, and
that can be made to misbehave on demand.  This is that biller: an aiohttp server
over an in-memory ledger seeded from :mod:`billhub.simulator.demo_data`.

What it promises, so that tests can rely on it:

* Every refusal is a 4xx with ``{"error": CODE, "message": str}`` and the CODE of
  the BILLERS.md table; a request outside the contract (bad payment id, bad body)
  gets ``400 invalid_request``; a wrong or missing bearer token ``401
  unauthorized``.  A refusal changes nothing.
* A payment is applied to the bills at most once per payment id, whatever the
  repeats, and ``GET /_admin/ledger`` shows how many times each one was applied
  (``post_count``) so a test can assert "exactly one posting".
* The ledger check-and-apply of a PUT runs without an ``await`` in between, so
  concurrent repeats of one payment id cannot both apply it.
* Every call is O(bills of one account): dictionaries by account, bill id and
  payment id, no scan of the ledger, so benchmarks measure the hub.

Fault injection (:class:`Faults`), set at construction or at run time through
``POST /_admin/faults`` (same token; the admin endpoints are never faulted, so a
test can always switch a fault off again):

``latency_ms``        delay before every call is handled.
``fail_status``       answer every call with this status (e.g. 503), before auth.
``post_delay_ms``     a PUT is processed (and recorded) first, then answered late.
``drop_after_post``   a PUT is processed (and recorded), then the connection is
                      dropped without an answer.
``hang``              a PUT is never answered and nothing is recorded.

The server also runs on its own for benchmarks::

    python -m billhub.simulator.rest_biller --port 0 --token T --seed 1 --accounts 1000 \\
        --prefix 01 --today 2026-11-24

prints ``listening 127.0.0.1:PORT`` once it accepts connections and serves until
SIGTERM or SIGINT, then exits 0.  The driver gets the same subscribers by calling
``generate_accounts(prefix, accounts, seed, today=today)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hmac
import json
import os
import re
import signal
import ssl
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from billhub.settlement.calendar import parse_day
from billhub.simulator.demo_data import AccountStatus, DemoAccount, generate_accounts

__all__ = [
    "Faults",
    "Refusal",
    "RestBiller",
    "main",
    "run_rest_biller",
]

PaymentStatus = Literal["posted", "cancelled"]

_PAYMENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RECEIPT_PREFIX_RE = re.compile(r"[A-Za-z0-9]{1,8}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PAID_AT_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|\+00:00)"
)
_CHANNEL_RE = re.compile(r"[0-9]{4}")
_PAYMENT_FIELDS = frozenset(
    {"account", "bill_id", "amount", "settlement_date", "acquirer", "rrn", "channel", "paid_at"}
)
_FAULT_FIELDS = frozenset({"latency_ms", "post_delay_ms", "fail_status", "drop_after_post", "hang"})
_ADMIN_PREFIX = "/_admin/"
_MAX_BODY = 64 * 1024
_SHUTDOWN_TIMEOUT = 5.0

_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


class Refusal(Exception):
    """A refusal of the contract: the HTTP status and the ``error`` CODE to answer.

    Raised by the ledger before it changes anything, so a refused call leaves the
    ledger as it was.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Faults:
    """The misbehaviour to inject; the default is a well-behaved biller.

    Raises ``ValueError`` on construction for negative delays or a
    ``fail_status`` outside 400-599, so a typo in a test fails loudly instead of
    silently testing a healthy biller.
    """

    latency_ms: int = 0
    post_delay_ms: int = 0
    fail_status: int | None = None
    drop_after_post: bool = False
    hang: bool = False

    def __post_init__(self) -> None:
        for name in ("latency_ms", "post_delay_ms"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be an int >= 0")
        if self.fail_status is not None and (
            not _is_int(self.fail_status) or not 400 <= self.fail_status <= 599
        ):
            raise ValueError("fail_status must be null or an int in 400-599")
        for name in ("drop_after_post", "hang"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool")

    @classmethod
    def from_json(cls, obj: object) -> Faults:
        """Build from the admin endpoint's JSON; keys left out take their default.

        Raises ``ValueError`` for a non-object, an unknown key or a bad value.
        """
        if not isinstance(obj, dict):
            raise ValueError("faults must be a JSON object")
        unknown = set(obj) - _FAULT_FIELDS
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        return cls(**obj)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True, eq=False)
class _Bill:
    bill_id: str
    period: str
    due_date: str
    remaining: int


@dataclass(slots=True, eq=False)
class _Account:
    customer_name: str
    status: AccountStatus
    partial_allowed: bool
    min_payment: int
    bills: list[_Bill]
    by_id: dict[str, _Bill]

    def open_bills(self) -> list[_Bill]:
        return [b for b in self.bills if b.remaining > 0]


@dataclass(frozen=True, slots=True)
class _Content:
    """What makes two PUTs of one payment id "the same payment" (``paid_at`` excluded)."""

    account: str
    bill_id: str | None
    amount: int
    settlement_date: str
    acquirer: str
    rrn: str
    channel: str


@dataclass(slots=True, eq=False)
class _Payment:
    payment_id: str
    content: _Content
    paid_at: str
    receipt: str
    status: PaymentStatus = "posted"
    allocations: list[tuple[_Bill, int]] = field(default_factory=list)
    post_count: int = 0
    cancel_count: int = 0
    repeat_count: int = 0
    #: Every status and cancel request for the payment, answered or no-op: how a test
    #: sees that two hub instances never worked the same resolver task.
    status_calls: int = 0
    cancel_calls: int = 0


class _Ledger:
    """The biller's books: synchronous, so each call is atomic on the event loop."""

    def __init__(self, accounts: Iterable[DemoAccount], receipt_prefix: str) -> None:
        self._accounts: dict[str, _Account] = {}
        self._payments: dict[str, _Payment] = {}
        self._receipt_prefix = receipt_prefix
        self._receipt_seq = 0
        bill_ids: set[str] = set()
        for acc in accounts:
            if acc.account in self._accounts:
                raise ValueError("duplicate account number in the demo data")
            bills = [
                _Bill(b.bill_id, b.period, b.due_date.isoformat(), b.amount) for b in acc.bills
            ]
            for b in bills:
                if b.bill_id in bill_ids:
                    raise ValueError("duplicate bill id in the demo data")
                bill_ids.add(b.bill_id)
            self._accounts[acc.account] = _Account(
                customer_name=acc.customer_name,
                status=acc.status,
                partial_allowed=acc.partial_allowed,
                min_payment=acc.min_payment if acc.partial_allowed else 0,
                bills=bills,
                by_id={b.bill_id: b for b in bills},
            )

    def knows(self, account: str) -> bool:
        return account in self._accounts

    def bills(self, account: str) -> dict[str, Any]:
        acc = self._accounts.get(account)
        if acc is None:
            raise Refusal(404, "unknown_account", "no such account")
        return {
            "customer_name": acc.customer_name,
            "status": acc.status,
            "partial_allowed": acc.partial_allowed,
            "min_payment": acc.min_payment,
            "bills": [
                {
                    "bill_id": b.bill_id,
                    "period": b.period,
                    "due_date": b.due_date,
                    "amount": b.remaining,
                }
                for b in acc.open_bills()
            ],
        }

    def post(self, payment_id: str, content: _Content, paid_at: str) -> str:
        """Apply a payment once and return its receipt; a same-content repeat returns it again."""
        existing = self._payments.get(payment_id)
        if existing is not None:
            if existing.content != content:
                raise Refusal(409, "payment_id_conflict", "payment id used with other content")
            if existing.status == "cancelled":
                raise Refusal(409, "payment_cancelled", "payment was cancelled")
            existing.repeat_count += 1
            return existing.receipt
        acc = self._accounts.get(content.account)
        if acc is None:
            raise Refusal(404, "unknown_account", "no such account")
        if acc.status != "active":
            raise Refusal(403, "account_blocked", f"account is {acc.status}")
        if content.bill_id is not None:
            bill = acc.by_id.get(content.bill_id)
            if bill is None or bill.remaining == 0:
                raise Refusal(409, "bill_not_open", "bill is paid or not this account's")
            targets = [bill]
        else:
            targets = acc.open_bills()
            if not targets:
                raise Refusal(409, "nothing_due", "nothing left to pay")
        due = sum(b.remaining for b in targets)
        if acc.partial_allowed:
            acceptable = min(acc.min_payment, due) <= content.amount <= due
        else:
            acceptable = content.amount == due
        if not acceptable:
            raise Refusal(422, "amount_not_acceptable", "amount not acceptable")
        self._receipt_seq += 1
        payment = _Payment(
            payment_id=payment_id,
            content=content,
            paid_at=paid_at,
            receipt=f"{self._receipt_prefix}-{self._receipt_seq:08d}",
        )
        left = content.amount
        for b in targets:  # oldest first
            take = min(left, b.remaining)
            if take == 0:
                break
            b.remaining -= take
            payment.allocations.append((b, take))
            left -= take
        payment.post_count += 1
        self._payments[payment_id] = payment
        return payment.receipt

    def cancel(self, payment_id: str) -> None:
        """Give the payment's amounts back to its bills; cancelling again changes nothing."""
        payment = self._payments.get(payment_id)
        if payment is None:
            raise Refusal(404, "unknown_payment", "payment never posted")
        payment.cancel_calls += 1
        if payment.status == "cancelled":
            return
        for b, take in payment.allocations:
            b.remaining += take
        payment.status = "cancelled"
        payment.cancel_count += 1

    def status(self, payment_id: str) -> dict[str, str]:
        payment = self._payments.get(payment_id)
        if payment is None:
            raise Refusal(404, "unknown_payment", "payment never posted")
        payment.status_calls += 1
        return {"status": payment.status, "receipt": payment.receipt}

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "payment_id": p.payment_id,
                **asdict(p.content),
                "paid_at": p.paid_at,
                "receipt": p.receipt,
                "status": p.status,
                "post_count": p.post_count,
                "cancel_count": p.cancel_count,
                "repeat_count": p.repeat_count,
                "status_calls": p.status_calls,
                "cancel_calls": p.cancel_calls,
            }
            for p in self._payments.values()
        ]


class RestBiller:
    """The demo biller's server; one instance serves one ledger on one port.

    ``start()`` binds and returns the port (0 picks a free one); ``stop()``
    releases hung and delayed requests by dropping their connections, closes the
    listener and is idempotent.  Pass ``ssl_context`` (a server context; set
    ``verify_mode = CERT_REQUIRED`` and load a CA for mutual TLS) to serve HTTPS.
    Raises ``ValueError`` for a bad token, receipt prefix or duplicate demo data.
    """

    def __init__(
        self,
        accounts: Iterable[DemoAccount],
        token: str,
        *,
        faults: Faults | None = None,
        ssl_context: ssl.SSLContext | None = None,
        receipt_prefix: str = "RC",
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        if not _RECEIPT_PREFIX_RE.fullmatch(receipt_prefix):
            raise ValueError("the receipt prefix must be 1 to 8 ASCII letters or digits")
        self._ledger = _Ledger(accounts, receipt_prefix)
        self._token = token.encode()
        self._faults = faults if faults is not None else Faults()
        self._decisions: dict[str, tuple[dict[str, Any], str]] = {}
        self._ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._host = ""
        self._port: int | None = None

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults at once; requests already past a fault's point are unaffected."""
        self._faults = faults

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the running server; raises ``RuntimeError`` before ``start()``."""
        if self._port is None:
            raise RuntimeError("biller not started")
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    def ledger_snapshot(self) -> list[dict[str, Any]]:
        """Every payment ever posted, as ``GET /_admin/ledger`` lists them."""
        return self._ledger.snapshot()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        if self._runner is not None:
            raise RuntimeError("biller already started")

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(middlewares=[middleware], client_max_size=_MAX_BODY)
        app.router.add_get("/accounts/{account}/bills", self._get_bills)
        app.router.add_put("/payments/{payment_id}", self._put_payment)
        app.router.add_delete("/payments/{payment_id}", self._delete_payment)
        app.router.add_get("/payments/{payment_id}", self._get_payment)
        for resource in ("installment-plans", "bill-corrections"):  # specs/BILLERS-requests.md
            app.router.add_put(f"/{resource}/{{ticket}}", self._put_decision)
            app.router.add_get(f"/{resource}/{{ticket}}", self._get_decision)
        app.router.add_get("/_admin/faults", self._get_faults)
        app.router.add_post("/_admin/faults", self._post_faults)
        app.router.add_get("/_admin/ledger", self._get_ledger)
        # No access log: at benchmark rates it would cost more than the handlers.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=self._ssl_context, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._stopping.clear()
        self._runner = runner
        bound = runner.addresses[0]
        self._host, self._port = str(bound[0]), int(bound[1])
        return self._port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()

    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path.startswith(_ADMIN_PREFIX):
                self._authorize(request)
                return await handler(request)
            faults = self._faults
            if faults.latency_ms and await self._pause(faults.latency_ms):
                return _drop(request)
            if faults.fail_status is not None:
                return _error(faults.fail_status, "unavailable", "fault injected")
            self._authorize(request)
            return await handler(request)
        except Refusal as r:
            return _error(r.status, r.code, r.message)
        except web.HTTPException as exc:
            # The router's own 404/405/413 would be text; the hub expects JSON errors.
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)

    def _authorize(self, request: web.Request) -> None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        # The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
        if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.encode(), self._token):
            raise Refusal(401, "unauthorized", "missing or wrong bearer token")

    async def _pause(self, ms: int) -> bool:
        """Sleep ``ms``; True if ``stop()`` cut it short (the caller then drops the request)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), ms / 1000)
        return self._stopping.is_set()

    async def _get_bills(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self._ledger.bills(request.match_info["account"]))

    async def _put_payment(self, request: web.Request) -> web.StreamResponse:
        faults = self._faults
        if faults.hang:
            await self._stopping.wait()
            return _drop(request)
        payment_id = _payment_id(request)
        content, paid_at = _parse_payment(await _read_json(request))
        try:
            receipt = self._ledger.post(payment_id, content, paid_at)
            answer = _json(200, {"receipt": receipt, "status": "posted"})
        except Refusal as r:
            answer = _error(r.status, r.code, r.message)
        if faults.post_delay_ms and await self._pause(faults.post_delay_ms):
            return _drop(request)
        if faults.drop_after_post:
            return _drop(request)
        return answer

    async def _delete_payment(self, request: web.Request) -> web.StreamResponse:
        self._ledger.cancel(_payment_id(request))
        return _json(200, {"status": "cancelled"})

    async def _get_payment(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self._ledger.status(_payment_id(request)))

    def decisions_snapshot(self) -> dict[str, dict[str, Any]]:
        """Plans and corrections the hub handed over, by ``<resource>/<ticket>``."""
        return {k: dict(v[0], reference=v[1]) for k, v in self._decisions.items()}

    async def _put_decision(self, request: web.Request) -> web.StreamResponse:
        """A plan or a correction a company decided (specs/BILLERS-requests.md)."""
        resource = request.path.strip("/").split("/")[0]
        key = f"{resource}/{request.match_info['ticket']}"
        body = await _read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("account"), str):
            raise Refusal(400, "invalid_request", "a JSON object with an account")
        if not self._ledger.knows(body["account"]):
            raise Refusal(404, "unknown_account", "no such account")
        if resource == "installment-plans":
            items = body.get("installments")
            if not isinstance(items, list) or not all(
                isinstance(i, dict) and _is_int(i.get("amount")) for i in items
            ):
                raise Refusal(422, "plan_invalid", "installments must be a list of amounts")
            if sum(i["amount"] for i in items) != body.get("total"):
                raise Refusal(422, "plan_invalid", "the installments do not sum to the total")
        seen = self._decisions.get(key)
        if seen is not None:
            if seen[0] != body:
                raise Refusal(409, "ticket_conflict", "this ticket was sent with other content")
            return _json(200, {"status": "accepted", "reference": seen[1]})
        reference = (
            f"{'IP' if resource == 'installment-plans' else 'BC'}-{len(self._decisions) + 1:06d}"
        )
        self._decisions[key] = (body, reference)
        return _json(200, {"status": "accepted", "reference": reference})

    async def _get_decision(self, request: web.Request) -> web.StreamResponse:
        resource = request.path.strip("/").split("/")[0]
        seen = self._decisions.get(f"{resource}/{request.match_info['ticket']}")
        if seen is None:
            raise Refusal(404, "unknown_ticket", "no such ticket")
        return _json(200, {"status": "accepted", "reference": seen[1]})

    async def _get_faults(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self._faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            faults = Faults.from_json(await _read_json(request))
        except (TypeError, ValueError) as exc:
            raise Refusal(400, "invalid_request", str(exc)) from None
        self._faults = faults
        return _json(200, faults.to_json())

    async def _get_ledger(self, request: web.Request) -> web.StreamResponse:
        return _json(200, {"payments": self._ledger.snapshot()})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json(status: int, body: object) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, {"error": code, "message": message})


def _drop(request: web.Request) -> web.StreamResponse:
    """Abort the connection so the client gets no answer at all.

    aiohttp then fails to write the returned response with a ``ConnectionError``,
    which it treats as a client that went away: nothing is logged.
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=204)


def _payment_id(request: web.Request) -> str:
    payment_id = request.match_info["payment_id"]
    if not _PAYMENT_ID_RE.fullmatch(payment_id):
        raise Refusal(400, "invalid_request", "payment id must be 1-64 of A-Z a-z 0-9 - _")
    return payment_id


async def _read_json(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Refusal(400, "invalid_request", "body is not JSON") from None


def _parse_payment(obj: object) -> tuple[_Content, str]:
    """Check a PUT body against the contract; raise ``Refusal(400)`` naming the first bad key."""

    def bad(key: str, why: str) -> Refusal:
        return Refusal(400, "invalid_request", f"{key}: {why}")

    if not isinstance(obj, dict):
        raise Refusal(400, "invalid_request", "body must be a JSON object")
    missing = _PAYMENT_FIELDS - obj.keys()
    if missing:
        raise bad(sorted(missing)[0], "missing")
    extra = obj.keys() - _PAYMENT_FIELDS
    if extra:
        raise bad(sorted(extra)[0], "not part of the contract")
    for key in ("account", "acquirer", "rrn"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise bad(key, "must be a non-empty string")
    bill_id = obj["bill_id"]
    if bill_id is not None and (not isinstance(bill_id, str) or not bill_id):
        raise bad("bill_id", "must be null or a non-empty string")
    amount = obj["amount"]
    if not _is_int(amount) or amount <= 0:
        raise bad("amount", "must be an integer of minor units > 0")
    settlement_date = obj["settlement_date"]
    if not isinstance(settlement_date, str) or not _valid_date(settlement_date):
        raise bad("settlement_date", "must be YYYY-MM-DD")
    channel = obj["channel"]
    if not isinstance(channel, str) or not _CHANNEL_RE.fullmatch(channel):
        raise bad("channel", "must be 4 digits")
    paid_at = obj["paid_at"]
    if not isinstance(paid_at, str) or not _valid_paid_at(paid_at):
        raise bad("paid_at", "must be an RFC 3339 UTC time")
    content = _Content(
        account=obj["account"],
        bill_id=bill_id,
        amount=amount,
        settlement_date=settlement_date,
        acquirer=obj["acquirer"],
        rrn=obj["rrn"],
        channel=channel,
    )
    return content, paid_at


def _valid_date(text: str) -> bool:
    if not _DATE_RE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _valid_paid_at(text: str) -> bool:
    if not _PAID_AT_RE.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


async def run_rest_biller(
    accounts: Iterable[DemoAccount],
    token: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
    ssl_context: ssl.SSLContext | None = None,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[str, int], None] | None = None,
    receipt_prefix: str = "RC",
) -> None:
    """Serve until ``stop`` is set (or forever, until cancelled), then shut down cleanly.

    ``on_listening(host, port)`` is called once the socket accepts connections, so a
    parent process can wait for it instead of polling the port.
    """
    biller = RestBiller(
        accounts, token, faults=faults, ssl_context=ssl_context, receipt_prefix=receipt_prefix
    )
    bound = await biller.start(host, port)
    try:
        if on_listening is not None:
            on_listening(host, bound)
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await biller.stop()


def _server_ssl_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m billhub.simulator.rest_biller",
        description="A demo electricity biller speaking the REST contract of specs/BILLERS.md "
        "(section 1), over HTTP or HTTPS, with made-up subscribers. It prints "
        "'listening HOST:PORT' when ready and stops on SIGTERM or Ctrl-C.",
        epilog="examples:\n"
        "  python -m billhub.simulator.rest_biller --port 8010 --token dev-token\n"
        "  python -m billhub.simulator.rest_biller --port 8010 --token dev-token "
        "--today 2026-11-24 --post-delay-ms 1500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    p.add_argument(
        "--token",
        default=os.environ.get("BILLHUB_DEMO_BILLER_TOKEN"),
        help="the bearer token the hub must send (default: $BILLHUB_DEMO_BILLER_TOKEN)",
    )
    p.add_argument(
        "--seed", type=int, default=1, help="seed of the made-up subscribers (default 1)"
    )
    p.add_argument(
        "--accounts", type=int, default=1000, help="number of demo subscribers (default 1000)"
    )
    p.add_argument("--prefix", default="01", help="2-digit governorate account prefix (default 01)")
    p.add_argument(
        "--today",
        type=_day,
        default=None,
        help="YYYY-MM-DD that the billing periods are relative to (default: the system date)",
    )
    p.add_argument(
        "--receipt-prefix", default="RC", help="first letters of its receipts (default RC)"
    )
    p.add_argument(
        "--latency-ms", type=int, default=0, help="fault: wait this long before every answer"
    )
    p.add_argument(
        "--post-delay-ms",
        type=int,
        default=0,
        help="fault: wait this long before answering a payment (posted all the same)",
    )
    p.add_argument(
        "--fail-status", type=int, default=None, help="fault: answer every call with this status"
    )
    p.add_argument(
        "--drop-after-post",
        action="store_true",
        help="fault: post a payment, then drop the connection without answering",
    )
    p.add_argument("--hang", action="store_true", help="fault: never answer")
    p.add_argument("--cert", help="server certificate (PEM): serve HTTPS")
    p.add_argument("--key", help="server private key (PEM)")
    p.add_argument("--client-ca", help="CA (PEM) that client certificates must chain to: mTLS")
    return p


def _day(text: str) -> date:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo biller as a process; return the exit status (0 after SIGTERM/SIGINT)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token (or $BILLHUB_DEMO_BILLER_TOKEN) is required")
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.client_ca is not None and args.cert is None:
        parser.error("--client-ca needs --cert and --key")
    if not _RECEIPT_PREFIX_RE.fullmatch(args.receipt_prefix):
        parser.error("--receipt-prefix must be 1 to 8 ASCII letters or digits")
    try:
        faults = Faults(
            latency_ms=args.latency_ms,
            post_delay_ms=args.post_delay_ms,
            fail_status=args.fail_status,
            drop_after_post=args.drop_after_post,
            hang=args.hang,
        )
        # The composition root is the one place the system date may be read.
        today = args.today if args.today is not None else date.today()
        accounts = generate_accounts(args.prefix, args.accounts, args.seed, today=today)
    except ValueError as exc:
        parser.error(str(exc))
    ssl_context = (
        _server_ssl_context(args.cert, args.key, args.client_ca) if args.cert is not None else None
    )

    def announce(host: str, port: int) -> None:
        print(f"listening {host}:{port}", flush=True)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_rest_biller(
                accounts,
                args.token,
                host=args.host,
                port=args.port,
                faults=faults,
                ssl_context=ssl_context,
                stop=stop,
                on_listening=announce,
                receipt_prefix=args.receipt_prefix,
            )
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
