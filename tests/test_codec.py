"""The ISO 8583 codec against LINK-SPEC sections 2 to 4 and 7.

What a peer of the link relies on: the worked example is byte-exact, every
valid message survives a round trip, anything else raises only
:class:`DecodeError` (naming the field, echoing what could be read, never the
account number), and DE 48, 90 and 97 read and write as the contract says.
"""

from __future__ import annotations

import string
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from billhub.errors import DecodeError, LocalProtocolError
from billhub.iso8583.codec import Codec
from billhub.iso8583.de48 import (
    BILL_RECORD_LEN,
    MAX_BILLS,
    BillRecord,
    build_tlv,
    format_bills,
    parse_bills,
    parse_tlv,
)
from billhub.iso8583.elements import OriginalData, format_net, parse_net, parse_original
from billhub.iso8583.mask import log_fields, mask_account
from billhub.iso8583.message import Message
from billhub.iso8583.spec import FieldSpec, LinkSpec, load_spec

SPEC: LinkSpec = load_spec()
CODEC = Codec(SPEC)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- LINK-SPEC 7, the worked example ------------------------------------------------

EXAMPLE_FIELDS = {
    3: "310000",
    4: "000000000000",
    7: "1124094512",
    11: "000123",
    12: "124512",
    13: "1124",
    18: "6013",
    32: "600001",
    33: "700001",
    37: "000000000123",
    49: "760",
    100: "100001",
    102: "0100123456",
}

# Built by hand from the text of LINK-SPEC 7, not by any encoder.
EXAMPLE_WIRE = (
    bytes([0x00, 0x77])
    + b"0200"
    + bytes([0xB2, 0x38, 0x40, 0x01, 0x88, 0x00, 0x80, 0x00])
    + bytes([0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00])
    + b"310000"  # DE 3
    + b"000000000000"  # DE 4
    + b"1124094512"  # DE 7
    + b"000123"  # DE 11
    + b"124512"  # DE 12
    + b"1124"  # DE 13
    + b"6013"  # DE 18
    + b"06600001"  # DE 32, LLVAR
    + b"06700001"  # DE 33, LLVAR
    + b"000000000123"  # DE 37
    + b"760"  # DE 49
    + b"06100001"  # DE 100, LLVAR
    + b"100100123456"  # DE 102, LLVAR
)


def example_message() -> Message:
    return Message("0200", EXAMPLE_FIELDS)


def example_body() -> bytes:
    return EXAMPLE_WIRE[2:]


def test_worked_example_is_119_bytes_framed_with_00_77() -> None:
    assert len(EXAMPLE_WIRE) == 2 + 119
    assert CODEC.frame(example_message()) == EXAMPLE_WIRE
    assert CODEC.encode(example_message()) == EXAMPLE_WIRE[2:]


def test_worked_example_decodes_to_its_fields_and_is_complete() -> None:
    msg = CODEC.decode(example_body())
    assert msg.mti == "0200"
    assert msg.fields == EXAMPLE_FIELDS
    CODEC.check_mandatory(msg)  # an inquiry with every mandatory field
    assert msg.amount == 0
    assert msg.account == "0100123456"
    assert msg.rrn == "000000000123"


def test_no_secondary_bitmap_without_fields_65_to_128() -> None:
    msg = Message("0800", {7: "1124094512", 11: "000001", 39: "00"})
    data = CODEC.encode(msg)
    assert data[:4] == b"0800"
    # bits 7, 11, 39 only; bit 1 clear and no second bitmap
    assert data[4:12] == bytes([0x02, 0x20, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00])
    assert data[12:] == b"1124094512000001" + b"00"
    assert CODEC.decode(data) == msg


# -- strategies derived from the spec ------------------------------------------------

_ALPHABETS = {
    ("n", "ascii"): st.sampled_from(string.digits),
    ("an", "ascii"): st.sampled_from(string.ascii_letters + string.digits + " "),
    ("ans", "ascii"): st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    # UTF-8 text: anything but control characters and surrogates, with Arabic weighted in.
    ("ans", "utf-8"): st.one_of(
        st.characters(min_codepoint=0x0621, max_codepoint=0x064A),
        st.characters(exclude_categories=("Cc", "Cs")),
    ),
}


def value_strategy(f: FieldSpec) -> st.SearchStrategy[str]:
    """Valid values of one field, from its format in the LinkSpec alone."""
    if f.pattern is not None:
        return st.from_regex(f.pattern, fullmatch=True).filter(f.check)
    alphabet = _ALPHABETS[(f.format, f.encoding)]
    if f.fixed:
        return st.text(alphabet, min_size=f.length, max_size=f.length)
    if f.encoding == "utf-8":
        # lengths count bytes: at most 4 bytes a character, trimmed to the byte limit
        return st.text(alphabet, max_size=f.length).filter(
            lambda v: len(v.encode("utf-8")) <= f.length
        )
    return st.text(alphabet, max_size=f.length)


FIELD_STRATEGIES = {int(f.key): value_strategy(f) for f in SPEC.data_fields()}
MTIS = st.from_regex(r"[0-9]{4}", fullmatch=True)


def messages() -> st.SearchStrategy[Message]:
    return st.builds(Message, MTIS, st.fixed_dictionaries({}, optional=FIELD_STRATEGIES))


def test_strategies_cover_every_data_field_of_the_spec() -> None:
    assert set(FIELD_STRATEGIES) == {
        3, 4, 7, 11, 12, 13, 15, 18, 32, 33, 37, 38, 39, 41, 48, 49,
        70, 74, 75, 86, 87, 90, 97, 100, 102,
    }  # fmt: skip


@FAST
@given(messages())
def test_round_trip(msg: Message) -> None:
    data = CODEC.encode(msg)
    assert CODEC.decode(data) == msg
    framed = CODEC.frame(msg)
    assert int.from_bytes(framed[:2], "big") == len(data)
    assert framed[2:] == data


@FAST
@given(FIELD_STRATEGIES[48])
def test_round_trip_de48_utf8_length_counts_bytes(text: str) -> None:
    msg = Message("0210", {7: "1124094512", 11: "000123", 39: "00", 48: text})
    data = CODEC.encode(msg)
    raw = text.encode("utf-8")
    assert data.endswith(f"{len(raw):03d}".encode() + raw)
    assert CODEC.decode(data) == msg


def test_arabic_customer_name_prefix_counts_bytes_not_characters() -> None:
    name = "محمد العلي"  # 10 characters, 19 bytes
    de48 = build_tlv([("CN", name)])
    msg = Message("0210", {7: "1124094512", 11: "000123", 39: "00", 48: de48})
    data = CODEC.encode(msg)
    assert data.endswith(b"024CN019" + name.encode("utf-8"))
    assert parse_tlv(CODEC.decode(data)[48]) == {"CN": name}


# -- decoding anything else raises only DecodeError ----------------------------------

SECRET_ACCOUNT = "QZ9X-SECRET-K7W"  # distinctive; must never show up in an error


def assert_no_account_leak(exc: DecodeError) -> None:
    texts = [str(exc), repr(exc), *(repr(a) for a in exc.args)]
    texts += [
        repr(getattr(exc, name))
        for name in ("field", "offset", "expected", "mti", "de7", "de11", "de32")
    ]
    for text in texts:
        assert SECRET_ACCOUNT not in text
        assert "SECRET" not in text


def decode_or_error(data: bytes) -> Message | None:
    """Decode; a DecodeError is fine (and checked for leaks), anything else fails the test."""
    try:
        msg = CODEC.decode(data)
    except DecodeError as exc:
        assert_no_account_leak(exc)
        assert isinstance(exc.field, str) and exc.field
        assert isinstance(exc.offset, int)
        return None
    # Whatever decodes is a message the spec allows and re-encodes to the same bytes.
    assert CODEC.encode(msg) == data
    return msg


@FAST
@given(st.binary(max_size=300))
@example(b"")
@example(b"0200")
@example(b"0200" + bytes(8))
@example(b"0200" + b"\x80" + bytes(7))
@example(b"0200" + b"\x80" + bytes(15))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    decode_or_error(data)


@FAST
@given(MTIS, st.binary(min_size=8, max_size=8), st.binary(max_size=200))
def test_random_bitmaps_and_bodies_raise_only_decode_error(
    mti: str, bitmap: bytes, body: bytes
) -> None:
    decode_or_error(mti.encode() + bitmap + body)


def secret_messages() -> st.SearchStrategy[Message]:
    """Valid messages that carry the distinctive account number in DE 102."""
    return messages().map(lambda m: Message(m.mti, {**m.fields, 102: SECRET_ACCOUNT}))


_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
)


def mutate(data: bytes, mutation: tuple[str, object, int]) -> bytes:
    kind, where, value = mutation
    buf = bytearray(data)
    if kind == "extend":
        assert isinstance(where, bytes)
        return bytes(buf + where)
    assert isinstance(where, int)
    i = where % (len(buf) + 1)
    if kind == "truncate":
        return bytes(buf[:i])
    if kind == "insert":
        buf.insert(i, value)
        return bytes(buf)
    if not buf:
        return bytes(buf)
    i = where % len(buf)
    if kind == "flip":
        buf[i] ^= value
    else:
        del buf[i]
    return bytes(buf)


@FAST
@given(secret_messages(), st.lists(_MUTATION, min_size=1, max_size=4))
def test_mutated_encodings_raise_only_decode_error(
    msg: Message, mutations: list[tuple[str, object, int]]
) -> None:
    data = CODEC.encode(msg)
    for m in mutations:
        data = mutate(data, m)
    decode_or_error(data)


def example_with_secret() -> bytes:
    msg = Message("0200", {**EXAMPLE_FIELDS, 102: SECRET_ACCOUNT})
    return CODEC.encode(msg)


@pytest.mark.parametrize("cut", range(1, 40))
def test_truncating_de102_never_leaks_the_account(cut: int) -> None:
    data = example_with_secret()
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data[:-cut])
    assert_no_account_leak(info.value)


def test_mandatory_error_never_leaks_the_account() -> None:
    msg = Message("0200", {**EXAMPLE_FIELDS, 102: SECRET_ACCOUNT})
    del msg[4]
    with pytest.raises(DecodeError) as info:
        CODEC.check_mandatory(msg)
    assert_no_account_leak(info.value)


def test_bad_field_after_de102_never_leaks_the_account() -> None:
    # DE 102 is the last field; make DE 7 bad so the error is raised with DE 102 decoded.
    data = example_with_secret().replace(b"1124094512", b"1324094512")
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data)
    assert info.value.field == "DE 7"
    assert_no_account_leak(info.value)


# -- the undecodable cases of LINK-SPEC 1 --------------------------------------------


def set_bit(data: bytes, bit: int) -> bytes:
    """Set a bitmap bit (1-128) in an encoded message (bitmaps start at offset 4)."""
    buf = bytearray(data)
    byte = 4 + (bit - 1) // 8
    buf[byte] |= 0x80 >> ((bit - 1) % 8)
    return bytes(buf)


READABLE = ("1124094512", "000123", "600001")


@pytest.mark.parametrize(
    ("bit", "echo"),
    [
        (2, (None, None, None)),  # before DE 7: nothing after it can be placed
        (5, (None, None, None)),
        (8, ("1124094512", None, None)),  # DE 7 sits before it; DE 11 does not
        (34, READABLE),  # DE 7, 11 and 32 come before the unknown field
        (64, READABLE),
    ],
)
def test_primary_bitmap_bit_for_a_field_not_in_the_spec(
    bit: int, echo: tuple[str | None, ...]
) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(set_bit(example_body(), bit))
    exc = info.value
    assert exc.field == "primary bitmap"
    assert exc.offset == 4
    assert f"bit {bit}" in exc.expected
    assert exc.mti == "0200"
    assert (exc.de7, exc.de11, exc.de32) == echo


@pytest.mark.parametrize("bit", [65, 101, 128])
def test_secondary_bitmap_bit_for_a_field_not_in_the_spec(bit: int) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(set_bit(example_body(), bit))
    exc = info.value
    assert exc.field == "secondary bitmap"
    assert f"bit {bit}" in exc.expected
    assert exc.mti == "0200"
    assert (exc.de7, exc.de11, exc.de32) == READABLE  # every primary field precedes it


def test_secondary_bitmap_flagged_but_empty_is_a_format_error() -> None:
    msg = Message("0800", {7: "1124094512", 11: "000001"})
    data = set_bit(CODEC.encode(msg), 1)
    data = data[:12] + bytes(8) + data[12:]
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data)
    assert info.value.field == "secondary bitmap"


def test_field_cut_short_names_the_field_and_keeps_what_was_read() -> None:
    data = example_body()[:-3]  # DE 102 loses its last 3 bytes
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data)
    exc = info.value
    assert exc.field == "DE 102"
    assert exc.mti == "0200"
    assert exc.de7 == "1124094512"
    assert exc.de11 == "000123"
    assert exc.de32 == "600001"


def test_message_cut_inside_de11_keeps_mti_and_de7() -> None:
    body = example_body()
    start = body.index(b"1124094512") + 10  # DE 11 follows DE 7
    with pytest.raises(DecodeError) as info:
        CODEC.decode(body[: start + 3])
    exc = info.value
    assert exc.field == "DE 11"
    assert (exc.mti, exc.de7, exc.de11, exc.de32) == ("0200", "1124094512", None, None)


def test_letter_in_n_field_de11() -> None:
    data = example_body().replace(b"1124094512000123", b"112409451200A123")
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data)
    exc = info.value
    assert exc.field == "DE 11"
    assert exc.mti == "0200"
    assert exc.de7 == "1124094512"
    assert exc.de11 is None
    assert exc.de32 == "600001"
    assert "00A123" not in str(exc)


@pytest.mark.parametrize(
    ("field", "old", "new"),
    [
        ("DE 4", b"0000000000001124094512", b"00000000000X1124094512"),
        ("DE 49", b"000000000123760", b"0000000001237 0"),
        ("DE 32", b"06600001", b"06600O01"),
        ("DE 100", b"06100001", b"061000-1"),
    ],
)
def test_non_digits_in_n_fields(field: str, old: bytes, new: bytes) -> None:
    body = example_body()
    assert body.count(old) == 1
    with pytest.raises(DecodeError) as info:
        CODEC.decode(body.replace(old, new))
    assert info.value.field == field
    assert info.value.mti == "0200"


def test_mandatory_field_missing() -> None:
    msg = example_message()
    del msg[37]
    decoded = CODEC.decode(CODEC.encode(msg))  # decodable on its own ...
    with pytest.raises(DecodeError) as info:  # ... but not a complete inquiry
        CODEC.check_mandatory(decoded)
    exc = info.value
    assert exc.field == "DE 37"
    assert (exc.mti, exc.de7, exc.de11, exc.de32) == ("0200", "1124094512", "000123", "600001")


@pytest.mark.parametrize(
    ("mti", "fields", "missing"),
    [
        ("0200", {**EXAMPLE_FIELDS, 3: "500000"}, "DE 15"),  # a payment needs DE 15
        ("0800", {7: "1124094512", 11: "000001"}, "DE 70"),
        ("0800", {7: "1124094512", 11: "000001", 70: "201"}, "DE 15"),  # cutover
        ("0210", {7: "1124094512", 11: "000001"}, "DE 39"),
        ("0420", {7: "1124094512", 11: "000001"}, "DE 4"),
    ],
)
def test_mandatory_rules_per_mti(mti: str, fields: dict[int, str], missing: str) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.check_mandatory(Message(mti, fields))
    assert info.value.field == missing
    assert info.value.mti == mti


def test_echo_and_signon_are_complete() -> None:
    CODEC.check_mandatory(Message("0800", {7: "1124094512", 11: "000001", 70: "301"}))
    CODEC.check_mandatory(Message("0810", {7: "1124094512", 11: "000001", 39: "00"}))


@pytest.mark.parametrize("de7", [b"1324094512", b"0024094512", b"1132094512", b"1124244512"])
def test_bad_de7_date(de7: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(example_body().replace(b"1124094512", de7))
    exc = info.value
    assert exc.field == "DE 7"
    assert exc.mti == "0200"
    assert exc.de7 is None
    assert exc.de11 == "000123"
    assert exc.de32 == "600001"


@pytest.mark.parametrize("mti", [b"02A0", b"020", b"\x00\x00\x00\x00"])
def test_bad_mti(mti: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(mti + example_body()[4:])
    assert info.value.field == "MTI"
    assert info.value.mti is None


def test_extra_bytes_after_the_last_field() -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(example_body() + b"0")
    assert info.value.mti == "0200"
    assert info.value.de11 == "000123"


@pytest.mark.parametrize("prefix", [b" 6", b"+6", b"6 ", b"-6"])
def test_length_prefix_must_be_ascii_digits(prefix: bytes) -> None:
    data = example_body().replace(b"06600001", prefix + b"600001")
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data)
    assert info.value.field == "DE 32"
    assert info.value.mti == "0200"


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x7f", "\x85", "\x9b"])
def test_de48_refuses_control_characters_c0_del_and_c1(control: str) -> None:
    good = Message("0210", {7: "1124094512", 11: "000123", 39: "00", 48: "CN003aXc"})
    with pytest.raises(LocalProtocolError):
        CODEC.encode(Message("0210", {**good.fields, 48: f"CN00{len(control) + 2}a{control}c"}))
    raw = CODEC.encode(good).replace(b"aXc", b"a" + control.encode("utf-8") + b"c")
    raw = raw.replace(b"008CN003", f"{5 + len(control.encode()) + 2:03d}CN003".encode())
    with pytest.raises(DecodeError) as info:
        CODEC.decode(raw)
    assert info.value.field == "DE 48"


def test_de48_length_that_splits_a_utf8_character() -> None:
    msg = Message("0210", {7: "1124094512", 11: "000123", 39: "00", 48: "CN002مح"})
    data = CODEC.encode(msg)
    raw = "CN002مح".encode()
    bad = data.replace(f"{len(raw):03d}".encode() + raw, f"{len(raw) - 1:03d}".encode() + raw)
    with pytest.raises(DecodeError) as info:
        CODEC.decode(bad)
    assert info.value.field == "DE 48"
    assert info.value.de11 == "000123"


# -- encoding -------------------------------------------------------------------------


def test_fixed_n_fields_are_zero_filled_on_the_left() -> None:
    msg = Message("0200", {**EXAMPLE_FIELDS, 4: "5000", 11: "123", 49: "760"})
    data = CODEC.encode(msg)
    decoded = CODEC.decode(data)
    assert decoded[4] == "000000005000"
    assert decoded[11] == "000123"
    assert decoded.amount == 5000
    assert CODEC.normalise(msg) == decoded


def test_fixed_an_and_ans_fields_are_space_filled_on_the_right() -> None:
    msg = Message("0210", {7: "1124094512", 11: "000123", 37: "RRN1", 38: "A1", 39: "0", 41: "T1"})
    decoded = CODEC.decode(CODEC.encode(msg))
    assert decoded[37] == "RRN1        "
    assert decoded[38] == "A1    "
    assert decoded[39] == "0 "
    assert decoded[41] == "T1      "
    assert decoded.rrn == "RRN1"


def test_variable_fields_are_not_padded() -> None:
    msg = Message("0800", {7: "1124094512", 11: "000001", 32: "1", 70: "301"})
    data = CODEC.encode(msg)
    assert b"011" in data
    assert CODEC.decode(data)[32] == "1"


@pytest.mark.parametrize("number", [2, 5, 14, 52, 64, 65, 101, 128])
def test_encode_rejects_fields_not_in_the_spec(number: int) -> None:
    with pytest.raises(LocalProtocolError):
        CODEC.encode(Message("0800", {7: "1124094512", 11: "000001", number: "1"}))


@pytest.mark.parametrize(
    ("number", "value"),
    [
        (11, "12345A"),  # letter in n
        (11, "1234567"),  # too long for n 6
        (4, "-1"),
        (4, "1.50"),
        (4, "٥٠٠"),  # Arabic-Indic digits are not ASCII digits
        (7, "1324094512"),  # month 13
        (7, "1124094560"),  # second 60
        (15, "1301"),  # month 13
        (37, "RRN-1"),  # '-' is not an
        (39, "000"),  # an 2
        (41, "TÉRM"),  # ans ASCII only
        (32, "123456789012"),  # LLVAR n ..11
        (32, "60000A"),
        (102, "x" * 29),  # LLVAR ans ..28
        (102, "0100\n123"),  # control character
        (102, "حساب"),  # DE 102 is ASCII
        (48, "م" * 500),  # 1000 bytes > 999
        (48, "CN003a\x00c"),  # control character
        (97, "X0000000000000001"),
        (97, "C000000000000001"),  # 15 digits: padded with a space, then rejected
        (90, "0200" + "1" * 37 + "A"),  # n 42
    ],
)
def test_encode_rejects_values_that_break_the_format(number: int, value: str) -> None:
    msg = Message("0800", {7: "1124094512", 11: "000001", number: value})
    with pytest.raises(LocalProtocolError):
        CODEC.encode(msg)


@pytest.mark.parametrize("mti", ["200", "02000", "02A0", "", "٠٢٠٠"])
def test_encode_rejects_a_bad_mti(mti: str) -> None:
    with pytest.raises(LocalProtocolError):
        CODEC.encode(Message(mti, {7: "1124094512", 11: "000001"}))


def test_frame_rejects_a_message_over_the_maximum() -> None:
    # The spec's own fields cannot exceed 4,096 bytes, so shrink the maximum.
    small = Codec(replace(SPEC, max_message_length=100))
    msg = Message("0210", {7: "1124094512", 11: "000123", 39: "00", 48: "x" * 200})
    assert len(small.encode(msg)) > 100
    with pytest.raises(LocalProtocolError):
        small.frame(msg)


# -- DE 48 ------------------------------------------------------------------------------

TAGS = st.from_regex(r"[A-Z0-9]{2}", fullmatch=True)
TLV_TEXT = st.text(_ALPHABETS[("ans", "utf-8")], max_size=60)


@FAST
@given(st.dictionaries(TAGS, TLV_TEXT, max_size=8))
def test_tlv_round_trip(items: dict[str, str]) -> None:
    value = build_tlv(list(items.items()))
    assert parse_tlv(value) == items
    # and through the codec, lengths in bytes
    assume(len(value.encode("utf-8")) <= 999)
    msg = Message("0210", {7: "1124094512", 11: "000123", 39: "00", 48: value})
    assert parse_tlv(CODEC.decode(CODEC.encode(msg))[48]) == items


def test_tlv_layout_is_tag_three_digit_byte_length_value() -> None:
    assert build_tlv([("PA", "Y"), ("CN", "علي")]) == "PA001YCN006علي"
    assert build_tlv([]) == ""
    assert parse_tlv("") == {}


def test_tlv_subfields_in_any_order_and_unknown_tags_ignored() -> None:
    value = "ZZ004abcdPA001NX9000CN005Ahmad"
    out = parse_tlv(value)
    assert out["PA"] == "N"
    assert out["CN"] == "Ahmad"


def test_tlv_repeated_tag_keeps_the_first() -> None:
    assert parse_tlv("CN001ACN001B")["CN"] == "A"


@pytest.mark.parametrize(
    ("value", "field", "offset"),
    [
        ("CN0", "DE 48", 0),  # too short for tag + length
        ("cn001A", "DE 48", 0),  # tag must be 2 of A-Z 0-9
        ("C-001A", "DE 48", 0),
        ("CN0X1A", "DE 48 CN", 2),  # length not digits
        ("CN010abc", "DE 48 CN", 5),  # value runs past the end
        ("PA001YCN9", "DE 48", 6),  # second subfield cut short
        ("PA001YCN005ab", "DE 48 CN", 11),
        ("CN001م", "DE 48 CN", 5),  # length splits a UTF-8 character
        ("CN 01A", "DE 48 CN", 2),
    ],
)
def test_bad_tlv(value: str, field: str, offset: int) -> None:
    with pytest.raises(DecodeError) as info:
        parse_tlv(value)
    assert info.value.field == field
    assert info.value.offset == offset


@FAST
@given(st.text(max_size=40))
def test_any_de48_text_parses_or_raises_decode_error(value: str) -> None:
    try:
        out = parse_tlv(value)
    except DecodeError:
        return
    for tag, text in out.items():  # every kept subfield is in the value verbatim
        assert build_tlv([(tag, text)]) in value


@pytest.mark.parametrize("tag", ["C", "CNX", "cn", "م1", ""])
def test_build_tlv_rejects_bad_tags(tag: str) -> None:
    with pytest.raises(LocalProtocolError):
        build_tlv([(tag, "x")])


def test_build_tlv_rejects_values_over_999_bytes() -> None:
    build_tlv([("CN", "x" * 999)])
    with pytest.raises(LocalProtocolError):
        build_tlv([("CN", "م" * 500)])


BILL_IDS = st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True)
BILLS = st.builds(
    BillRecord,
    BILL_IDS,
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.from_regex(r"[0-9]{8}", fullmatch=True),
    st.integers(0, 10**12 - 1),
)


def test_bill_record_layout() -> None:
    rec = format_bills([BillRecord("B-1", "202401", "20240215", 12345)])
    assert rec == "B-1" + " " * 17 + "202401" + "20240215" + "000000012345"
    assert len(rec.encode("ascii")) == BILL_RECORD_LEN == 46


@FAST
@given(st.lists(BILLS, max_size=20))
def test_bill_records_46_bytes_at_most_12_oldest(bills: list[BillRecord]) -> None:
    value = format_bills(bills)
    kept = bills[:MAX_BILLS]
    assert MAX_BILLS == 12
    assert len(value.encode("ascii")) == 46 * len(kept)
    assert parse_bills(value) == kept


def test_bl_inside_de48_fits_twelve_bills() -> None:
    bills = [BillRecord(f"B{i:019d}", "202401", "20240215", 10**12 - 1) for i in range(15)]
    de48 = build_tlv([("CN", "محمد"), ("BL", format_bills(bills)), ("PA", "N")])
    msg = Message("0210", {7: "1124094512", 11: "000123", 39: "00", 48: de48})
    back = parse_tlv(CODEC.decode(CODEC.encode(msg))[48])
    assert parse_bills(back["BL"]) == bills[:12]


@pytest.mark.parametrize(
    "bill",
    [
        BillRecord("", "202401", "20240215", 1),
        BillRecord("B 1", "202401", "20240215", 1),
        BillRecord("B" * 21, "202401", "20240215", 1),
        BillRecord("فاتورة", "202401", "20240215", 1),
        BillRecord("B1", "2024-1", "20240215", 1),
        BillRecord("B1", "20241", "20240215", 1),
        BillRecord("B1", "202401", "2024021", 1),
        BillRecord("B1", "٢٠٢٤٠١", "20240215", 1),  # Arabic-Indic digits: not n 6
        BillRecord("B1", "202401", "٢٠٢٤٠٢١٥", 1),
        BillRecord("B1", "202401", "20240215", -1),
        BillRecord("B1", "202401", "20240215", 10**12),
    ],
)
def test_format_bills_rejects_bad_records(bill: BillRecord) -> None:
    with pytest.raises(LocalProtocolError):
        format_bills([bill])


@pytest.mark.parametrize(
    "value",
    [
        "B1" + " " * 18 + "202401" + "20240215" + "00000001234",  # 45 bytes
        " " * 20 + "202401" + "20240215" + "000000012345",  # no bill id
        "B1" + " " * 18 + "2024X1" + "20240215" + "000000012345",
        "B1" + " " * 18 + "202401" + "20240215" + "00000001234²",  # not an ASCII digit
        "B1" + " " * 18 + "202401" + "20240215" + "٠٠٠٠٠٠٠١٢٣٤٥",  # Arabic-Indic digits
    ],
)
def test_parse_bills_rejects_bad_records(value: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_bills(value)
    assert info.value.field == "DE 48 BL"


@FAST
@given(st.text(max_size=100))
def test_any_bl_text_parses_or_raises_decode_error(value: str) -> None:
    try:
        bills = parse_bills(value)
    except DecodeError:
        return
    assert format_bills(bills) == value[: BILL_RECORD_LEN * MAX_BILLS]


# -- DE 90 and DE 97 ------------------------------------------------------------------


def test_de90_format_and_parse() -> None:
    od = OriginalData("0200", "000123", "1124094512", "600001", "700001")
    value = od.format()
    assert value == "0200" + "000123" + "1124094512" + "00000600001" + "00000700001"
    assert len(value) == 42
    assert parse_original(value) == od
    msg = Message("0420", {7: "1124094512", 11: "000124", 90: value})
    assert parse_original(CODEC.decode(CODEC.encode(msg))[90]) == od


@FAST
@given(
    st.from_regex(r"[0-9]{4}", fullmatch=True),
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.from_regex(r"[0-9]{10}", fullmatch=True),
    st.from_regex(r"[1-9][0-9]{0,10}", fullmatch=True),
    st.from_regex(r"[1-9][0-9]{0,10}", fullmatch=True),
)
def test_de90_round_trip(mti: str, stan: str, de7: str, acq: str, fwd: str) -> None:
    od = OriginalData(mti, stan, de7, acq, fwd)
    assert parse_original(od.format()) == od


@pytest.mark.parametrize("value", ["1" * 41, "1" * 43, "1" * 41 + "A", "٠" * 42, "²" * 42])
def test_de90_parse_rejects_bad_values(value: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_original(value)
    assert info.value.field == "DE 90"


@pytest.mark.parametrize(
    "od",
    [
        OriginalData("0200", "000123", "1124094512", "123456789012", "700001"),
        OriginalData("0200", "0001A3", "1124094512", "600001", "700001"),
        OriginalData("0200", "000123", "١١٢٤٠٩٤٥١٢", "600001", "700001"),
    ],
)
def test_de90_format_rejects_bad_values(od: OriginalData) -> None:
    with pytest.raises(LocalProtocolError):
        od.format()


def test_de97_credit_debit_and_zero() -> None:
    assert format_net(100_000, 30_000) == "C0000000000070000"
    assert format_net(30_000, 100_000) == "D0000000000070000"
    assert format_net(0, 0) == "C" + "0" * 16
    assert format_net(5, 5) == "C0000000000000000"
    assert parse_net("D0000000000070000") == -70_000
    assert parse_net("C" + "0" * 16) == 0


@FAST
@given(st.integers(0, 10**16 - 1), st.integers(0, 10**16 - 1))
def test_de97_round_trip(credits: int, reversals: int) -> None:
    value = format_net(credits, reversals)
    assert len(value) == 17
    assert value[0] == ("C" if credits >= reversals else "D")
    assert parse_net(value) == credits - reversals
    msg = Message("0510", {7: "1124094512", 11: "000123", 39: "00", 97: value})
    assert CODEC.decode(CODEC.encode(msg))[97] == value


def test_de97_overflow_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        format_net(10**16, 0)
    with pytest.raises(LocalProtocolError):
        format_net(0, 10**16)


@pytest.mark.parametrize(
    "value",
    ["", "C", "X0000000000000001", "c0000000000000001", "C000000000000001", "C" + "²" * 16,
     "D" + "٠" * 16, "C-000000000000001"],
)  # fmt: skip
def test_de97_parse_rejects_bad_values(value: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_net(value)
    assert info.value.field == "DE 97"


@FAST
@given(st.text(max_size=20))
def test_any_de97_text_parses_or_raises_decode_error(value: str) -> None:
    try:
        net = parse_net(value)
    except DecodeError:
        return
    assert format_net(max(net, 0), max(-net, 0)) == value


# -- masking ------------------------------------------------------------------------------


def test_mask_account_shows_first_2_and_last_4() -> None:
    assert mask_account("0100123456") == "01****3456"
    assert mask_account(SECRET_ACCOUNT) == "QZ*********-K7W"
    assert mask_account(None) is None


@given(st.text(min_size=7, max_size=28))
def test_mask_account_hides_everything_but_first_2_and_last_4(value: str) -> None:
    masked = mask_account(value)
    assert masked is not None
    assert len(masked) == len(value)
    assert masked[:2] == value[:2]
    assert masked[-4:] == value[-4:]
    assert set(masked[2:-4]) == {"*"}


@given(st.text(max_size=6))
def test_mask_account_short_values_masked_whole(value: str) -> None:
    assert mask_account(value) == "*" * len(value)


def test_log_fields_mask_the_account_and_drop_de48() -> None:
    msg = Message("0200", {**EXAMPLE_FIELDS, 102: SECRET_ACCOUNT, 48: "CN005Ahmad"})
    out = log_fields(msg)
    assert out["account"] == "QZ*********-K7W"
    assert "SECRET" not in repr(out)
    assert "Ahmad" not in repr(out)
    assert "SECRET" not in repr(msg)
    assert out["amount"] == 0
