"""The asyncio shell of one link: moves bytes, arms one timer, runs request tasks.

All protocol decisions are in :class:`billhub.link.core.Link`; this module only
feeds it bytes and time, writes what it produces, arms the single timer it
asks for, runs the application handler for each request as its own task (so
answers go out as each completes, never in arrival order), and applies
back-pressure: past ``max_in_flight`` requests, or while the socket's write
buffer is full, it stops reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from billhub.iso8583 import codes as rc
from billhub.iso8583.codec import Codec
from billhub.iso8583.message import Message
from billhub.link.core import Link, Role, Timers
from billhub.link.events import (
    AnsweredByLink,
    EchoAnswered,
    FormatError,
    LinkTerminated,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    StateChanged,
    UnmatchedResponse,
)
from billhub.link.facts import (
    EchoRoundTrip,
    Exchanged,
    FormatErrorSeen,
    HandlerFailed,
    LinkClosed,
    LinkInfo,
    LinkOpened,
    LinkStateChanged,
    LinkSubscriber,
    Unmatched,
)
from billhub.link.responses import make_response
from billhub.pipeline.ports import RequestHandler


def transmission_time() -> str:
    """DE 7 for requests we originate: MMDDhhmmss, UTC."""
    return datetime.now(UTC).strftime("%m%d%H%M%S")


class StanCounter:
    """STANs 000001..999999, wrapping; one per link is enough with DE 7 in the key."""

    def __init__(self, start: int = 0) -> None:
        self._n = start

    def __call__(self) -> str:
        self._n = self._n % 999_999 + 1
        return f"{self._n:06d}"


class LinkProtocol(asyncio.Protocol):
    """One hub link after the TLS handshake and the allow-list check."""

    def __init__(
        self,
        codec: Codec,
        handler: RequestHandler,
        events: LinkSubscriber,
        timers: Timers,
        *,
        max_in_flight: int,
        on_closed: Callable[[LinkProtocol], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.codec = codec
        self.handler = handler
        self.events = events
        self.max_in_flight = max_in_flight
        self.link = Link(
            codec,
            Role.HUB,
            self._loop.time(),
            timers=timers,
            next_stan=StanCounter(),
            transmission_time=transmission_time,
            max_in_flight=max_in_flight,
        )
        self.info = LinkInfo("-", "-", "-")
        self._on_closed = on_closed
        self._transport: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._read_paused = False
        self._write_paused = False
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._flush_soon = False
        self.idle = asyncio.Event()
        self.idle.set()

    # -- lifecycle --------------------------------------------------------------

    def attach(self, transport: asyncio.Transport, info: LinkInfo) -> None:
        """Start the link on an authenticated transport; replays bytes that came early."""
        self._transport = transport
        self.info = info
        self.link.opened(self._loop.time())
        self.events(LinkOpened(info))
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        self._after()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self.link.close("connection lost")
        self._drain_events()
        if self._timer is not None:
            self._timer.cancel()
        detail = str(exc) if exc else "peer closed"
        self.events(LinkClosed(self.info, "connection_lost", detail))
        self._on_closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def drain(self) -> None:
        """Graceful shutdown: new financial requests get `91`, those in flight finish."""
        self._draining = True

    def terminate(self, reason: str, detail: str) -> None:
        """Close the link for ``reason`` (reported as any link end is), e.g. ``displaced``."""
        self.link.terminate(reason, detail)
        self._after()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()

    # -- bytes in -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            self._early.append(data)  # not read until the allow-list check passed
            return
        self.link.receive_data(data, self._loop.time())
        self._after()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def _after(self) -> None:
        self._drain_events()
        self._flush()
        self._arm_timer()
        self._update_reading()

    def _drain_events(self) -> None:
        """Act on the core's events; report each as a link fact, with the link's identity."""
        link = self.link
        info = self.info
        emit = self.events
        while (ev := link.next_event()) is not None:
            if isinstance(ev, RequestReceived):
                self._start_request(ev)
            elif isinstance(ev, AnsweredByLink):
                emit(Exchanged(info, ev.request, ev.response, 0.0, ev.reason))
            elif isinstance(ev, EchoAnswered):
                emit(EchoRoundTrip(info, ev.rtt))
            elif isinstance(ev, FormatError):
                emit(FormatErrorSeen(info, ev.error, ev.answered))
            elif isinstance(ev, StateChanged):
                emit(LinkStateChanged(info, ev.old, ev.new))
            elif isinstance(ev, LinkTerminated):
                emit(LinkClosed(info, ev.reason, ev.detail))
                self._closed = True
                self._flush()
                if self._transport is not None:
                    self._transport.abort()
                self._on_closed(self)
            elif isinstance(ev, UnmatchedResponse):
                emit(Unmatched(info, ev.response))
            elif isinstance(ev, (ResponseReceived, RequestFailed)):
                pass  # the hub sends only keep-alive echo tests, which the link consumes

    def _flush(self) -> None:
        data = self.link.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _arm_timer(self) -> None:
        at = self.link.get_timer()
        if at is None:
            return
        # Deadlines usually move later (each frame pushes the idle timer); only
        # an earlier one needs a new handle, the running one re-arms on firing.
        if self._timer_at is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.link.handle_timer(self._loop.time())
        self._after()

    def _update_reading(self) -> None:
        t = self._transport
        if t is None or self._closed:
            return
        want_pause = self._write_paused or self.link.saturated
        if want_pause and not self._read_paused:
            self._read_paused = True
            t.pause_reading()
        elif not want_pause and self._read_paused:
            self._read_paused = False
            t.resume_reading()

    # -- requests -------------------------------------------------------------------

    def _start_request(self, ev: RequestReceived) -> None:
        req = ev.request
        if self._draining and rc.mti_class(req.mti) in rc.FINANCIAL_CLASSES:
            self._respond(
                req,
                make_response(self.link.rules, req, rc.UNAVAILABLE),
                ev.received_at,
                "shutting_down",
            )
            return
        self.idle.clear()
        task = self._loop.create_task(self._serve(req, ev.received_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: Message, received_at: float) -> None:
        try:
            response = await self.handler.handle(request)
        except asyncio.CancelledError:
            response = make_response(self.link.rules, request, rc.UNAVAILABLE)
            self._respond(request, response, received_at, "cancelled")
            raise
        except Exception as exc:  # the handler broke its contract: answer, never crash
            self.events(HandlerFailed(self.info, request, exc))
            response = make_response(self.link.rules, request, rc.MALFUNCTION)
        self._respond(request, response, received_at, "handled")

    def _respond(
        self, request: Message, response: Message, received_at: float, reason: str
    ) -> None:
        link = self.link
        was_saturated = link.saturated
        link.send_response(request, response)
        self.events(
            Exchanged(self.info, request, response, self._loop.time() - received_at, reason)
        )
        if link.in_flight == 0:
            self.idle.set()
        if self._closed:
            return
        if was_saturated:
            link.resume(self._loop.time())  # take the frames held back by the bound
            self._after()
        elif not self._flush_soon:
            # Answers completed in the same loop turn leave in one write (one TLS
            # record, one send) rather than one each.
            self._flush_soon = True
            self._loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_soon = False
        if not self._closed:
            self._flush()

    @property
    def in_flight(self) -> int:
        return self.link.in_flight

    @property
    def signed_on(self) -> bool:
        return self.link.signed_on
