"""The online REST connector: BILLERS.md section 1 over one pool of keep-alive connections.

One :class:`RestConnector` per biller. It owns one
:class:`~billhub.connectors.http1.HttpPool` (bound to the running loop on the
first call) holding at most ``max_concurrency`` keep-alive connections, and one
``ssl.SSLContext`` built once at construction. The request headers' constant part
(host, token, accept) is encoded once; a call adds its request line and body.

What a call may raise (the :class:`~billhub.pipeline.ports.Biller` contract)::

    BillerRejected(code)   a 4xx whose {"error": CODE} is in the BILLERS.md table
                           with that status (404/403/409/422)
    BillerTimeout          no whole answer within ``call_timeout``
    BillerUnavailable      401 (after ``on_auth_failure(code)``), any 5xx, another
                           status, a connection error, a TLS failure, a body that is
                           not JSON or not of the contract's shape and types

and ``asyncio.CancelledError`` when the caller cancels (the pipeline's own budget):
cancellation is never turned into an error, and it closes the one connection it
interrupted, so the pool stays usable. Exception messages are short fixed reasons
(a field name, a status, an exception class); they never carry the token, an
account number or the biller's response body, because they end up in logs.

Strictness, and why: an answer the connector cannot vouch for becomes
``BillerUnavailable`` (`91`), never a guess. Amounts are JSON integers (a float,
a bool or a string is outside the contract), dates and periods are checked, and a
``404`` counts as "unknown" only when its body says ``unknown_payment`` or
``unknown_account``: a bare 404 from a mis-set ``base_url`` or a proxy must not
make the hub conclude that a payment was never posted. Keys the contract does not
name are ignored, so a biller may add fields without breaking the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from yarl import URL

from billhub.config import RestSettings
from billhub.connectors.http1 import HttpError, HttpPool, PoolClosed
from billhub.errors import BillerRejected, BillerTimeout, BillerUnavailable, ConfigError
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

__all__ = ["REFUSALS", "RestConnector"]

#: The BILLERS.md refusal table: CODE -> the HTTP status it comes with.
REFUSALS: dict[str, int] = {
    "unknown_account": 404,
    "unknown_payment": 404,
    "account_blocked": 403,
    "nothing_due": 409,
    "bill_not_open": 409,
    "payment_id_conflict": 409,
    "payment_cancelled": 409,
    "amount_not_acceptable": 422,
}

_MAX_BODY = 1024 * 1024  # a many-bills answer is a few KiB; more is not a biller answer
_MAX_AMOUNT = 10**15  # far above any DE 4 amount; keeps an absurd integer out of the journal
_KEEPALIVE_S = 30.0

_PAYMENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID_RE = re.compile(r"[A-Za-z0-9-]{1,20}")  # bill ids and receipts
_PERIOD_RE = re.compile(r"[0-9]{4}(0[1-9]|1[0-2])")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_STATUSES = {s.value: s for s in AccountStatus}
_POSTING = {"posted": PostingStatus.POSTED, "cancelled": PostingStatus.CANCELLED}
_JSON_TYPE = (b"content-type", b"application/json")
#: Bytes a header value must not hold: they would end the header (or the head).
_HEADER_BREAKS = frozenset("\r\n\0")


def _outside(where: str) -> BillerUnavailable:
    return BillerUnavailable(f"answer outside the contract: {where}")


class RestConnector:
    """A biller reached over its HTTP(S) API (BILLERS.md section 1).

    ``settings.base_url`` may be ``http://`` or ``https://`` and may carry a path
    prefix. With ``https``, the server is verified against ``ca_file`` when given
    (only it is trusted), else the system roots; ``cert_file``/``key_file`` add a
    client certificate (mutual TLS). Raises :class:`~billhub.errors.ConfigError`
    at construction for an unusable URL, TLS files with an ``http://`` URL or
    TLS files that do not load, and ``ValueError`` for a ``max_concurrency`` < 1
    or a ``call_timeout`` <= 0.

    ``call_timeout`` bounds each call as a whole (connect, send, read the body)
    and must fit inside the pipeline's budget. ``on_auth_failure(code)`` is called
    on every 401 so that the hub can log it loudly and count it; an exception it
    raises is swallowed, because a call may raise only the biller errors.
    """

    status_is_authoritative = False
    exchanges_files = False

    def __init__(
        self,
        code: str,
        settings: RestSettings,
        *,
        max_concurrency: int,
        call_timeout: float,
        on_auth_failure: Callable[[str], None] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not call_timeout > 0:
            raise ValueError("call_timeout must be > 0")
        self.code = code
        self._base = _base_url(code, settings.base_url)
        https = self._base.startswith("https:")
        self._ssl = _client_ssl_context(code, settings, https=https)
        if _HEADER_BREAKS.intersection(settings.token):
            raise ConfigError(f"biller {code}: rest.token", "must be one line")
        parts = urlsplit(self._base)
        self._prefix = parts.path  # already percent-encoded, no trailing slash
        self._headers = [
            (b"host", parts.netloc.encode()),
            (b"authorization", f"Bearer {settings.token}".encode()),
            (b"accept", b"application/json"),
        ]
        self._json_headers = [*self._headers, _JSON_TYPE]
        self._max_concurrency = max_concurrency
        self._call_timeout = call_timeout
        self._on_auth_failure = on_auth_failure
        self._pool = HttpPool(
            parts.hostname or "",
            parts.port or (443 if https else 80),
            ssl_context=self._ssl,
            limit=max_concurrency,
            keepalive_s=_KEEPALIVE_S,
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"RestConnector(code={self.code!r}, base_url={self._base!r})"

    # ------------------------------------------------------------------ the life cycle

    async def start(self, ledger: PaymentsLedger) -> None:
        """Nothing to open before traffic: the session is made on the first call."""

    async def poll(self) -> list[InboxFile]:
        """An online biller drops no files."""
        return []

    async def close_day(self, dates: Sequence[date], ledger: PaymentsLedger) -> list[DayFile]:
        """An online biller has every payment already: a closed day owes it no file."""
        return []

    # ------------------------------------------------------------------ the four questions

    async def open_bills(self, account: str) -> AccountBills:
        """GET /accounts/{account}/bills; ``unknown_account`` on a 404 saying so."""
        obj = await self._call(b"GET", f"/accounts/{_segment(account)}/bills", None)
        return _parse_bills(account, obj)

    async def post_payment(self, order: PaymentOrder) -> str:
        """PUT /payments/{payment_id}; returns the receipt.

        The pool re-sends a request (a PUT is idempotent) once when a kept-alive
        connection drops before the answer, so the biller may be asked twice for
        one call. That is harmless by the contract: a PUT is idempotent on the
        payment id, the biller applies it once and answers the same receipt. If the
        second attempt is dropped too, the call raises ``BillerUnavailable`` and the
        hub resolves the payment as uncertain.
        """
        path = f"/payments/{_payment_id(order.payment_id)}"
        obj = await self._call(b"PUT", path, orjson.dumps(_payment_body(order)))
        if not isinstance(obj, dict):
            raise _outside("body")
        if obj.get("status") != "posted":
            raise _outside("status")
        return _identifier(obj.get("receipt"), "receipt")

    def bills_taken(self, payment_id: str) -> tuple[str, ...]:
        """None: the company's system keeps its own bills."""
        return ()

    async def cancel_payment(self, payment_id: str) -> None:
        """DELETE /payments/{payment_id}; idempotent; ``unknown_payment`` if never posted."""
        obj = await self._call(b"DELETE", f"/payments/{_payment_id(payment_id)}", None)
        if not isinstance(obj, dict) or obj.get("status") != "cancelled":
            raise _outside("status")

    async def payment_status(self, payment_id: str) -> StatusAnswer:
        """GET /payments/{payment_id}: posted or cancelled with the receipt; a 404
        ``unknown_payment`` is :attr:`PostingStatus.UNKNOWN` (not final: a late posting
        may still arrive, hence ``status_is_authoritative = False``)."""
        try:
            obj = await self._call(b"GET", f"/payments/{_payment_id(payment_id)}", None)
        except BillerRejected as exc:
            if exc.code == "unknown_payment":
                return StatusAnswer(PostingStatus.UNKNOWN)
            raise
        if not isinstance(obj, dict):
            raise _outside("body")
        status = obj.get("status")
        if not isinstance(status, str) or status not in _POSTING:
            raise _outside("status")
        return StatusAnswer(_POSTING[status], _identifier(obj.get("receipt"), "receipt"))

    async def close(self) -> None:
        """Close the pool and its connections; idempotent. Later calls raise
        ``BillerUnavailable``; calls in flight fail with it."""
        self._closed = True
        await self._pool.close()

    # ------------------------------------------------------------------ HTTP

    async def _call(self, method: bytes, path: str, body: bytes | None) -> Any:
        """One request; returns the JSON of a 200, raises the mapped error otherwise.

        The whole call (waiting for a connection, connecting, sending, reading the
        body) is bounded by ``asyncio.timeout(call_timeout)``: one clock, and a
        ``TimeoutError`` that is always ours. No redirect is followed (outside the
        contract), and no proxy is taken from the environment.
        """
        if self._closed:
            raise BillerUnavailable("connector closed")
        target = (self._prefix + path).encode("ascii")
        headers = self._headers if body is None else self._json_headers
        try:
            async with asyncio.timeout(self._call_timeout):
                answer = await self._pool.request(method, target, headers, body, max_body=_MAX_BODY)
        except TimeoutError:
            raise BillerTimeout(f"no answer within {self._call_timeout:g} s") from None
        except PoolClosed:
            raise BillerUnavailable("connector closed") from None
        except HttpError as exc:  # fixed short reasons: never a URL, a header or a body
            raise BillerUnavailable(str(exc)) from None
        except OSError as exc:
            raise BillerUnavailable(f"connection error: {type(exc).__name__}") from None
        status = answer.status
        if status == 200:
            return _json(answer.body)
        if status == 401:
            if self._on_auth_failure is not None:
                with contextlib.suppress(Exception):
                    self._on_auth_failure(self.code)
            raise BillerUnavailable("unauthorized")
        if 400 <= status < 500:
            try:
                obj = _json(answer.body)
            except BillerUnavailable:
                obj = None
            code = obj.get("error") if isinstance(obj, dict) else None
            if isinstance(code, str) and REFUSALS.get(code) == status:
                raise BillerRejected(code)
            raise BillerUnavailable(f"http {status} outside the contract")
        if status >= 500:
            raise BillerUnavailable(f"http {status}")
        raise BillerUnavailable(f"unexpected http {status}")


# ---------------------------------------------------------------------- construction


def _base_url(code: str, text: str) -> str:
    key = f"biller {code}: rest.base_url"
    try:
        url = URL(text)
    except (TypeError, ValueError):
        raise ConfigError(key, "not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(key, "must be http:// or https:// with a host")
    if url.query_string or url.fragment or url.user is not None:
        raise ConfigError(key, "must not carry a query, a fragment or credentials")
    return str(url).rstrip("/")


def _client_ssl_context(code: str, settings: RestSettings, *, https: bool) -> ssl.SSLContext | None:
    """Build the TLS client context once; ``None`` for plain http."""
    if not https:
        for name in ("cert_file", "key_file", "ca_file"):
            if getattr(settings, name) is not None:
                raise ConfigError(
                    f"biller {code}: rest.{name}", "is only used with an https:// base_url"
                )
        return None
    key = f"biller {code}: rest"
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.cert_file is not None:
            ctx.load_cert_chain(settings.cert_file, settings.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(key, f"cannot load the TLS files: {type(exc).__name__}") from None
    return ctx


# ---------------------------------------------------------------------- requests


def _segment(text: str) -> str:
    """One path segment: every reserved character escaped, and dots too, so that an
    account of ``..`` cannot become a dot-segment that climbs out of the path."""
    return quote(text, safe="").replace(".", "%2E")


def _payment_id(payment_id: str) -> str:
    """The id as a path segment; outside the common format it never reaches the wire."""
    if not _PAYMENT_ID_RE.fullmatch(payment_id):
        raise BillerUnavailable("payment id outside the contract (1-64 of A-Z a-z 0-9 - _)")
    return payment_id


def _payment_body(order: PaymentOrder) -> dict[str, object]:
    return {
        "account": order.account,
        "bill_id": order.bill_id,
        "amount": order.amount,
        "settlement_date": order.settlement_date.isoformat(),
        "acquirer": order.acquirer,
        "rrn": order.rrn,
        "channel": order.channel,
        "paid_at": _rfc3339_utc(order.paid_at),
    }


def _rfc3339_utc(moment: datetime) -> str:
    """``2026-11-24T09:45:12Z``; a naive datetime is UTC already (model.py's rule)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


# ---------------------------------------------------------------------- answers


def _json(data: bytes) -> Any:
    """The body as JSON; orjson refuses NaN, Infinity, invalid UTF-8 and deep nesting."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # a ValueError
        raise BillerUnavailable("answer is not JSON") from None


def _integer(value: object, where: str) -> int:
    # bool is an int to Python and float is a number to JSON: neither is an amount.
    if type(value) is not int or not 0 <= value <= _MAX_AMOUNT:
        raise _outside(where)
    return value


def _identifier(value: object, where: str) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise _outside(where)
    return value


def _date(value: object, where: str) -> date:
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise _outside(where)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _outside(where) from None


def _parse_bills(account: str, obj: object) -> AccountBills:
    if not isinstance(obj, dict):
        raise _outside("body")
    name = obj.get("customer_name")
    if not isinstance(name, str):
        raise _outside("customer_name")
    status = obj.get("status")
    if not isinstance(status, str) or status not in _STATUSES:
        raise _outside("status")
    partial = obj.get("partial_allowed")
    if not isinstance(partial, bool):
        raise _outside("partial_allowed")
    min_payment = _integer(obj.get("min_payment"), "min_payment")
    raw_bills = obj.get("bills")
    if not isinstance(raw_bills, list):
        raise _outside("bills")
    bills: list[Bill] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_bills):
        where = f"bills[{i}]"
        if not isinstance(raw, dict):
            raise _outside(where)
        bill_id = _identifier(raw.get("bill_id"), f"{where}.bill_id")
        if bill_id in seen:
            raise _outside(f"{where}.bill_id repeated")
        seen.add(bill_id)
        period = raw.get("period")
        if not isinstance(period, str) or not _PERIOD_RE.fullmatch(period):
            raise _outside(f"{where}.period")
        due_date = _date(raw.get("due_date"), f"{where}.due_date")
        amount = _integer(raw.get("amount"), f"{where}.amount")
        bills.append(Bill(bill_id, period, due_date, amount))
    return AccountBills(
        account=account,
        customer_name=name,
        status=_STATUSES[status],
        partial_allowed=partial,
        min_payment=min_payment,
        bills=tuple(bills),
    )
