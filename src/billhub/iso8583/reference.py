"""The reference codec: bytes to and from :class:`Message` through pyiso8583.

This was the hub's codec until :mod:`billhub.iso8583.codec` compiled the spec into
its own per-field steps; it is kept, unchanged in behaviour, for two reasons. The
compiled codec hands every frame or message off its happy path (a malformed frame,
a value to refuse) to it, so that errors are the very errors this module has always
raised; and the property tests and ``bench/codec.py`` measure the compiled codec
against it.

pyiso8583 does the layout (bitmaps, length prefixes); this module adds what it
leaves out and the contract needs: only fields the spec defines, digits in
``n`` fields, patterns, mandatory fields, and errors that name the field and
offset but never carry the bytes (they may hold an account number).

Contract: :meth:`Codec.decode` raises only :class:`~billhub.errors.DecodeError`;
:meth:`Codec.encode` raises only :class:`~billhub.errors.LocalProtocolError`.
"""

from __future__ import annotations

from typing import Any

import iso8583

from billhub.errors import DecodeError, LocalProtocolError
from billhub.iso8583.message import Message
from billhub.iso8583.spec import FieldSpec, LinkSpec

_PRIMARY_BITMAP_END = 12  # 4-byte MTI + 8-byte primary bitmap
_ECHO_KEYS = (7, 11, 32)


def bit_mask(numbers: list[int], base: int) -> int:
    """The bitmap word with the bits of ``numbers`` between ``base`` + 1 and ``base`` + 64."""
    mask = 0
    for n in numbers:
        if base < n <= base + 64:
            mask |= 1 << (64 - (n - base))
    return mask


class ReferenceCodec:
    """Encoder and decoder for one link layout through pyiso8583; stateless."""

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self._py = spec.pyiso8583
        numbers = [int(k) for k in spec.fields if k.isdigit()]
        # Bits the spec allows; bit 1 (secondary bitmap) is allowed in the primary.
        self._allowed_primary = bit_mask(numbers, 0)
        self._allowed_secondary = bit_mask([n for n in numbers if n > 64], 64)
        self._fields: dict[int, FieldSpec] = {
            int(k): f for k, f in spec.fields.items() if k.isdigit() and k != "1"
        }
        # Per-field facts looked up once per field of every message (the hot path).
        self._by_key: dict[str, tuple[int, FieldSpec]] = {
            str(n): (n, f) for n, f in self._fields.items()
        }
        self._wide_fixed = frozenset(
            n for n, f in self._fields.items() if f.fixed and f.encoding != "ascii"
        )

    # -- decoding ----------------------------------------------------------------

    def decode(self, data: bytes) -> Message:
        """Decode one frame's message; raise :class:`DecodeError` if it breaks the spec."""
        mti = self._read_mti(data)
        self._check_bitmaps(data, mti)
        try:
            doc, enc = iso8583.decode(data, self._py)
        except iso8583.DecodeError as exc:
            partial = exc.doc_dec
            raise self._error(
                f"DE {exc.field}" if str(exc.field).isdigit() else str(exc.field),
                exc.pos,
                exc.msg.lower(),
                mti,
                partial,
            ) from None
        except Exception as exc:  # pyiso8583 may raise others (e.g. on odd bytes)
            raise self._error(
                "message", 0, f"a decodable message ({type(exc).__name__})", mti, {}
            ) from None
        fields: dict[int, str] = {}
        by_key = self._by_key
        wide_fixed = self._wide_fixed
        for key, value in doc.items():
            entry = by_key.get(key)
            if entry is None:  # MTI, bitmaps
                continue
            n, spec = entry
            if spec.fixed:
                # ASCII fixed fields are exactly their bytes; a UTF-8 one may not be.
                if n in wide_fixed and len(value) != spec.length:
                    raise self._error(f"DE {n}", -1, f"{spec.describe()}", mti, doc)
            elif not enc[key]["len"].isdigit():  # pyiso8583 takes int(" 6")
                raise self._error(f"DE {n}", -1, f"{spec.describe()} (length digits)", mti, doc)
            if not spec.check(value):
                raise self._error(f"DE {n}", -1, f"{spec.describe()} ({spec.name})", mti, doc)
            fields[n] = value
        return Message(mti, fields)

    def check_mandatory(self, msg: Message) -> None:
        """Raise :class:`DecodeError` if a field mandatory for this message is missing."""
        missing = self.spec.rules.missing_fields(msg.mti, msg.fields)
        if missing:
            doc = {str(k): v for k, v in msg.fields.items()}
            raise self._error(
                f"DE {missing[0]}", -1, f"mandatory field present for {msg.mti}", msg.mti, doc
            )

    def _read_mti(self, data: bytes) -> str:
        raw = data[:4]
        if len(raw) == 4 and raw.isdigit():
            return raw.decode("ascii")
        raise self._error("MTI", 0, "4 ASCII digits", None, {})

    def _check_bitmaps(self, data: bytes, mti: str | None) -> None:
        if len(data) < _PRIMARY_BITMAP_END:
            raise self._error("primary bitmap", 4, "8 bytes", mti, {})
        primary = int.from_bytes(data[4:_PRIMARY_BITMAP_END], "big")
        bad = primary & ~self._allowed_primary
        if bad:
            bit = 65 - bad.bit_length()
            raise self._error(
                "primary bitmap",
                4,
                f"no bit {bit} (field not in the spec)",
                mti,
                self._salvage(data, bit),
            )
        if primary >> 63:
            end = _PRIMARY_BITMAP_END + 8
            if len(data) < end:
                raise self._error("secondary bitmap", _PRIMARY_BITMAP_END, "8 bytes", mti, {})
            secondary = int.from_bytes(data[_PRIMARY_BITMAP_END:end], "big")
            bad = secondary & ~self._allowed_secondary
            if bad:
                bit = 129 - bad.bit_length()
                raise self._error(
                    "secondary bitmap",
                    _PRIMARY_BITMAP_END,
                    f"no bit {bit} (field not in the spec)",
                    mti,
                    self._salvage(data, bit),
                )
            if secondary == 0:
                raise self._error(
                    "secondary bitmap", _PRIMARY_BITMAP_END, "a field 65-128 when present", mti, {}
                )

    def _salvage(self, data: bytes, first_bad: int) -> dict[str, Any]:
        """Decode the fields before an unknown bit, so that a `30` can echo DE 7, 11, 32.

        The fields before the first unknown bit sit where the bitmap says; past it
        nothing can be trusted. The bitmaps are cut to the fields before it and
        pyiso8583's partial result kept.
        """
        primary = int.from_bytes(data[4:_PRIMARY_BITMAP_END], "big")
        has_secondary = bool(primary >> 63)
        body_start = _PRIMARY_BITMAP_END + (8 if has_secondary else 0)
        if first_bad <= 64:
            keep = primary & ~((1 << (65 - first_bad)) - 1) & ~(1 << 63)
            trimmed = data[:4] + keep.to_bytes(8, "big") + data[body_start:]
        else:
            secondary = int.from_bytes(data[_PRIMARY_BITMAP_END:body_start], "big")
            keep = secondary & ~((1 << (129 - first_bad)) - 1)
            if keep == 0:
                primary &= ~(1 << 63)
                trimmed = data[:4] + primary.to_bytes(8, "big") + data[body_start:]
            else:
                trimmed = data[:_PRIMARY_BITMAP_END] + keep.to_bytes(8, "big") + data[body_start:]
        try:
            doc, _ = iso8583.decode(trimmed, self._py)
        except iso8583.DecodeError as exc:
            return dict(exc.doc_dec)
        except Exception:
            return {}
        return dict(doc)

    def _error(
        self, field: str, offset: int, expected: str, mti: str | None, partial: dict[str, Any]
    ) -> DecodeError:
        """Build a :class:`DecodeError` keeping only the echo fields that are well-formed."""
        echoes: dict[int, str | None] = {}
        for n in _ECHO_KEYS:
            value = partial.get(str(n))
            spec = self._fields.get(n)
            ok = isinstance(value, str) and spec is not None and spec.check(value)
            if isinstance(value, str) and spec is not None and spec.fixed:
                ok = ok and len(value) == spec.length
            echoes[n] = value if ok and isinstance(value, str) else None
        return DecodeError(
            field, offset, expected, mti=mti, de7=echoes[7], de11=echoes[11], de32=echoes[32]
        )

    # -- encoding ----------------------------------------------------------------

    def encode(self, msg: Message) -> bytes:
        """Encode a message, justifying fixed fields; raise :class:`LocalProtocolError`."""
        if len(msg.mti) != 4 or not msg.mti.isdigit():
            raise LocalProtocolError("MTI must be 4 digits")
        doc: dict[str, str] = {"t": msg.mti}
        fields = self._fields
        for n, given in msg.fields.items():
            spec = fields.get(n)
            if spec is None:
                raise LocalProtocolError(f"DE {n} is not defined in spec {self.spec.name}")
            value = given
            if spec.fixed:
                if len(value) != spec.length:
                    value = spec.pad(given)
                    if len(value) != spec.length:
                        raise LocalProtocolError(f"DE {n} must be {spec.describe()}")
            else:
                size = (
                    len(value) if value.isascii() else len(value.encode(spec.encoding, "replace"))
                )
                if size > spec.length:
                    raise LocalProtocolError(f"DE {n} longer than {spec.describe()}")
            if not spec.check(value):
                raise LocalProtocolError(f"DE {n} is not {spec.describe()}")
            doc[str(n)] = value
        try:
            data, _ = iso8583.encode(doc, self._py)
        except (iso8583.EncodeError, UnicodeError) as exc:
            raise LocalProtocolError(f"cannot encode: {exc}") from None
        return bytes(data)

    def frame(self, msg: Message) -> bytes:
        """Encode with the length header: ready for the wire."""
        body = self.encode(msg)
        if len(body) > self.spec.max_message_length:
            raise LocalProtocolError("message longer than the link's maximum")
        return len(body).to_bytes(self.spec.length_header, "big") + body

    def normalise(self, msg: Message) -> Message:
        """The message with fixed fields justified as the wire carries them."""
        out = Message(msg.mti)
        for n, value in msg.fields.items():
            spec = self._fields.get(n)
            out.fields[n] = spec.pad(value) if spec is not None else value
        return out
