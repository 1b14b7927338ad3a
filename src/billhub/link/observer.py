"""The port through which the network shell reports what happens on links.

Defined here, below every adapter, so that the transport can report and the
observability package can listen without either importing the other (STYLE.md
layers). Every method must be cheap and must not raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from billhub.errors import DecodeError
from billhub.iso8583.message import Message


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """Who is on a link, for logs: a short id, the peer address, the certificate subject."""

    link_id: str
    peer: str
    subject: str


class LinkObserver(Protocol):
    def link_opened(self, link: LinkInfo) -> None: ...

    def link_closed(self, link: LinkInfo, reason: str, detail: str) -> None: ...

    def link_state(self, link: LinkInfo, old: str, new: str) -> None: ...

    def tls_refused(self, peer: str, reason: str, detail: str) -> None: ...

    def connection_refused(self, peer: str, reason: str) -> None: ...

    def exchanged(
        self,
        link: LinkInfo,
        request: Message | None,
        response: Message,
        latency: float,
        reason: str,
    ) -> None:
        """One request answered (by the application or by the link itself)."""

    def format_error(self, link: LinkInfo, error: DecodeError, answered: bool) -> None: ...

    def unmatched(self, link: LinkInfo, response: Message) -> None: ...

    def echo_rtt(self, link: LinkInfo, rtt: float) -> None: ...

    def in_flight(self, link: LinkInfo, count: int) -> None: ...

    def handler_failed(self, link: LinkInfo, request: Message, error: BaseException) -> None: ...


class NullObserver:
    """Observes nothing; the default for tests and benchmarks of the bare link."""

    def link_opened(self, link: LinkInfo) -> None:
        pass

    def link_closed(self, link: LinkInfo, reason: str, detail: str) -> None:
        pass

    def link_state(self, link: LinkInfo, old: str, new: str) -> None:
        pass

    def tls_refused(self, peer: str, reason: str, detail: str) -> None:
        pass

    def connection_refused(self, peer: str, reason: str) -> None:
        pass

    def exchanged(
        self,
        link: LinkInfo,
        request: Message | None,
        response: Message,
        latency: float,
        reason: str,
    ) -> None:
        pass

    def format_error(self, link: LinkInfo, error: DecodeError, answered: bool) -> None:
        pass

    def unmatched(self, link: LinkInfo, response: Message) -> None:
        pass

    def echo_rtt(self, link: LinkInfo, rtt: float) -> None:
        pass

    def in_flight(self, link: LinkInfo, count: int) -> None:
        pass

    def handler_failed(self, link: LinkInfo, request: Message, error: BaseException) -> None:
        pass
