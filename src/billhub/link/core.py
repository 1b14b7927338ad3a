"""One link's protocol state, sans-IO: bytes and time in, events and bytes out.

Shaped after h11 and aioquic. :meth:`Link.receive_data` and
:meth:`Link.handle_timer` take ``now`` (monotonic seconds) from the shell;
:meth:`Link.next_event` hands out what happened; :meth:`Link.data_to_send`
the bytes to write; :meth:`Link.get_timer` the next deadline the shell must
arm. Nothing here sleeps, reads a clock or touches a socket, so a test can
drive a hub and a switch against each other by passing bytes and stepping
``now``.

States (LINK-SPEC 6.1)::

    CONNECTED --0800/001--> SIGNED_ON --0800/002--> SIGNED_OFF --0800/001--> SIGNED_ON
        any state --framing error, read timeout, dead peer, close()--> CLOSED

Rules the link applies itself, before the application sees anything:

- a framing error or a frame stopping half-way for ``read_timeout`` ends the
  link (:class:`LinkTerminated`); nothing more is read;
- an undecodable request is answered `30` echoing what could be read; an
  undecodable non-request is reported and dropped; the link stays up;
- a request MTI the contract does not define, or an unknown DE 3, gets `12`;
- a financial request before sign-on gets `91`;
- a hub link still not signed on ``sign_on_timeout`` after it opened ends;
- sign-on, sign-off and echo tests are answered `00`;
- ``idle_interval`` without a frame sends an echo test; each unanswered
  within ``echo_timeout`` is followed by the next; ``echo_max_missed`` in a
  row and the peer is dead.

Everything else that is a request (0200, 0420, 0500, a cutover) becomes a
:class:`RequestReceived` that the application answers with
:meth:`Link.send_response`; :attr:`Link.in_flight` counts them so that the
shell can stop reading past its bound.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from billhub.errors import (
    DecodeError,
    FramingError,
    LinkClosed,
    LocalProtocolError,
    RequestTimeout,
)
from billhub.iso8583 import codes as rc
from billhub.iso8583.codec import Codec
from billhub.iso8583.framing import Framer
from billhub.iso8583.message import Message
from billhub.link.events import (
    AnsweredByLink,
    EchoAnswered,
    Event,
    FormatError,
    LinkTerminated,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    StateChanged,
    UnmatchedResponse,
)
from billhub.link.responses import MatchKey, make_response, match_key


class State(Enum):
    CONNECTED = "connected"
    SIGNED_ON = "signed_on"
    SIGNED_OFF = "signed_off"
    CLOSED = "closed"


class Role(Enum):
    """Which side of the link we play: the hub listens, the switch signs on."""

    HUB = "hub"
    SWITCH = "switch"


@dataclass(frozen=True, slots=True)
class Timers:
    """The link's timers in seconds (LINK-SPEC 1 defaults)."""

    read_timeout: float = 5.0
    idle_interval: float = 30.0
    echo_timeout: float = 10.0
    echo_max_missed: int = 3
    request_timeout: float = 30.0
    #: A hub link that has not signed on this long after it opened is closed, so that
    #: authenticated links that never sign on cannot hold the link slots.
    sign_on_timeout: float = 10.0


@dataclass(slots=True)
class _Pending:
    token: int
    request: Message
    sent_at: float
    deadline: float
    keepalive: bool


class Link:
    """The protocol state of one link; one instance per connection."""

    def __init__(
        self,
        codec: Codec,
        role: Role,
        now: float,
        *,
        timers: Timers | None = None,
        next_stan: Callable[[], str],
        transmission_time: Callable[[], str],
        max_in_flight: int = 1 << 30,
    ) -> None:
        self.codec = codec
        self.rules = codec.spec.rules
        self.role = role
        self.timers = timers or Timers()
        # Past this many unanswered requests, frames stay in the framer's buffer
        # (at most one read's worth) and the shell stops reading the socket.
        self.max_in_flight = max_in_flight
        self._next_stan = next_stan
        self._transmission_time = transmission_time
        self._framer = Framer(codec.spec.max_message_length, codec.spec.length_header)
        self._header = codec.spec.length_header
        self._state = State.CONNECTED
        self._events: deque[Event] = deque()
        self._out = bytearray()
        self._pending: dict[MatchKey, _Pending] = {}
        self._deadlines: list[tuple[float, int, MatchKey]] = []
        self._tokens = 0
        self._in_flight = 0
        self._last_rx = now
        self._opened_at = now
        self._partial_since: float | None = None
        self._echo_sent_at: float | None = None
        self._missed = 0

    # -- state --------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def signed_on(self) -> bool:
        return self._state is State.SIGNED_ON

    @property
    def _awaiting_sign_on(self) -> bool:
        return self.role is Role.HUB and self._state is State.CONNECTED

    @property
    def in_flight(self) -> int:
        """Requests handed to the application and not yet answered."""
        return self._in_flight

    @property
    def pending(self) -> int:
        """Requests we sent that still wait for their answer."""
        return len(self._pending)

    def _set_state(self, new: State) -> None:
        if new is not self._state:
            old, self._state = self._state, new
            self._events.append(StateChanged(old.value, new.value))

    # -- the shell's side -----------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def opened(self, now: float) -> None:
        """The link starts at ``now`` (after its handshake): idle and sign-on clocks restart."""
        self._last_rx = now
        self._opened_at = now

    def terminate(self, reason: str, detail: str) -> None:
        """End the link from outside (a listener making room): :class:`LinkTerminated`."""
        if self._state is not State.CLOSED:
            self._terminate(reason, detail)

    def receive_data(self, data: bytes, now: float) -> None:
        """Take bytes from the peer; frames are processed at once, in order."""
        if self._state is State.CLOSED or not data:
            return
        self._last_rx = now
        try:
            self._framer.receive_data(data)
        except FramingError as exc:
            self._terminate("framing_error", str(exc))
            return
        self._take_frames(now)

    def resume(self, now: float) -> None:
        """Take frames left buffered while the in-flight bound was reached."""
        if self._state is not State.CLOSED and self._in_flight < self.max_in_flight:
            self._take_frames(now)

    @property
    def saturated(self) -> bool:
        """Whether the in-flight bound is reached: the shell should stop reading."""
        return self._in_flight >= self.max_in_flight

    def _take_frames(self, now: float) -> None:
        framer = self._framer
        try:
            while self._in_flight < self.max_in_flight:
                frame = framer.next_frame()
                if frame is None:
                    break
                self._missed = 0
                self._echo_sent_at = None
                self._partial_since = None  # a next frame's read timeout starts afresh
                self._on_frame(frame, now)
                if self.closed:
                    return
        except FramingError as exc:
            self._terminate("framing_error", str(exc))
            return
        # From the first byte of the frame (not `or now`: a fake clock starts at 0.0).
        if not framer.partial:
            self._partial_since = None
        elif self._partial_since is None:
            self._partial_since = now

    def get_timer(self) -> float | None:
        """The next moment :meth:`handle_timer` must run, or ``None``."""
        if self._state is State.CLOSED:
            return None
        t = self.timers
        deadlines = []
        if self._partial_since is not None:
            deadlines.append(self._partial_since + t.read_timeout)
        if self._awaiting_sign_on:
            deadlines.append(self._opened_at + t.sign_on_timeout)
        if self._echo_sent_at is not None:
            deadlines.append(self._echo_sent_at + t.echo_timeout)
        else:
            deadlines.append(self._last_rx + t.idle_interval)
        heap = self._deadlines
        while heap and self._answered(heap[0][1], heap[0][2]):
            heapq.heappop(heap)  # its request was answered: no reason to wake up then
        if heap:
            deadlines.append(heap[0][0])
        return min(deadlines)

    def _answered(self, token: int, key: MatchKey) -> bool:
        p = self._pending.get(key)
        return p is None or p.token != token

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at ``now``: read timeout, keep-alive, request time-outs."""
        if self._state is State.CLOSED:
            return
        t = self.timers
        if self._partial_since is not None and now >= self._partial_since + t.read_timeout:
            self._framer.fail()
            self._terminate("read_timeout", f"frame incomplete after {t.read_timeout:g}s")
            return
        if self._awaiting_sign_on and now >= self._opened_at + t.sign_on_timeout:
            self._terminate("sign_on_timeout", f"no sign-on within {t.sign_on_timeout:g}s")
            return
        if self._echo_sent_at is not None:
            if now >= self._echo_sent_at + t.echo_timeout:
                self._missed += 1
                if self._missed >= t.echo_max_missed:
                    self._terminate("dead_peer", f"{self._missed} echo tests unanswered")
                    return
                self._send_keepalive(now)
        elif now >= self._last_rx + t.idle_interval:
            self._send_keepalive(now)
        self._expire(now)

    def close(self, reason: str = "closed") -> None:
        """Close the link: every request still waiting fails with :class:`LinkClosed`."""
        if self._state is State.CLOSED:
            return
        self._set_state(State.CLOSED)
        for p in self._pending.values():
            if not p.keepalive:
                self._events.append(RequestFailed(p.token, p.request, LinkClosed(reason)))
        self._pending.clear()
        self._deadlines.clear()

    # -- the application's side -------------------------------------------------------

    def send_request(self, msg: Message, now: float, timeout: float | None = None) -> int:
        """Queue a request; its answer or failure comes back as an event with the token.

        Raises :class:`LinkClosed` on a closed link and :class:`LocalProtocolError`
        if the message cannot be encoded or would collide with one in flight.
        """
        return self._send_request(msg, now, timeout, keepalive=False)

    def send_response(self, request: Message, response: Message) -> None:
        """Answer a :class:`RequestReceived`. A response that cannot be encoded becomes `96`."""
        self._in_flight -= 1
        if self._state is State.CLOSED:
            return
        try:
            self._out += self.codec.frame(response)
        except LocalProtocolError:
            self._out += self.codec.frame(make_response(self.rules, request, rc.MALFUNCTION))

    def network_request(self, code: str, settlement_date: str | None = None) -> Message:
        """An 0800 with fresh DE 7 and DE 11 (sign-on, sign-off, echo, cutover)."""
        msg = Message("0800", {7: self._transmission_time(), 11: self._next_stan(), 70: code})
        if settlement_date is not None:
            msg.fields[15] = settlement_date
        return msg

    # -- internals --------------------------------------------------------------------

    def _send_request(
        self, msg: Message, now: float, timeout: float | None, *, keepalive: bool
    ) -> int:
        if self._state is State.CLOSED:
            raise LinkClosed("link is closed")
        key = match_key(self.rules, msg)
        if key in self._pending:
            raise LocalProtocolError("a request with the same DE 7, DE 11 and DE 32 is in flight")
        data = self.codec.frame(msg)
        self._tokens += 1
        deadline = now + (timeout if timeout is not None else self.timers.request_timeout)
        self._pending[key] = _Pending(self._tokens, msg, now, deadline, keepalive)
        heapq.heappush(self._deadlines, (deadline, self._tokens, key))
        self._out += data
        return self._tokens

    def _send_keepalive(self, now: float) -> None:
        self._echo_sent_at = now
        self._send_request(
            self.network_request(rc.ECHO), now, self.timers.echo_timeout, keepalive=True
        )

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, token, key = heapq.heappop(heap)
            p = self._pending.get(key)
            if p is None or p.token != token:
                continue  # answered already
            del self._pending[key]
            if not p.keepalive:
                self._events.append(RequestFailed(token, p.request, RequestTimeout("no answer")))

    def _terminate(self, reason: str, detail: str) -> None:
        self._events.append(LinkTerminated(reason, detail))
        self.close(reason)

    def _answer(self, request: Message | None, response: Message, reason: str) -> None:
        try:
            self._out += self.codec.frame(response)
        except LocalProtocolError:
            return  # nothing decodable to answer with; the event below still reports it
        finally:
            self._events.append(AnsweredByLink(request, response, reason))

    def _on_frame(self, frame: bytes, now: float) -> None:
        codec = self.codec
        try:
            msg = codec.decode(frame)
        except DecodeError as exc:
            self._on_undecodable(exc)
            return
        mti = msg.mti
        rules = self.rules
        if rc.is_response(mti):
            self._on_response(msg, now)
            return
        if not rules.is_request(mti):
            self._answer(msg, make_response(rules, msg, rc.INVALID_TRANSACTION), "undefined_mti")
            return
        try:
            codec.check_mandatory(msg)
        except DecodeError as exc:
            self._answer(msg, make_response(rules, msg, rc.FORMAT_ERROR), "format_error")
            self._events.append(FormatError(exc, answered=True))
            return
        if rc.mti_class(mti) == rc.NETWORK:
            self._on_network(msg, now)
            return
        if rc.mti_class(mti) == rc.FINANCIAL and msg.fields[3] not in rules.processing_codes:
            self._answer(
                msg, make_response(rules, msg, rc.INVALID_TRANSACTION), "unknown_processing_code"
            )
            return
        if self._state is not State.SIGNED_ON and rc.mti_class(mti) in rc.FINANCIAL_CLASSES:
            self._answer(msg, make_response(rules, msg, rc.UNAVAILABLE), "not_signed_on")
            return
        self._in_flight += 1
        self._events.append(RequestReceived(msg, now))

    def _on_undecodable(self, exc: DecodeError) -> None:
        mti = exc.mti
        if mti is not None and self.rules.is_request(mti):
            resp = Message(self.rules.response_mti(mti), {39: rc.FORMAT_ERROR})
            for n, v in ((7, exc.de7), (11, exc.de11), (32, exc.de32)):
                if v is not None:
                    resp.fields[n] = v
            self._answer(None, resp, "format_error")
            self._events.append(FormatError(exc, answered=True))
        else:
            self._events.append(FormatError(exc, answered=False))

    def _on_network(self, msg: Message, now: float) -> None:
        code = msg.fields[70]
        rules = self.rules
        if code == rc.ECHO:
            self._answer(msg, make_response(rules, msg, rc.APPROVED), "echo")
        elif code == rc.SIGN_ON and self.role is Role.HUB:
            self._set_state(State.SIGNED_ON)
            self._answer(msg, make_response(rules, msg, rc.APPROVED), "sign_on")
        elif code == rc.SIGN_OFF and self.role is Role.HUB:
            self._set_state(State.SIGNED_OFF)
            self._answer(msg, make_response(rules, msg, rc.APPROVED), "sign_off")
        elif code == rc.CUTOVER and self.role is Role.HUB:
            self._in_flight += 1
            self._events.append(RequestReceived(msg, now))
        else:
            self._answer(
                msg, make_response(rules, msg, rc.INVALID_TRANSACTION), "unknown_network_code"
            )

    def _on_response(self, msg: Message, now: float) -> None:
        p = self._pending.pop(match_key(self.rules, msg), None)
        if p is None:
            self._events.append(UnmatchedResponse(msg))
            return
        if p.keepalive:
            self._events.append(EchoAnswered(now - p.sent_at))
            return
        if (
            self.role is Role.SWITCH
            and rc.mti_class(p.request.mti) == rc.NETWORK
            and msg.fields.get(39) == rc.APPROVED
        ):
            code = p.request.fields.get(70)
            if code == rc.SIGN_ON:
                self._set_state(State.SIGNED_ON)
            elif code == rc.SIGN_OFF:
                self._set_state(State.SIGNED_OFF)
        self._events.append(ResponseReceived(p.token, p.request, msg, p.sent_at, now))
