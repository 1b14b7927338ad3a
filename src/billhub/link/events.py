"""What the link core tells its shell. Plain data; the shell decides how to act."""

from __future__ import annotations

from dataclasses import dataclass

from billhub.errors import BillhubError, DecodeError
from billhub.iso8583.message import Message


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request the application must answer with :meth:`Link.send_response`."""

    request: Message
    received_at: float


@dataclass(frozen=True, slots=True)
class AnsweredByLink:
    """The link answered a request itself (network management, 91, 12, 30)."""

    request: Message | None
    response: Message
    reason: str


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The answer to a request we sent; ``token`` is what :meth:`Link.send_request` returned."""

    token: int
    request: Message
    response: Message
    sent_at: float
    received_at: float


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request we sent will get no answer: timed out, or the link closed."""

    token: int
    request: Message
    error: BillhubError


@dataclass(frozen=True, slots=True)
class UnmatchedResponse:
    """A response that matches no request in flight (late, or never ours): logged, dropped."""

    response: Message


@dataclass(frozen=True, slots=True)
class FormatError:
    """An undecodable frame; ``answered`` says whether a `30` went back."""

    error: DecodeError
    answered: bool


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Sign-on, sign-off or close."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class EchoAnswered:
    """One of our keep-alive echo tests came back; ``rtt`` in seconds."""

    rtt: float


@dataclass(frozen=True, slots=True)
class LinkTerminated:
    """The link must close: framing error, read timeout or dead peer. Nothing more is read."""

    reason: str
    detail: str


Event = (
    RequestReceived
    | AnsweredByLink
    | ResponseReceived
    | RequestFailed
    | UnmatchedResponse
    | FormatError
    | StateChanged
    | EchoAnswered
    | LinkTerminated
)
