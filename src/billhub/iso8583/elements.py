"""Composite data elements: DE 90 (original data) and DE 97 (net settlement).

One owner each, so that the pipeline and the settlement code read and write
them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from billhub.errors import DecodeError, LocalProtocolError


@dataclass(frozen=True, slots=True)
class OriginalData:
    """DE 90 of a reversal: what identifies the original request."""

    mti: str
    stan: str
    transmission_time: str
    acquirer: str
    forwarder: str

    def format(self) -> str:
        value = (
            f"{self.mti:0>4}{self.stan:0>6}{self.transmission_time:0>10}"
            f"{self.acquirer:0>11}{self.forwarder:0>11}"
        )
        if len(value) != 42 or not (value.isascii() and value.isdigit()):
            raise LocalProtocolError("DE 90 must be 42 digits")
        return value


def parse_original(value: str) -> OriginalData:
    """Split DE 90; raise :class:`DecodeError` if it is not 42 digits."""
    if len(value) != 42 or not (value.isascii() and value.isdigit()):
        raise DecodeError("DE 90", 0, "n 42: MTI + STAN + DE 7 + DE 32 + DE 33")
    return OriginalData(
        mti=value[0:4],
        stan=value[4:10],
        transmission_time=value[10:20],
        acquirer=value[20:31].lstrip("0") or "0",
        forwarder=value[31:42].lstrip("0") or "0",
    )


def format_net(credits: int, reversals: int) -> str:
    """DE 97 from DE 86 and DE 87: ``C`` or ``D`` then 16 digits (zero is ``C``)."""
    net = credits - reversals
    if abs(net) >= 10**16:
        raise LocalProtocolError("net settlement does not fit 16 digits")
    return f"{'C' if net >= 0 else 'D'}{abs(net):016d}"


def parse_net(value: str) -> int:
    """DE 97 as a signed amount in minor units."""
    digits = value[1:]  # ASCII only: str.isdigit() also takes '²', which int() refuses
    if len(value) != 17 or value[0] not in "CD" or not (digits.isascii() and digits.isdigit()):
        raise DecodeError("DE 97", 0, "C or D then 16 digits")
    amount = int(value[1:])
    return amount if value[0] == "C" else -amount
