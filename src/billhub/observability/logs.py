"""Structured logs: JSON lines in production, readable in a terminal.

One event per message exchanged, with link, MTI, STAN, RRN, biller, response
code and latency. Masking happens at the codec (:func:`log_fields`); the
``_scrub`` processor here is the second line of defence, so that a key, token
or full account number passed by mistake never reaches a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from billhub.iso8583 import codes as rc
from billhub.iso8583.mask import log_fields, mask_account
from billhub.link.facts import (
    ConnectionRefusal,
    EchoRoundTrip,
    Exchanged,
    FormatErrorSeen,
    HandlerFailed,
    LinkClosed,
    LinkEvent,
    LinkOpened,
    LinkStateChanged,
    TlsRefusal,
    Unmatched,
)

_SECRET_KEYS = frozenset(
    {"token", "password", "secret", "key", "private_key", "authorization", "dsn", "code", "csrf"}
)
#: Masked like account numbers (first 2 and last 4): phone numbers too (the web service).
_ACCOUNT_KEYS = frozenset({"account", "account_id", "pan", "phone"})
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if k in _SECRET_KEYS:
            event[k] = "***"
        elif k in _ACCOUNT_KEYS and isinstance(event[k], str) and "*" not in event[k]:
            event[k] = mask_account(event[k])
    return event


_state = {"level": logging.INFO}


class LineLogger:
    """Writes rendered lines; info and debug are buffered, warnings and errors flushed.

    One flushed write per financial message was a system call per answer on
    the hot path. Info and debug lines now wait in the stream's buffer until
    :func:`flush` (the hub calls it a few times a second and at shutdown) or
    until the buffer fills; anything at warning or above is written through at
    once, so an operator never waits for a problem to appear.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        _streams.append(stream)

    def _buffered(self, message: str) -> None:
        self._stream.write(message + "\n")

    def _through(self, message: str) -> None:
        self._stream.write(message + "\n")
        self._stream.flush()

    debug = info = msg = _buffered
    warning = warn = error = critical = exception = fatal = _through


_streams: list[TextIO] = []


def flush() -> None:
    """Write out buffered log lines (called periodically and at shutdown)."""
    for stream in _streams:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _orjson_dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode("utf-8")


def configure(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog once, at start-up, for the whole process."""
    _state["level"] = _LEVELS.get(level, logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    out = stream or sys.stdout
    _streams.clear()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=lambda *_: LineLogger(out),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str = "billhub") -> Any:
    return structlog.get_logger(name)


#: Link ends that are refusals in all but name (an authenticated link that never signed
#: on): summarised like refusals, since a flood makes thousands of them.
SUMMARISED_CLOSES = frozenset({"displaced", "sign_on_timeout"})


class RefusalSummary:
    """Counts refusals per (event, reason) and writes one line per reason per interval.

    A flood refuses hundreds of connections a second; a line each would bury everything
    else (issue 14). The first refusal of a reason in a quiet period starts an interval;
    at its end one warning gives the count, the last peer and the last detail. The
    counts per reason are in the metrics too, exactly. Needs a running event loop.
    """

    def __init__(self, log: Any, interval: float = 10.0) -> None:
        self.log = log
        self.interval = interval
        self._counts: dict[tuple[str, str], list[Any]] = {}
        self._timer: Any = None

    def add(self, event: str, reason: str, peer: str, detail: str) -> None:
        entry = self._counts.get((event, reason))
        if entry is None:
            self._counts[(event, reason)] = [1, peer, detail]
        else:
            entry[0] += 1
            entry[1], entry[2] = peer, detail
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Write the interval's lines now (also at shutdown, so that none is lost)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, {}
        for (event, reason), (count, peer, detail) in counts.items():
            fields: dict[str, Any] = {"reason": reason, "count": count, "last_peer": peer}
            if detail:
                fields["last_detail"] = detail
            self.log.warning(event, interval_s=self.interval, **fields)


def _resolved(proxy: Any) -> Any:
    """The logger behind structlog's lazy proxy, if :func:`configure` has run.

    The proxy looks its logger up on every call (measured ~0.7 µs of a ~4 µs line, once
    per message). Configured with ``cache_logger_on_first_use``, as :func:`configure`
    always does, it would keep the logger of its first use for good anyway; taking it
    now, after start-up's :func:`configure`, is the same logger without the lookups.
    Unconfigured (some tests), the proxy is kept and follows a later configuration.
    """
    if structlog.is_configured() and structlog.get_config()["cache_logger_on_first_use"]:
        return proxy.bind()
    return proxy


class LogObserver:
    """A link-fact subscriber (:mod:`billhub.link.facts`) that writes one log event per fact.

    Refusals (and links that never signed on) are the exception: one summary line per
    reason per ``refusal_interval`` seconds, through :class:`RefusalSummary`.
    """

    def __init__(self, refusal_interval: float = 10.0) -> None:
        self.log = _resolved(get_logger("billhub.link"))
        self.refusals = RefusalSummary(self.log, refusal_interval)

    def __call__(self, event: LinkEvent) -> None:
        # The per-message fact first: ``match`` tries the cases in order, and a bare
        # class pattern is an isinstance (sub-patterns cost more: rare facts only).
        match event:
            case Exchanged():
                request = event.request
                if (
                    request is not None
                    and request.fields.get(70) == rc.ECHO
                    and _state["level"] > logging.DEBUG
                ):
                    return  # echo tests are logged at debug only: skip building the event
                self._message(event)
            case LinkOpened(link):
                self.log.info(
                    "link_opened", link=link.link_id, peer=link.peer, subject=link.subject
                )
            case LinkClosed(link, reason, detail):
                if reason in SUMMARISED_CLOSES:
                    self.refusals.add("links_closed_unsigned", reason, link.peer, detail)
                    return
                self.log.warning(
                    "link_closed", link=link.link_id, peer=link.peer, reason=reason, detail=detail
                )
            case LinkStateChanged(link, old, new):
                self.log.info("link_state", link=link.link_id, old=old, new=new)
            case TlsRefusal(peer, reason, detail):
                self.refusals.add("tls_refused", reason, peer, detail)
            case ConnectionRefusal(peer, reason):
                self.refusals.add("connection_refused", reason, peer, "")
            case FormatErrorSeen(link, error, answered):
                self.log.warning(
                    "format_error",
                    link=link.link_id,
                    field=error.field,
                    offset=error.offset,
                    expected=error.expected,
                    mti=error.mti,
                    stan=error.de11,
                    answered=answered,
                )
            case Unmatched(link, response):
                self.log.warning("unmatched_response", link=link.link_id, **log_fields(response))
            case EchoRoundTrip(link, rtt):
                self.log.debug("echo_rtt", link=link.link_id, rtt_ms=round(rtt * 1000, 3))
            case HandlerFailed(link, request, error):
                self.log.error(
                    "handler_failed",
                    link=link.link_id,
                    error=type(error).__name__,
                    **log_fields(request),
                )

    def _message(self, event: Exchanged) -> None:
        request, response = event.request, event.response
        fields: dict[str, Any] = log_fields(request) if request is not None else {"mti": None}
        fields["response_mti"] = response.mti
        fields["response_code"] = response.fields.get(39)
        if request is not None and request.fields.get(70) == rc.ECHO:
            self.log.debug(
                "message",
                link=event.link.link_id,
                latency_ms=round(event.latency * 1000, 3),
                reason=event.reason,
                **fields,
            )
            return
        self.log.info(
            "message",
            link=event.link.link_id,
            latency_ms=round(event.latency * 1000, 3),
            reason=event.reason,
            **fields,
        )
