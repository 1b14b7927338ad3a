"""Money as integer minor units with its ISO 4217 numeric currency.

Amounts never pass through ``float``: DE 4, 86 and 87 are integer minor units on
the wire, and every total the ministry clears must agree to the last minor unit.
"""

from __future__ import annotations

from dataclasses import dataclass

SYP = "760"
EXPONENTS = {"760": 2}


@dataclass(frozen=True, slots=True)
class Amount:
    """An amount in minor units; arithmetic only between the same currency."""

    minor: int
    currency: str = SYP

    def __post_init__(self) -> None:
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise TypeError("amount must be an int of minor units")

    def __add__(self, other: Amount) -> Amount:
        self._same(other)
        return Amount(self.minor + other.minor, self.currency)

    def __sub__(self, other: Amount) -> Amount:
        self._same(other)
        return Amount(self.minor - other.minor, self.currency)

    def _same(self, other: Amount) -> None:
        if other.currency != self.currency:
            raise ValueError("cannot combine amounts of different currencies")

    def format(self, thousands: str = ",") -> str:
        """Human form for reports, e.g. ``12,500.00``; never used on the wire."""
        exp = EXPONENTS.get(self.currency, 2)
        sign = "-" if self.minor < 0 else ""
        units, cents = divmod(abs(self.minor), 10**exp)
        whole = f"{units:,}".replace(",", thousands)
        return f"{sign}{whole}.{cents:0{exp}d}" if exp else f"{sign}{whole}"
