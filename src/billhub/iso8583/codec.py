"""Bytes to and from :class:`Message`, compiled once from a :class:`LinkSpec`.

Every frame of every link goes through here, so the spec is turned, at start-up,
into a step per field (its number, prefix digits, length, how its text is read,
its check) and each bitmap seen into a plan: the steps of the fields it names, in
wire order. Decoding a frame is then one walk over a plan; encoding a message,
one walk over the plan of its field set. Nothing about the spec is looked up per
message.

Only the happy path is compiled. A frame that is not a well-formed message of the
spec, or a message that cannot be sent as it is (a field to pad, a value to
refuse), is handed to :class:`~billhub.iso8583.reference.ReferenceCodec`, the
pyiso8583-based codec that the contract was written against: its errors, which
name the field and the offset but never carry the bytes, are the errors callers
get, and property tests (``tests/test_codec_compiled.py``) hold the compiled path
to its bytes and its messages. The fast path never accepts what the reference
refuses, and everything it accepts decodes or encodes to the reference's result.

Contract: :meth:`Codec.decode` raises only :class:`~billhub.errors.DecodeError`;
:meth:`Codec.encode` raises only :class:`~billhub.errors.LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable

from billhub.errors import LocalProtocolError
from billhub.iso8583.message import Message
from billhub.iso8583.reference import ReferenceCodec, bit_mask
from billhub.iso8583.spec import FieldSpec, LinkSpec

#: Plans kept per codec (bitmaps seen, field sets sent). A switch uses a few dozen;
#: the bound only stops a peer sending random bitmaps from growing the cache.
_MAX_PLANS = 1024

# How a field's text is read and written (the kind in a step).
_ASCII = 0  # ASCII text: characters are bytes
_UTF8 = 1  # UTF-8 text of variable length: the prefix counts bytes
_UTF8_FIXED = 2  # UTF-8 text of fixed length: bytes and characters must both fit

Check = Callable[[str], object]
# (number, prefix digits, length or maximum, kind, check)
Step = tuple[int, int, int, int, Check]
# (first byte after the bitmaps, steps in wire order)
DecodePlan = tuple[int, tuple[Step, ...]]
# (bitmap bytes, steps in wire order with the prefix of every length)
EncodePlan = tuple[bytes, tuple[tuple[int, int, int, int, Check, tuple[str, ...]], ...]]


def _kind(f: FieldSpec) -> int | None:
    """The step kind of a data field, or None for one the reference must always handle.

    Binary data fields (``b`` beyond the bitmaps) are refused by the reference in ways
    the compiled path does not copy, and pyiso8583 reads bit 65 as a third bitmap.
    """
    if f.format == "b" or f.key == "65":
        return None
    if f.encoding == "ascii":
        return _ASCII
    return _UTF8_FIXED if f.fixed else _UTF8


def _fast_check(f: FieldSpec, kind: int) -> Check:
    """The field's check for a value already known to be ASCII where the field is.

    ``n`` without a pattern is then just ``str.isdigit`` (C, no Python frame); an
    empty value fails it and goes to the reference, which accepts it.
    """
    if f.format == "n" and f.pattern is None and kind == _ASCII:
        return str.isdigit
    return f.check


class Codec:
    """Encoder and decoder for one link layout; shared by all links.

    Its only state is the plan caches, filled as bitmaps and field sets are first
    seen; two links sharing a codec at most build one plan twice.
    """

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self._ref = ReferenceCodec(spec)
        self._steps: dict[int, Step] = {}
        self._prefixes: dict[int, tuple[str, ...]] = {}
        self._reference_only: set[int] = set()
        for f in spec.data_fields():
            n = int(f.key)
            kind = _kind(f)
            if kind is None:
                self._reference_only.add(n)
                continue
            self._steps[n] = (n, f.prefix, f.length, kind, _fast_check(f, kind))
            if f.prefix:
                self._prefixes[n] = tuple(f"{i:0{f.prefix}d}" for i in range(f.length + 1))
        self._fields: dict[int, FieldSpec] = {
            int(f.key): f for f in spec.data_fields() if int(f.key) in self._steps
        }
        numbers = [int(k) for k in spec.fields if k.isdigit()]
        self._allowed_primary = bit_mask(numbers, 0)
        self._allowed_secondary = bit_mask([n for n in numbers if n > 64], 64)
        self._decode_plans: dict[bytes, DecodePlan] = {}
        self._encode_plans: dict[tuple[int, ...], EncodePlan] = {}
        self._header = spec.length_header
        self._max = spec.max_message_length

    # -- decoding ----------------------------------------------------------------

    def decode(self, data: bytes) -> Message:
        """Decode one frame's message; raise :class:`DecodeError` if it breaks the spec."""
        mti_raw = data[:4]
        if len(mti_raw) != 4 or not mti_raw.isdigit() or len(data) < 12:
            return self._ref.decode(data)
        key = data[4:20] if data[4] & 0x80 else data[4:12]
        plan = self._decode_plans.get(key) or self._decode_plan(key)
        if plan is None:
            return self._ref.decode(data)
        pos, steps = plan
        text = data.decode("latin-1")  # one character per byte: offsets stay byte offsets
        ascii_all = text.isascii()
        size_all = len(text)
        fields: dict[int, str] = {}
        for n, prefix, size, kind, check in steps:
            if prefix:
                start = pos + prefix
                raw = text[pos:start]
                if start > size_all or not raw.isascii() or not raw.isdigit():
                    return self._ref.decode(data)
                length = int(raw)
                if length > size:
                    return self._ref.decode(data)
                end = start + length
            else:
                start = pos
                end = pos + size
            if end > size_all:
                return self._ref.decode(data)
            value = text[start:end]
            if not ascii_all and not value.isascii():
                if kind == _ASCII:
                    return self._ref.decode(data)
                try:
                    value = value.encode("latin-1").decode("utf-8")
                except UnicodeDecodeError:
                    return self._ref.decode(data)
                if kind == _UTF8_FIXED and len(value) != size:
                    return self._ref.decode(data)
            if not check(value):
                return self._ref.decode(data)
            fields[n] = value
            pos = end
        if pos != size_all:
            return self._ref.decode(data)
        return Message.adopt(mti_raw.decode("ascii"), fields)

    def _decode_plan(self, key: bytes) -> DecodePlan | None:
        """The plan of a bitmap, cached; None (not cached) if the reference must judge it."""
        primary = int.from_bytes(key[:8], "big")
        if primary & ~self._allowed_primary:
            return None
        secondary = 0
        if primary >> 63:
            if len(key) < 16:
                return None
            secondary = int.from_bytes(key[8:16], "big")
            if secondary & ~self._allowed_secondary or secondary == 0:
                return None
        numbers = [b for b in range(2, 65) if primary >> (64 - b) & 1]
        numbers += [b for b in range(65, 129) if secondary >> (128 - b) & 1]
        if any(n in self._reference_only for n in numbers):
            return None
        plan = (4 + len(key), tuple(self._steps[n] for n in numbers))
        if len(self._decode_plans) >= _MAX_PLANS:
            self._decode_plans.clear()
        self._decode_plans[key] = plan
        return plan

    def check_mandatory(self, msg: Message) -> None:
        """Raise :class:`DecodeError` if a field mandatory for this message is missing."""
        self._ref.check_mandatory(msg)  # the rules' own check, kept per MTI by LinkRules

    # -- encoding ----------------------------------------------------------------

    def encode(self, msg: Message) -> bytes:
        """Encode a message, justifying fixed fields; raise :class:`LocalProtocolError`."""
        mti = msg.mti
        fields = msg.fields
        shape = tuple(fields)
        plan = self._encode_plans.get(shape) or self._encode_plan(shape)
        if plan is None or len(mti) != 4 or not mti.isascii() or not mti.isdigit():
            return self._ref.encode(msg)
        bitmap, steps = plan
        parts: list[str] = []
        for n, prefix, size, kind, check, prefixes in steps:
            value = fields[n]
            if prefix:
                if value.isascii():
                    length = len(value)
                elif kind == _ASCII:
                    return self._ref.encode(msg)
                else:
                    try:
                        length = len(value.encode("utf-8"))
                    except UnicodeEncodeError:
                        return self._ref.encode(msg)
                if length > size or not check(value):
                    return self._ref.encode(msg)
                parts.append(prefixes[length])
            else:
                if len(value) != size:
                    value = self._fields[n].pad(value)
                    if len(value) != size:
                        return self._ref.encode(msg)
                # Non-ASCII in a fixed field is either refused (ASCII) or more bytes
                # than characters (UTF-8): the reference says which.
                if not value.isascii() or not check(value):
                    return self._ref.encode(msg)
            parts.append(value)
        try:
            body = "".join(parts).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the reference names the field
            return self._ref.encode(msg)
        return mti.encode("ascii") + bitmap + body

    def _encode_plan(self, shape: tuple[int, ...]) -> EncodePlan | None:
        """The bitmap and steps of a field set, cached; None if the reference must encode."""
        steps = self._steps
        if not all(n in steps for n in shape):
            return None
        numbers = sorted(shape)
        primary = secondary = 0
        for n in numbers:
            if n <= 64:
                primary |= 1 << (64 - n)
            else:
                secondary |= 1 << (128 - n)
        bitmap = primary.to_bytes(8, "big")
        if secondary:
            bitmap = (primary | 1 << 63).to_bytes(8, "big") + secondary.to_bytes(8, "big")
        plan = (bitmap, tuple((*steps[n], self._prefixes.get(n, ())) for n in numbers))
        if len(self._encode_plans) >= _MAX_PLANS:
            self._encode_plans.clear()
        self._encode_plans[shape] = plan
        return plan

    def frame(self, msg: Message) -> bytes:
        """Encode with the length header: ready for the wire."""
        body = self.encode(msg)
        if len(body) > self._max:
            raise LocalProtocolError("message longer than the link's maximum")
        return len(body).to_bytes(self._header, "big") + body

    def normalise(self, msg: Message) -> Message:
        """The message with fixed fields justified as the wire carries them."""
        return self._ref.normalise(msg)
