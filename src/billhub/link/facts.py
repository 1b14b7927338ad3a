"""What the network shell reports about links: one vocabulary of facts, as plain data.

:mod:`billhub.link.events` is what the link core tells its shell, one link at a time;
this module is what the shell tells everyone else (logs, metrics, tests), with the
link's identity attached. Each fact is a dataclass, frozen to the type checker
(:func:`fact`); a subscriber is any callable that takes one (:data:`LinkSubscriber`)
and handles the facts it cares about, usually with ``match``, ignoring the rest.
Adding a fact is one class here, its place in :data:`LinkEvent`, where the shell
emits it, and the handlers that care; no other subscriber changes.

Defined here, below every adapter, so that the transport can report and the
observability package can listen without either importing the other (STYLE.md
layers). The shell hands every fact to one subscriber (in the hub, the bus of
:mod:`billhub.observability.bus`, which isolates the others' failures); a subscriber
must be cheap, since :class:`Exchanged` comes once per message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

from billhub.errors import DecodeError
from billhub.iso8583.message import Message

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def fact(cls: type[_T]) -> type[_T]:
    """A link fact: a slotted dataclass, frozen to the type checker, cheap to build.

    ``frozen=True`` makes a dataclass's ``__init__`` go through ``object.__setattr__``
    per field: measured 1.0 µs for :class:`Exchanged`'s five against 0.25 µs plain,
    while the whole per-message path it replaced cost about 0.5 µs. So the fields are
    read-only for ``mypy --strict`` (``dataclass_transform(frozen_default=True)``;
    assigning one is a type error) but not checked at run time. Hashable, as a frozen
    dataclass is.
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """Who is on a link, for logs: a short id, the peer address, the certificate subject."""

    link_id: str
    peer: str
    subject: str


@fact
class LinkOpened:
    """A link passed TLS and the allow-list and starts (it is not signed on yet)."""

    link: LinkInfo


@fact
class LinkClosed:
    """A link ended: ``reason`` is a bounded label (``dead_peer``...), ``detail`` free text."""

    link: LinkInfo
    reason: str
    detail: str


@fact
class LinkStateChanged:
    """Sign-on, sign-off or close (the core's :class:`~billhub.link.events.StateChanged`)."""

    link: LinkInfo
    old: str
    new: str


@fact
class TlsRefusal:
    """A connection that got no link: its TLS handshake or certificate was refused."""

    peer: str
    reason: str
    detail: str


@fact
class ConnectionRefusal:
    """A connection closed before any TLS work (a cap, shutting down): no link."""

    peer: str
    reason: str


@fact
class Exchanged:
    """One request answered, by the application or by the link itself.

    ``request`` is None for an undecodable frame answered `30`; ``latency`` is from
    the request's last byte read to its answer written (0.0 when the link answered
    at once); ``reason`` says who answered and why (``handled``, ``echo``...).
    """

    link: LinkInfo
    request: Message | None
    response: Message
    latency: float
    reason: str


@fact
class FormatErrorSeen:
    """A whole frame that could not be decoded; ``answered`` says whether a `30` went back."""

    link: LinkInfo
    error: DecodeError
    answered: bool


@fact
class Unmatched:
    """A response from the switch that matches no request in flight: dropped."""

    link: LinkInfo
    response: Message


@fact
class EchoRoundTrip:
    """One of the hub's keep-alive echo tests came back after ``rtt`` seconds."""

    link: LinkInfo
    rtt: float


@fact
class HandlerFailed:
    """The application's handler raised (a hub bug); the request was answered `96`."""

    link: LinkInfo
    request: Message
    error: BaseException


LinkEvent = (
    Exchanged
    | LinkOpened
    | LinkClosed
    | LinkStateChanged
    | TlsRefusal
    | ConnectionRefusal
    | FormatErrorSeen
    | Unmatched
    | EchoRoundTrip
    | HandlerFailed
)

#: Receives every fact; handles those it cares about. Must be cheap; should not raise.
LinkSubscriber = Callable[[LinkEvent], None]
