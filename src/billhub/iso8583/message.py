"""The message object: an MTI and its data elements, with typed accessors.

Values are held as they travel on the wire (fixed fields justified and filled),
so that a decoded message re-encodes to the same bytes and an echoed field is
echoed unchanged. Accessors give the typed view the pipeline needs: amounts as
``int`` minor units, identifiers without their fill.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class Message:
    """One ISO 8583 message. Field numbers are ``int``; values are ``str``."""

    __slots__ = ("fields", "mti")

    def __init__(self, mti: str, fields: Mapping[int, str] | None = None) -> None:
        self.mti = mti
        self.fields: dict[int, str] = dict(fields) if fields else {}

    @classmethod
    def adopt(cls, mti: str, fields: dict[int, str]) -> Message:
        """A message that takes ``fields`` as its own, uncopied: the codec's hot path.

        The caller gives up the dict; :meth:`__init__` copies, which a decoder that
        has just built the dict does not need.
        """
        msg = cls.__new__(cls)
        msg.mti = mti
        msg.fields = fields
        return msg

    # -- mapping-ish -----------------------------------------------------------

    def __getitem__(self, number: int) -> str:
        return self.fields[number]

    def __setitem__(self, number: int, value: str) -> None:
        self.fields[number] = value

    def __delitem__(self, number: int) -> None:
        del self.fields[number]

    def __contains__(self, number: object) -> bool:
        return number in self.fields

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.fields))

    def get(self, number: int, default: str | None = None) -> str | None:
        return self.fields.get(number, default)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.mti == other.mti and self.fields == other.fields

    def __hash__(self) -> int:  # messages are mutable; identity hashing would mislead
        raise TypeError("Message is not hashable")

    def __repr__(self) -> str:
        # Field values stay out of reprs: they may hold an account number.
        return f"Message({self.mti}, fields={sorted(self.fields)})"

    def copy(self) -> Message:
        return Message(self.mti, self.fields)

    # -- typed accessors ---------------------------------------------------------

    @property
    def mti_class(self) -> str:
        """The first two MTI digits: what a response is matched on (LINK-SPEC 1)."""
        return self.mti[:2]

    @property
    def is_repeat(self) -> bool:
        """A repeat MTI (last digit 1), e.g. 0201 or 0421."""
        return self.mti[3:] == "1"

    @property
    def processing_code(self) -> str | None:
        return self.fields.get(3)

    @property
    def amount(self) -> int | None:
        """DE 4 in minor units."""
        v = self.fields.get(4)
        return int(v) if v is not None else None

    @property
    def transmission_time(self) -> str | None:
        return self.fields.get(7)

    @property
    def stan(self) -> str | None:
        return self.fields.get(11)

    @property
    def settlement_date(self) -> str | None:
        """DE 15 as MMDD; the year is decided by the business-day calendar."""
        return self.fields.get(15)

    @property
    def channel(self) -> str | None:
        return self.fields.get(18)

    @property
    def acquirer(self) -> str | None:
        return self.fields.get(32)

    @property
    def forwarder(self) -> str | None:
        return self.fields.get(33)

    @property
    def rrn(self) -> str | None:
        v = self.fields.get(37)
        return v.rstrip() if v is not None else None

    @property
    def response_code(self) -> str | None:
        return self.fields.get(39)

    @property
    def bill_data(self) -> str | None:
        return self.fields.get(48)

    @property
    def currency(self) -> str | None:
        return self.fields.get(49)

    @property
    def network_code(self) -> str | None:
        return self.fields.get(70)

    @property
    def biller(self) -> str | None:
        return self.fields.get(100)

    @property
    def account(self) -> str | None:
        return self.fields.get(102)
